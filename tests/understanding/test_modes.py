"""Feedback formats as modes (replace_gated, concat_conversation) and the `degrade` generator option."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from g2u_tasks.benchmarks.loaders import load_benchmark
from g2u_tasks.config import ModelSpec, RunConfig
from g2u_tasks.thoughts.families import load_families, load_family
from g2u_tasks.thoughts.fidelity import PSNR_CAP, pad_to_square, psnr_padded_square
from g2u_tasks.backends.generators.degrade import parse_degrade
from g2u_tasks.thoughts.materialise import generate_batch, plan_thoughts
from g2u_tasks.understanding.prompts import build_request
from g2u_tasks.records import Item
from g2u_tasks.store.thought_store import ThoughtStore
from g2u_tasks.backends import registry
from g2u_tasks.backends.understanders.base import UnderstandRequest
from g2u_tasks.backends.understanders.transformers_backend import EARLIER_OUTPUT_LABEL, TransformersUnderstander

REPO = Path(__file__).resolve().parents[2]
FAM = load_family("detail_enhancement")


def _item(**kw) -> Item:
    base = dict(benchmark="B", item_id="1", question="Is it red? Please answer yes or no.", options={},
                answer="Yes", category=None, question_type="yes_no", image_sha256="0" * 64, images=(b"x",))
    return Item(**{**base, **kw})


def _noise(w, h, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


# ---- replace_gated -------------------------------------------------------------------
def test_padded_square_psnr_matches_a_hand_computation():
    src = Image.new("RGB", (4, 2), (100, 100, 100))  # padded: rows 0 and 3 black, rows 1-2 grey
    assert np.asarray(pad_to_square(src))[[0, 3]].max() == 0 and np.asarray(pad_to_square(src))[1:3].min() == 100
    flat = Image.new("RGB", (8, 8), (100, 100, 100))  # resized to 4x4: all grey
    mse = (8 * 3 * 100**2) / (16 * 3)  # half of the pixels differ by 100
    assert psnr_padded_square(src, flat) == pytest.approx(10 * math.log10(255**2 / mse))  # 11.14 dB
    assert psnr_padded_square(src, pad_to_square(src)) == PSNR_CAP


def test_replace_gated_uses_the_thought_only_above_the_threshold():
    src = _noise(32, 16)
    square = np.asarray(pad_to_square(src)).astype(int)
    close = Image.fromarray(np.clip(square + 3, 0, 255).astype(np.uint8))  # ~38.6 dB
    far = Image.fromarray(255 - square.astype(np.uint8))  # a few dB
    db = psnr_padded_square(src, close)
    assert db == pytest.approx(10 * math.log10(255**2 / np.mean((square - np.asarray(close)) ** 2)))
    req, text, gate = build_request(_item(), [src], "replace_gated", close, FAM, gate_psnr_db=25.0)
    assert gate is True and req.images == [close] and text == _item().question
    req, _, gate = build_request(_item(), [src], "replace_gated", far, FAM, gate_psnr_db=25.0)
    assert gate is False and req.images == [src]
    # the threshold is strict (">"), as in the reference code
    assert build_request(_item(), [src], "replace_gated", close, FAM, gate_psnr_db=db - 0.01)[2] is True
    assert build_request(_item(), [src], "replace_gated", close, FAM, gate_psnr_db=db)[2] is False
    assert build_request(_item(), [src], "replace", far, FAM)[2] is None


def test_gate_threshold_and_modes_in_config():
    base = {"benchmarks": [{"name": "X", "source": "x.tsv"}], "understander": {"backend": "transformers", "model": "m"}}
    cfg = RunConfig.model_validate(base)
    assert cfg.gate_psnr_db == 25.0 and cfg.modes == ["baseline", "concat", "replace"]
    cfg2 = RunConfig.model_validate({**base, "modes": ["baseline", "replace_gated", "concat_conversation"]})
    assert cfg2.fingerprint() != cfg.fingerprint()
    assert RunConfig.model_validate({**base, "gate_psnr_db": 25.0}).fingerprint() == cfg.fingerprint()
    with pytest.raises(ValueError, match="modes listed twice"):
        RunConfig.model_validate({**base, "modes": ["concat", "concat"]})


# ---- concat_conversation ---------------------------------------------------------------
@pytest.fixture
def _fresh():
    registry.clear()
    yield
    registry.clear()


def _conversation_request():
    src, thought = _noise(40, 30, 1), _noise(40, 30, 2)
    req, text, gate = build_request(_item(), [src], "concat_conversation", thought, FAM)
    return req, text, gate, src, thought


def test_conversation_request_shape():
    req, text, gate, src, thought = _conversation_request()
    assert gate is None and [t.role for t in req.turns] == ["user", "assistant", "user"]
    assert req.turns[1].images == [thought] and req.turns[0].images == [src] == req.turns[2].images
    assert req.images == [src, thought, src]  # every turn's images, in order
    assert "Please edit the image first (Zoom into the region" in req.turns[0].text
    assert req.turns[2].text == _item().question and text == req.prompt and "ASSISTANT: <image>" in text


def test_tiny_llava_renders_the_thought_in_an_assistant_turn(tiny_llava, _fresh):
    und = TransformersUnderstander(ModelSpec(backend="transformers", model=str(tiny_llava),
                                             params={"max_new_tokens": 2}))
    assert und.assistant_images is True
    req, *_ = _conversation_request()
    text = und._render(req)
    assert text.count("<image>") == 3
    assert "ASSISTANT: <image>\n</s>USER: <image>" in text and text.endswith("ASSISTANT:")
    assert len(und.answer([req, UnderstandRequest([_noise(20, 20)], "Is it red?")])) == 2


_REJECTING = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' and message['content'] is not string and "
    "(message['content'] | selectattr('type', 'equalto', 'image') | list) %}"
    "{{ raise_exception('images are not allowed in assistant turns') }}{% endif %}"
    "{{ message['role'].upper() + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{{ message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') }}"
    "{% endif %}{{ ' ' if message['role'] != 'assistant' else '</s>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def test_template_rejecting_assistant_images_falls_back_to_a_labelled_user_turn(tiny_llava, tmp_path, _fresh):
    path = tmp_path / "tiny-strict"
    shutil.copytree(tiny_llava, path)
    (path / "chat_template.jinja").write_text(_REJECTING)
    und = TransformersUnderstander(ModelSpec(backend="transformers", model=str(path), params={"max_new_tokens": 2}))
    assert und.assistant_images is False
    req, *_ = _conversation_request()
    text = und._render(req)
    assert text.count("<image>") == 3  # same images, same order: the thought opens the last user turn
    assert "ASSISTANT: Here is the edited image.</s>USER: <image>\n<image>\n" + EARLIER_OUTPUT_LABEL in text
    assert len(und.answer([req])) == 1


# ---- degrade ----------------------------------------------------------------------------
def _degrade_cfg(degrade):
    return RunConfig.model_validate({
        "benchmarks": [{"name": "DemoShapes", "source": str(REPO / "data/demo/DemoShapes.tsv"), "limit": 2}],
        "understander": {"backend": "transformers", "model": "m"}, "families": ["reconstruction"],
        "generator": {"backend": "reference", "params": {"degrade": degrade}},  # degrades a perfect reconstruction
    })


@pytest.mark.parametrize("kind,strengths", [("noise", [0, 4, 16, 48]), ("blur", [0.5, 1.5, 4])])
def test_degrade_strengths_are_distinct_thoughts_with_falling_psnr(tmp_path, kind, strengths):
    cfg = _degrade_cfg({"kind": kind, "strengths": strengths})
    items = load_benchmark("DemoShapes", cfg.benchmarks[0].source, limit=2)
    planned = plan_thoughts(items, load_families(cfg.families), cfg)
    assert len({p.spec.thought_id for p in planned}) == 2 * len(strengths)
    assert [p.spec.generator_params for p in planned[: len(strengths)]] == [
        {"degrade": {"kind": kind, "strength": float(s)}} for s in strengths]
    rows = generate_batch(ThoughtStore(f"file://{tmp_path}/s"), cfg.generator, planned).to_pylist()
    assert {r["status"] for r in rows} == {"ok"}
    for item in items:
        curve = [r["psnr"] for r in rows if r["item_id"] == item.item_id]
        assert all(a > b for a, b in zip(curve, curve[1:])), curve
        assert len({r["blob_sha256"] for r in rows if r["item_id"] == item.item_id}) == len(strengths)


def test_degrade_param_validation_and_single_strength():
    assert parse_degrade({"x": 1}) == ({"x": 1}, [None])
    base, ds = parse_degrade({"x": 1, "degrade": {"kind": "blur", "strength": 2}})
    assert base == {"x": 1} and [(d.kind, d.strength) for d in ds] == [("blur", 2.0)]
    for bad in ({"kind": "jpeg", "strength": 1}, {"kind": "noise"}, {"kind": "noise", "strengths": []},
                {"kind": "noise", "strength": -1}, {"kind": "noise", "strength": 1, "strengths": [2]}):
        with pytest.raises(ValueError, match="degrade"):
            parse_degrade({"degrade": bad})
