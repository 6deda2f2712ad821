import numpy as np
import pytest
from PIL import Image, ImageDraw

from g2u_tasks.config import ModelSpec
from g2u_tasks.thoughts.families import load_family
from g2u_tasks.thoughts.fidelity import PSNR_CAP, fidelity
from g2u_tasks.backends.generators import GenerateRequest, get_generator
from g2u_tasks.images import decode, encode_png


def _scene(w=96, h=64) -> Image.Image:
    img = Image.new("RGB", (w, h), (200, 220, 240))
    d = ImageDraw.Draw(img)
    d.ellipse((30, 20, 60, 50), fill=(220, 30, 30))
    d.rectangle((5, 5, 20, 15), fill=(20, 120, 20))
    return img


def _gen(family: str, img=None):
    gen = get_generator(ModelSpec(backend="reference"))
    return gen.generate([GenerateRequest(img or _scene(), "p", 0, load_family(family))])[0]


def test_generator_is_resident():
    assert get_generator(ModelSpec(backend="reference")) is get_generator(ModelSpec(backend="reference"))


def test_reference_reconstruction_returns_source_pixels():
    src = _scene()  # the reference generator stands for a perfect one: it reproduces the image exactly
    out = _gen("reconstruction", src)
    assert np.array_equal(np.asarray(out), np.asarray(src))
    assert fidelity(src, out) == (PSNR_CAP, 1.0)


def test_each_family_changes_the_image_and_keeps_aspect():
    src = _scene()
    for fam in ("detail_enhancement", "context_expansion", "structural_visualisation"):
        out = _gen(fam, src)
        assert abs(out.width / out.height - src.width / src.height) < 0.05, fam
        psnr, ssim = fidelity(src, out)
        assert 0 < psnr < PSNR_CAP and -1 <= ssim < 1, fam


def test_context_expansion_keeps_source_in_the_centre():
    src = _scene()
    out = _gen("context_expansion", src)
    assert out.size == (96 + 2 * 24, 64 + 2 * 16)
    assert np.array_equal(np.asarray(out)[16:80, 24:120], np.asarray(src))


def test_deterministic_png_bytes():
    a, b = encode_png(_gen("detail_enhancement")), encode_png(_gen("detail_enhancement"))
    assert a == b
    assert np.array_equal(np.asarray(decode(a)), np.asarray(_gen("detail_enhancement")))


def test_fidelity_orders_degradations():
    src = np.asarray(_scene()).astype(float)
    rng = np.random.default_rng(0)
    mild = Image.fromarray(np.clip(src + rng.normal(0, 3, src.shape), 0, 255).astype("uint8"))
    strong = Image.fromarray(np.clip(src + rng.normal(0, 30, src.shape), 0, 255).astype("uint8"))
    assert fidelity(_scene(), mild)[0] > fidelity(_scene(), strong)[0]
    assert fidelity(_scene(), mild)[1] > fidelity(_scene(), strong)[1]


def test_unknown_backend_and_operator():
    with pytest.raises(ValueError, match="unknown generator backend 'nope'"):
        get_generator(ModelSpec(backend="nope"))
    fam = load_family("identity")
    broken = type(fam)(name="x", description="", template="t", reference={"op": "melt"})
    with pytest.raises(ValueError, match="family x: .*'melt'"):
        get_generator(ModelSpec(backend="reference")).generate([GenerateRequest(_scene(), "p", 0, broken)])
