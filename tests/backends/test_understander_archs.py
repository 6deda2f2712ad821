"""Transformers understander across the architectures buildable offline here (CPU, random weights)."""
from __future__ import annotations

import threading

import pytest
import torch
from PIL import Image

from g2u_tasks.config import ModelSpec
from g2u_tasks.backends.tiny_models import MODEL_CARD, TINY_BUILDERS, read_model_card
from g2u_tasks.backends.understanders import UnderstandRequest, get_understander

# name -> model class after loading through AutoModelForImageTextToText
ARCHS = {
    "llava": "LlavaForConditionalGeneration",
    "idefics3": "Idefics3ForConditionalGeneration",
    "gemma3": "Gemma3ForConditionalGeneration",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("archs")
    return {arch: TINY_BUILDERS[f"tiny-{arch}"](root / arch) for arch in ARCHS}


@pytest.fixture(autouse=True)
def _fresh_cache(fresh_models):
    """Each test loads its own instances (the shared cache is cleared around it)."""


def _image(seed: int, size=(72, 56)) -> Image.Image:
    im = Image.linear_gradient("L").resize(size).rotate(seed * 41)
    return im if seed % 2 else im.convert("RGB")


def _requests() -> list[UnderstandRequest]:
    return [
        UnderstandRequest([_image(1), _image(2, (150, 60))], "Which option? A. red B. blue C. green D. gray"),
        UnderstandRequest([_image(3)], "Is there a cat? Answer yes or no."),
        UnderstandRequest([_image(4, (40, 90))], "How many objects are there?"),
        UnderstandRequest([_image(5, (128, 128)), _image(6)], "Describe the second image in one word."),
    ]


def _spec(path, **params) -> ModelSpec:
    return ModelSpec(backend="transformers", model=str(path), params={"max_new_tokens": 4, **params})


@pytest.mark.parametrize("arch", list(ARCHS))
def test_batch_matches_singles_in_order(built, arch):
    assert read_model_card(built[arch])["architecture"] == arch
    assert (built[arch] / MODEL_CARD).is_file()
    und = get_understander(_spec(built[arch]))
    assert type(und.model).__name__ == ARCHS[arch]

    reqs = _requests()
    first = und.answer(reqs)
    assert len(first) == 4 and all(isinstance(a, str) for a in first)
    assert und.answer(reqs) == first  # deterministic
    assert [und.answer([r])[0] for r in reqs] == first  # no padding/neighbour effects, order kept
    assert und.answer(reqs[::-1]) == first[::-1]
    assert get_understander(_spec(built[arch], batch_size=1)).answer(reqs) == first  # many chunks, prefetched

    # Left padding (even where the saved tokenizer pads right) and exactly one BOS per prompt.
    enc = und._prepare(reqs)
    assert bool(enc["attention_mask"][:, -1].all())
    bos = und.processor.tokenizer.bos_token_id
    first_real = enc["input_ids"].gather(1, enc["attention_mask"].argmax(1, keepdim=True)).squeeze(1)
    assert first_real.tolist() == [bos] * 4
    assert ((enc["input_ids"] == bos) & enc["attention_mask"].bool()).sum(1).tolist() == [1] * 4


def _fake_oom(und, monkeypatch, limit: int) -> list[int]:
    """Make generate raise CUDA OOM above `limit` rows; return the batch sizes it was called with."""
    real, sizes = und.model.generate, []

    def generate(**kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        if sizes[-1] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return real(**kwargs)

    monkeypatch.setattr(und.model, "generate", generate)
    return sizes


def test_oom_halves_until_it_fits(built, monkeypatch):
    reqs = _requests() + _requests()[:3]  # 7 requests
    und = get_understander(_spec(built["llava"], batch_size=8))
    expected = und.answer(reqs)

    prep_threads = []
    real_prepare = und._prepare

    def prepare(b):
        prep_threads.append(threading.current_thread().name)
        return real_prepare(b)

    monkeypatch.setattr(und.backend, "_prepare", prepare)  # on the backend: the registry's handle forwards reads
    sizes = _fake_oom(und, monkeypatch, limit=2)
    assert und.answer(reqs) == expected
    # 7 fails -> 3 fails -> 1, 2; 4 fails -> 2, 2: every request answered once, in order.
    assert sizes == [7, 3, 1, 2, 4, 2, 2]
    # The chunk was prepared on the worker thread; each retried half is re-prepared here.
    assert prep_threads[0].startswith("g2u-prep") and prep_threads[1:] == ["MainThread"] * 6


def test_oom_on_a_single_item_is_raised(built, monkeypatch):
    und = get_understander(_spec(built["llava"]))
    sizes = _fake_oom(und, monkeypatch, limit=0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        und.answer(_requests()[:2])
    assert sizes == [2, 1]
