"""The `diffusers` generator on CUDA in bf16, with the tiny pipelines of tests/diffusers_dummies.py.

QwenImageEdit and OmniGen run only where torchvision imports (their processors need it).
"""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for diffusers_dummies

import diffusers_dummies as dd  # noqa: E402
from PIL import Image  # noqa: E402

from g2u_tasks.config import ModelSpec  # noqa: E402
from g2u_tasks.thoughts.families import load_family  # noqa: E402
from g2u_tasks.backends.generators import GenerateRequest, get_generator  # noqa: E402
from g2u_tasks.backends.generators.diffusers_backend import target_size  # noqa: E402
from g2u_tasks.images import encode_png  # noqa: E402

pytestmark = pytest.mark.gpu

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
needs_torchvision = pytest.mark.skipif(not HAS_TORCHVISION, reason="processor needs torchvision")

BASE = {"num_inference_steps": 2, "resolution": 64, "batch_size": 4, "dtype": "bfloat16", "device": "cuda"}
CASES = {
    "instruct_pix2pix": (dd.build_instruct_pix2pix, {"guidance_scale": 3.0, "image_guidance_scale": 1.5}),
    "flux_kontext": (dd.build_flux_kontext, {"guidance_scale": 2.5, "call_kwargs": {"max_sequence_length": 32}}),
    "qwen_image_edit": (dd.build_qwen_image_edit, {"call_kwargs": {"max_sequence_length": 64}}),
    "omnigen": (dd.build_omnigen, {"guidance_scale": 2.0, "image_guidance_scale": 1.6}),
}
MARKS = {"qwen_image_edit": [needs_torchvision], "omnigen": [needs_torchvision]}
SIZES = [(96, 64), (64, 96), (80, 80), (96, 64)]  # the last shares a batch with the first


@pytest.mark.parametrize("name", [pytest.param(n, marks=MARKS.get(n, [])) for n in CASES])
def test_bf16_batch_on_cuda(name, tmp_path):
    build, params = CASES[name]
    path = build(tmp_path / name)
    gen = get_generator(ModelSpec(backend="diffusers", model=str(path), params={**BASE, **params}))
    assert gen.pipe.device.type == "cuda"
    family = load_family("identity")
    reqs = [GenerateRequest(Image.new("RGB", s, (40 * i, 90, 160)), "make it red", i, family) for i, s in enumerate(SIZES)]
    out = gen.generate(reqs)
    assert len(out) == len(SIZES)
    for (w, h), im in zip(SIZES, out):
        assert im.size == target_size(w, h, gen.size_step, resolution=64)
    # same seeds, same bytes (OmniGen too: its global-RNG draw is seeded per item)
    assert [encode_png(im) for im in gen.generate(reqs)] == [encode_png(im) for im in out]
