"""The `diffusers` generator on CPU with tiny offline pipelines (InstructPix2Pix, FLUX Kontext).

QwenImageEdit and OmniGen need torchvision (their processors): see tests/gpu/test_diffusers_gpu.py.
"""
import numpy as np
import pytest
import torch
from PIL import Image

from tests.diffusers_dummies import build_flux_kontext, build_instruct_pix2pix
from g2u_tasks.config import ModelSpec
from g2u_tasks.thoughts.families import load_family
from g2u_tasks.backends.generators import GenerateRequest, get_generator
from g2u_tasks.backends.generators.diffusers_backend import CallStyle, style_for, target_size
from g2u_tasks.images import encode_png

CASES = {
    "instruct_pix2pix": (
        build_instruct_pix2pix,
        {"num_inference_steps": 2, "guidance_scale": 3.0, "image_guidance_scale": 1.5,
         "negative_prompt": "blurry", "resolution": 64, "batch_size": 4, "device": "cpu"},
    ),
    "flux_kontext": (
        build_flux_kontext,
        {"num_inference_steps": 2, "guidance_scale": 2.5, "resolution": 64, "batch_size": 4, "device": "cpu",
         "call_kwargs": {"max_sequence_length": 32}},
    ),
}
SIZES = [(96, 64), (64, 96), (80, 80)]  # 3:2, 2:3, 1:1
FAMILY = load_family("identity")


def scene(w: int, h: int) -> Image.Image:
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, w)[None]
    a[..., 1] = np.linspace(0, 255, h)[:, None]
    a[..., 2] = 128
    return Image.fromarray(a)


def req(size=(96, 64), seed=0, prompt="make it red") -> GenerateRequest:
    return GenerateRequest(scene(*size), prompt, seed, FAMILY)


def pngs(images) -> list[bytes]:
    return [encode_png(im) for im in images]


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> dict[str, ModelSpec]:
    out = {}
    for name, (build, params) in CASES.items():
        path = build(tmp_path_factory.mktemp(name) / "pipe")
        out[name] = ModelSpec(backend="diffusers", model=str(path), params=params)
    return out


@pytest.fixture(params=sorted(CASES))
def spec(request, specs) -> ModelSpec:
    return specs[request.param]


def test_resident_instance(spec):
    gen = get_generator(spec)
    assert gen is get_generator(spec)
    assert gen.name == f"diffusers:{spec.model}"


def test_batch_keeps_each_source_aspect_ratio(spec):
    gen = get_generator(spec)
    out = gen.generate([req(s, seed=i) for i, s in enumerate(SIZES)])
    assert len(out) == 3
    step = gen.size_step
    for (w, h), im in zip(SIZES, out):
        assert im.mode == "RGB"
        assert max(im.size) == 64 and im.width % step == 0 and im.height % step == 0
        # within rounding of each side to the size step
        assert abs(im.width * h / w - im.height) <= step / 2 * (1 + h / w)


def test_fixed_seed_is_byte_identical_and_seeds_differ(spec):
    gen = get_generator(spec)
    batch = [req(seed=0), req(seed=1)]
    first, again = gen.generate(batch), gen.generate(batch)
    assert pngs(first) == pngs(again)
    assert pngs(first)[0] != pngs(first)[1]


def test_batch_equals_single_items(spec):
    # Exact on the CPUs tried; the tolerance covers GEMM blocking that may vary with batch size elsewhere.
    gen = get_generator(spec)
    batch = [req(seed=s, prompt=p) for s, p in [(0, "make it red"), (1, "zoom in"), (2, "add a border")]]
    together = gen.generate(batch)
    for r, im in zip(batch, together):
        alone = gen.generate([r])[0]
        assert np.abs(np.asarray(im, int) - np.asarray(alone, int)).max() <= 2


