"""Janus unified backend on CUDA in bf16, with the torchvision image processor where torchvision is installed.

The CPU suite (tests/test_unified.py) covers the PIL processor backend; GPU machines usually have
torchvision, so AutoProcessor picks `JanusImageProcessor` there. Run: python -m pytest tests/gpu -q
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from g2u_tasks.config import ModelSpec  # noqa: E402
from g2u_tasks.thoughts.families import load_family  # noqa: E402
from g2u_tasks.backends.generators import GenerateRequest, get_generator  # noqa: E402
from g2u_tasks.backends.understanders import UnderstandRequest, get_understander  # noqa: E402

pytestmark = pytest.mark.gpu


def _cpu_suite():
    """The tiny-Janus builder lives in the CPU test module; load it by path (tests/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "backends" / "test_unified.py"
    spec = importlib.util.spec_from_file_location("_g2u_test_unified", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_janus(tmp_path_factory):
    return str(_cpu_suite().build_tiny_janus(tmp_path_factory.mktemp("models") / "tiny-janus"))


def _image(seed: int, size) -> Image.Image:
    return Image.linear_gradient("L").resize(size).rotate(seed * 41).convert("RGB")


def test_janus_both_roles_on_cuda_bf16(tiny_janus):
    load = {"device": "cuda", "dtype": "bfloat16"}
    und = get_understander(ModelSpec(backend="janus", model=tiny_janus, params={**load, "max_new_tokens": 4}))
    gen = get_generator(ModelSpec(backend="janus", model=tiny_janus, params={**load, "source_in_context": True}))
    assert und.resident is gen.resident
    assert next(gen.model.parameters()).device.type == "cuda" and gen.model.dtype == torch.bfloat16
    if importlib.util.find_spec("torchvision") is not None:
        assert type(gen.processor.image_processor).__name__ == "JanusImageProcessor"

    answers = und.answer([UnderstandRequest([_image(1, (72, 56)), _image(2, (40, 90))], "Which? A B"),
                          UnderstandRequest([_image(3, (64, 64))], "yes or no")])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)

    family = load_family("detail_enhancement")
    reqs = [GenerateRequest(_image(4, (96, 64)), "zoom in", s, family) for s in (0, 1)]
    out = gen.generate(reqs)
    assert [o.size for o in out] == [(96, 64), (96, 64)]
    again = gen.generate(reqs)[0]  # same batch: bf16 kernels may differ with batch shape
    assert np.array_equal(np.asarray(again), np.asarray(out[0]))
