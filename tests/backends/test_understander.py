"""Understander backend "transformers" on a tiny offline LLaVA (random weights, CPU)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from g2u_tasks.config import ModelSpec
from g2u_tasks.backends.tiny_models import MODEL_CARD, build_tiny_llava, ensure_model
from g2u_tasks.backends.understanders import UnderstandRequest, get_understander


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny-llava"
    return build_tiny_llava(path)


@pytest.fixture(autouse=True)
def _fresh_cache(fresh_models):
    """Each test loads its own instances (the shared cache is cleared around it)."""


def _image(seed: int, size=(72, 56)) -> Image.Image:
    # Distinct, non-uniform images (a gradient per seed), some not RGB to exercise conversion.
    im = Image.linear_gradient("L").resize(size).rotate(seed * 37)
    return im if seed % 2 else im.convert("RGB")


def _requests() -> list[UnderstandRequest]:
    return [
        UnderstandRequest([_image(1)], "Is there a cat? Answer yes or no."),
        UnderstandRequest([_image(2), _image(3, (40, 90))], "Which option? A. red B. blue C. green D. gray"),
        UnderstandRequest([_image(4)], "How many?"),
        UnderstandRequest([_image(5, (128, 128)), _image(6)], "Describe the second image in one word, please."),
        UnderstandRequest([_image(7)], "Answer with a number between 0 and 9: how many objects are there?"),
    ]


def test_build_reloads_like_users_load(tiny_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    card = json.loads((tiny_path / MODEL_CARD).read_text())
    assert card == {"random_weights": True, "architecture": "llava", "built_by": "g2u_tasks.backends.tiny_models"}
    # Atomic build leaves no temp dir behind, and no absolute paths in the saved files.
    assert [p.name for p in tiny_path.parent.iterdir()] == [tiny_path.name]
    for f in tiny_path.glob("*.json*"):
        assert str(tiny_path.parent) not in f.read_text(), f.name

    processor = AutoProcessor.from_pretrained(tiny_path)
    model = AutoModelForImageTextToText.from_pretrained(tiny_path)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert model.config.text_config.model_type == "llama"
    assert model.config.vision_config.model_type == "clip_vision_model"
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Yes?"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text == "USER: <image>\n<image>\nYes? ASSISTANT:"
    enc = processor(text=[text], images=[_image(1), _image(2)], return_tensors="pt")
    n_image_tokens = int((enc["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == 2 * model.config.image_seq_length
    assert enc["input_ids"][0, 0] == processor.tokenizer.bos_token_id


def test_resident_deterministic_and_order_preserved(tiny_path):
    spec = ModelSpec(backend="transformers", model=str(tiny_path), params={"max_new_tokens": 4})
    und = get_understander(spec)
    assert get_understander(spec) is und
    assert und.name == f"transformers:{tiny_path}"
    assert und.notes == "random weights: numbers are not meaningful"

    reqs = _requests()
    first = und.answer(reqs)
    assert len(first) == 5 and all(isinstance(a, str) for a in first)
    assert und.answer(reqs) == first
    # Order: each request alone (no padding, no neighbours) gives the answer it got inside the batch.
    # Left padding + position ids from the attention mask + greedy decoding in float32 make this exact here.
    assert [und.answer([r])[0] for r in reqs] == first
    assert und.answer(reqs[::-1]) == first[::-1]
    # Internal chunking (batch_size 2, other sort buckets) changes nothing.
    small = get_understander(spec.model_copy(update={"params": {"max_new_tokens": 4, "batch_size": 2}}))
    assert small is not und
    assert small.answer(reqs) == first
    assert und.answer([]) == []


def test_ensure_model_builds_missing_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = ModelSpec(backend="transformers", model="models/tiny", build="tiny-llava", params={"max_new_tokens": 2})
    assert ensure_model(spec) == "models/tiny"
    assert (tmp_path / "models/tiny" / MODEL_CARD).is_file()
    mtime = (tmp_path / "models/tiny/config.json").stat().st_mtime_ns
    und = get_understander(spec)  # path exists now: no rebuild
    assert (tmp_path / "models/tiny/config.json").stat().st_mtime_ns == mtime
    assert und.notes and "random weights" in und.notes
    assert len(und.answer([UnderstandRequest([_image(1)], "Yes or no?")])) == 1

    with pytest.raises(ValueError, match="no-such-build"):
        ensure_model(ModelSpec(backend="transformers", model="models/x", build="no-such-build"))
    assert not (tmp_path / "models/x").exists()


def test_unknown_backend_lists_known():
    with pytest.raises(ValueError, match="transformers"):
        get_understander(ModelSpec(backend="nope", model="x"))