def test_out_of_memory_splits_batch_down_to_single_items(specs, monkeypatch):
    gen = get_generator(specs["instruct_pix2pix"])  # backend logic: one pipeline suffices
    batch = [req(seed=s) for s in range(3)]
    expected = pngs(gen.generate(batch))
    real, sizes = gen.pipe, []  # patched on the backend: the registry's handle only forwards reads

    def flaky(**kwargs):
        sizes.append(len(kwargs["prompt"]))
        if len(kwargs["prompt"]) > 1:
            raise torch.cuda.OutOfMemoryError("fake OOM")
        return real(**kwargs)

    monkeypatch.setattr(gen.backend, "pipe", flaky)
    assert pngs(gen.generate(batch)) == expected
    assert sizes == [3, 1, 2, 1, 1]

    def always_oom(**kwargs):
        raise torch.cuda.OutOfMemoryError("fake OOM")

    monkeypatch.setattr(gen.backend, "pipe", always_oom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        gen.generate([req()])


def test_params_are_checked(specs):
    spec = specs["flux_kontext"]
    with pytest.raises(ValueError, match="backend 'diffusers' does not accept param 'steps'; accepted: .*num_inference_steps"):
        get_generator(spec.model_copy(update={"params": {**spec.params, "steps": 3}}))
    with pytest.raises(ValueError, match="does not take call_kwargs"):
        get_generator(spec.model_copy(update={"params": {**spec.params, "call_kwargs": {"no_such_arg": 1}}}))


def test_target_size():
    assert target_size(96, 64, 8, resolution=64) == (64, 40)  # 42.7 -> 40
    assert target_size(96, 64, 16, resolution=64) == (64, 48)
    assert target_size(1000, 500, 16, area=1024 * 1024) == (1456, 720)
    assert target_size(30, 20, 8) == (32, 24)  # no target: the source size, rounded
    with pytest.raises(ValueError):
        target_size(10, 10, 8, resolution=64, area=4096)


def test_call_style_is_chosen_by_pipeline_class():
    from diffusers import FluxKontextPipeline, OmniGenPipeline

    class MyOmniGen(OmniGenPipeline):
        pass

    assert style_for(FluxKontextPipeline) == CallStyle()
    assert style_for(MyOmniGen).image_arg == "input_images"
    assert style_for(OmniGenPipeline).kwarg("image_guidance_scale") == "img_guidance_scale"


def test_a_source_edited_by_several_families_is_encoded_once(specs):
    """InstructPix2Pix encodes one row per request: an item's three families in one call encode its
    source once, with the same images as encoding it three times."""
    spec = specs["instruct_pix2pix"]
    gen = get_generator(spec)
    off = get_generator(spec.model_copy(update={"params": {**spec.params, "encode_once": False}}))
    assert gen.backend.encode_once is not None and off.backend.encode_once is None
    a, b = scene(96, 64), scene(64, 96)
    batch = [GenerateRequest(src, p, 0, FAMILY) for src in (a, b) for p in ("make it red", "zoom in", "add a border")]
    rows = []
    real = gen.backend.encode_once.encode
    gen.backend.encode_once.encode = lambda x, *args, **kw: rows.append(x.shape[0]) or real(x, *args, **kw)
    once = gen.generate(batch)
    assert rows == [1, 1]  # one call per source size (64x40 and 40x64), each source encoded once
    assert pngs(once) == pngs(off.generate(batch))
    assert pngs(once)[0] != pngs(once)[1]  # the families still differ


def test_speed_options_keep_the_images_close(specs):
    """channels_last + fused q/k/v change kernels only (as params they enter the thought key: another
    generator version); `compile` wraps the UNet, compiled at its first call (measured on a GPU)."""
    spec = specs["instruct_pix2pix"]
    batch = [req(seed=s, prompt=p) for s, p in [(0, "make it red"), (1, "zoom in")]]
    plain = get_generator(spec).generate(batch)
    fast = get_generator(spec.model_copy(update={"params": {**spec.params, "channels_last": True, "fuse_qkv": True}}))
    unet = fast.backend.pipe.unet
    conv = next(m for m in unet.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert any(getattr(m, "fused_projections", False) for m in unet.modules())
    for a, b in zip(fast.generate(batch), plain):
        assert np.abs(np.asarray(a, int) - np.asarray(b, int)).max() <= 2
    compiled = get_generator(spec.model_copy(update={"params": {**spec.params, "compile": True, "compile_vae": True}}))
    assert type(compiled.backend.pipe.unet).__name__ == "OptimizedModule"
    assert hasattr(compiled.backend.pipe.vae.decode, "_torchdynamo_orig_callable")
