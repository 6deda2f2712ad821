"""Transformers understander on CUDA in bf16 for every tiny architecture (GPU machines: torchvision there).

Run: python -m pytest tests/gpu -q   (skipped where CUDA is unavailable)
"""
from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)

from PIL import Image  # noqa: E402

from g2u_tasks.config import ModelSpec  # noqa: E402
from g2u_tasks.backends.tiny_models import TINY_BUILDERS  # noqa: E402
from g2u_tasks.backends.understanders import UnderstandRequest, get_understander  # noqa: E402
from g2u_tasks.backends import registry  # noqa: E402
from g2u_tasks.backends.understanders import prefix_sharing  # noqa: E402

pytestmark = pytest.mark.gpu

# build name -> model class after loading through AutoModelForImageTextToText
ARCHS = {
    "tiny-llava": "LlavaForConditionalGeneration",
    "tiny-idefics3": "Idefics3ForConditionalGeneration",
    "tiny-gemma3": "Gemma3ForConditionalGeneration",
    "tiny-qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration",
    "tiny-qwen3-vl": "Qwen3VLForConditionalGeneration",
    "tiny-llava-onevision": "LlavaOnevisionForConditionalGeneration",
    "tiny-internvl": "InternVLForConditionalGeneration",
}


@pytest.fixture(autouse=True)
def _fresh_cache():
    registry.clear()
    yield
    registry.clear()
    torch.cuda.empty_cache()


def _image(seed: int, size=(72, 56)) -> Image.Image:
    return Image.linear_gradient("L").resize(size).rotate(seed * 41).convert("RGB")


def _requests() -> list[UnderstandRequest]:
    return [
        UnderstandRequest([_image(1), _image(2, (150, 60))], "Which option? A. red B. blue C. green D. gray"),
        UnderstandRequest([_image(3)], "Is there a cat? Answer yes or no."),
        UnderstandRequest([_image(4, (40, 90))], "How many objects are there?"),
        UnderstandRequest([_image(5, (128, 128)), _image(6)], "Describe the second image in one word."),
        UnderstandRequest([_image(7, (300, 200))], "What color is the car?"),
    ]


@pytest.mark.parametrize("build", list(ARCHS))
def test_bf16_cuda_mixed_image_counts(tmp_path, build):
    path = TINY_BUILDERS[build](tmp_path / build)
    params = {"max_new_tokens": 4, "dtype": "bfloat16", "device": "cuda", "batch_size": 4}
    und = get_understander(ModelSpec(backend="transformers", model=str(path), params=params))
    assert type(und.model).__name__ == ARCHS[build]
    assert und.model.dtype == torch.bfloat16 and und.model.device.type == "cuda"

    reqs = _requests()
    out = und.answer(reqs)
    assert len(out) == len(reqs) and all(isinstance(a, str) for a in out)
    assert und.answer(reqs) == out  # greedy: repeatable on the same device
    assert len(und.answer(reqs[:1])) == 1


def test_real_cuda_oom_is_split(tmp_path, monkeypatch):
    """A genuine CUDA OOM from a huge allocation at batch > 2 is survived by halving."""
    path = TINY_BUILDERS["tiny-llava"](tmp_path / "llava")
    params = {"max_new_tokens": 4, "dtype": "bfloat16", "device": "cuda", "batch_size": 8, "share_prefix": False}
    und = get_understander(ModelSpec(backend="transformers", model=str(path), params=params))
    real, sizes = und.model.generate, []
    too_big = 2 * torch.cuda.get_device_properties(0).total_memory  # a plain cudaMalloc that must fail

    def generate(**kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        if sizes[-1] > 2:
            torch.empty(too_big, dtype=torch.uint8, device="cuda")
        return real(**kwargs)

    monkeypatch.setattr(und.model, "generate", generate)
    out = und.answer(_requests())
    assert len(out) == 5 and all(isinstance(a, str) for a in out)
    assert sizes == [5, 2, 3, 1, 2]  # bf16 answers may change with the batch split, so only shape is checked


@pytest.mark.parametrize("build", ["tiny-llava", "tiny-gemma3"])
def test_cuda_graph_decode_matches_eager(tmp_path, build, monkeypatch):
    """The decode step replayed as a CUDA graph gives the eager static decode's tokens exactly (the
    same kernels), for shared and unshared chunks; graphs are captured where the cache allows."""
    from transformers import StaticCache

    path = TINY_BUILDERS[build](tmp_path / build)
    base = {"max_new_tokens": 6, "dtype": "bfloat16", "device": "cuda", "batch_size": 4, "share_prefix": True}
    reqs = _requests()
    reqs.append(UnderstandRequest(reqs[1].images, "Is there a dog? Answer yes or no."))  # shares reqs[1]'s image
    eager = get_understander(ModelSpec(backend="transformers", model=str(path), params={**base, "cuda_graphs": False}))
    expected = eager.answer(reqs)
    safe = prefix_sharing._graph_safe(StaticCache(config=eager.model.config, max_cache_len=8))
    registry.clear()
    captured, real = [], prefix_sharing._capture
    monkeypatch.setattr(prefix_sharing, "_capture",
                        lambda step, device: captured.append(real(step, device)) or captured[-1])
    graphs = get_understander(ModelSpec(backend="transformers", model=str(path), params=base))
    assert graphs.cuda_graphs and "shared-prefix decoding with CUDA graphs" in graphs.notes
    assert graphs.answer(reqs) == expected
    assert len(captured) == (len(graphs._chunks(reqs)) if safe else 0) and all(c is not None for c in captured)


def test_compiled_decode_matches_eager_on_cuda(tmp_path):
    """compile_decode on CUDA: the compiled step, captured and replayed as a CUDA graph, gives the
    eager replayed step's answers in fp32 (kernels change; fp32 keeps greedy choices apart)."""
    from torch._dynamo.utils import counters

    path = TINY_BUILDERS["tiny-llava"](tmp_path / "tiny-llava")
    base = {"max_new_tokens": 6, "dtype": "float32", "device": "cuda", "batch_size": 4, "share_prefix": True}
    reqs = _requests()
    reqs.append(UnderstandRequest(reqs[1].images, "Is there a dog? Answer yes or no."))  # shares reqs[1]'s image
    expected = get_understander(ModelSpec(backend="transformers", model=str(path), params=base)).answer(reqs)
    registry.clear()
    compiled = get_understander(ModelSpec(backend="transformers", model=str(path),
                                          params={**base, "compile_decode": True}))
    assert "with CUDA graphs, compiled decode step" in compiled.notes
    counters.clear()
    assert compiled.answer(reqs) == expected
    assert counters["stats"]["unique_graphs"] >= 1
