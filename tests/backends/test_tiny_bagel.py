"""BAGEL through the `bagel` backend on CPU: a tiny BAGEL-architecture checkout written by the project
(tests/backends/tiny_bagel_code) with random weights, loaded by the same `load_official` users take.

The batched path (PackedBagel: packed sequences, shared contexts) must give exactly what the official
one-at-a-time inferencer gives (fp32), for answers in every mode, edits, and think mode."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from g2u_tasks.backends import registry
from g2u_tasks.backends.generators import GenerateRequest, get_generator
from g2u_tasks.backends.generators.base import GEN_TEXT_INFO
from g2u_tasks.backends.understanders import UnderstandRequest, get_understander
from g2u_tasks.backends.understanders.base import Turn
from g2u_tasks.backends.unified.bagel import interleaved
from g2u_tasks.backends.unified.bagel_official import code_revision
from g2u_tasks.backends.unified.bagel_packed import PackedBagel
from g2u_tasks.config import ModelSpec, RunConfig
from g2u_tasks.records import Item
from g2u_tasks.store.thought_store import ThoughtStore
from g2u_tasks.thoughts.families import load_family
from g2u_tasks.thoughts.stage import materialise_thoughts
from g2u_tasks.understanding.prompts import build_request
from g2u_tasks.understanding.stage import run_notes, run_understanding
from tests.backends.tiny_bagel import CODE, build_tiny_bagel
from tests.loopback_chat import ChatServer

REPO = Path(__file__).resolve().parents[2]
FAMILY = load_family("detail_enhancement")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster, and steady on a shared machine
    registry.clear()
    yield build_tiny_bagel(tmp_path_factory.mktemp("models") / "tiny-bagel")
    registry.clear()
    torch.set_num_threads(threads)


def _spec(weights, **params):
    return ModelSpec(backend="bagel", model=str(weights), params={
        "code": str(CODE), "device": "cpu", "dtype": "float32", "max_new_tokens": 5, "max_think_tokens": 5,
        "generate_kwargs": {"num_timesteps": 3}, **params})


def _scene(w, h, colour):
    img = Image.new("RGB", (w, h), (200, 220, 240))
    d = ImageDraw.Draw(img)
    d.ellipse((w // 4, h // 4, w // 2, h // 2), fill=colour)
    d.rectangle((2, 2, w // 5, h // 6), fill=(20, 120, 20))
    return img


SOURCES = [_scene(64, 48, (220, 30, 30)), _scene(40, 80, (30, 30, 220)), _scene(56, 56, (230, 200, 20))]


def _item(i):
    return Item(benchmark="t", item_id=str(i), question=f"Which colour is shape {i}?",
                options={"A": "red", "B": "blue", "C": "yellow"}, answer="A", category="colour",
                question_type="mcq", image_sha256="", images=())


def _answer_requests(thoughts):
    """baseline, concat and conversation requests per item (the project's own prompts)."""
    return [build_request(_item(i), [src], mode, thought, FAMILY)[0]
            for i, (src, thought) in enumerate(zip(SOURCES, thoughts))
            for mode in ("baseline", "concat", "concat_conversation")]


def _same(a, b):
    return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


class Spy:
    """Counts the images the model's packed ViT / VAE forwards take (the real method still runs)."""

    def __init__(self, monkeypatch, model):
        self.vit = self.vae = 0
        vit, vae = model.forward_cache_update_vit, model.forward_cache_update_vae

        def count_vit(cache, **inp):
            self.vit += len(inp["vit_token_seqlens"])
            return vit(cache, **inp)

        def count_vae(vae_model, cache, **inp):
            self.vae += len(inp["patchified_vae_latent_shapes"])
            return vae(vae_model, cache, **inp)

        monkeypatch.setattr(model, "forward_cache_update_vit", count_vit)
        monkeypatch.setattr(model, "forward_cache_update_vae", count_vae)

    def take(self):
        counts, self.vit, self.vae = (self.vit, self.vae), 0, 0
        return counts


@pytest.mark.parametrize("think", [False, True])
def test_batched_edits_and_answers_match_the_official_inferencer(weights, monkeypatch, think):
    batched = get_generator(_spec(weights, think=think))
    single = get_generator(_spec(weights, think=think, batched=False))
    assert batched.resident is single.resident and batched.packed is not None and single.packed is None
    spy = Spy(monkeypatch, batched.official.model)
    edits = [GenerateRequest(SOURCES[0], "Zoom in on the red circle.", 0, FAMILY),
             GenerateRequest(SOURCES[0], "Expand the scene beyond its borders.", 0, FAMILY),
             GenerateRequest(SOURCES[1], "Zoom in on the red circle.", 1, FAMILY),
             GenerateRequest(SOURCES[2], "Zoom in on the red circle.", 1, FAMILY)]
    packed_images = batched.generate(edits)
    assert spy.take() == (3, 3)  # source 0's VAE + ViT context once for both of its prompts
    single_images = single.generate(edits)
    assert spy.take() == (4, 4)
    assert [im.size for im in packed_images] == [src.size for src in (SOURCES[0], SOURCES[0], SOURCES[1], SOURCES[2])]
    assert all(_same(a, b) for a, b in zip(packed_images, single_images))  # pixel for pixel
    assert not _same(packed_images[0], packed_images[1])  # the prompt matters
    plans = [im.info.get(GEN_TEXT_INFO) for im in packed_images]
    assert plans == [im.info.get(GEN_TEXT_INFO) for im in single_images]
    assert all(plans) if think else not any(plans)  # think mode's plans travel to the thought's gen_text

    und_batched = get_understander(_spec(weights, think=think))
    und_single = get_understander(_spec(weights, think=think, batched=False))
    reqs = _answer_requests([packed_images[0], packed_images[2], packed_images[3]])
    answers = und_batched.answer(reqs)
    # an item's original image is in context once for its three answers (one at a time: 1 + 2 + 3 times)
    assert spy.take() == (3 * 4, 0)
    assert und_single.answer(reqs) == answers
    assert spy.take() == (3 * 6, 0)
    assert len(set(answers)) > 1  # answers depend on the inputs, so the identity above means something


def test_a_packing_bug_changes_the_answers(weights):
    """The identity test has teeth: samples that read each other's KV cache answer differently."""

    class MixedCaches(PackedBagel):
        def pack(self, ctxs):  # the caches concatenated in reverse order, the lengths left in order
            cache, lens, ropes = super().pack(list(reversed(ctxs)))
            return cache, lens[::-1], ropes[::-1]

    und = get_understander(_spec(weights, batched=False))
    reqs = [build_request(_item(i), [src], "baseline")[0] for i, src in enumerate(SOURCES)]
    expected = und.answer(reqs)
    assert len(set(expected)) > 1
    inputs = [interleaved(r) for r in reqs]
    good = [a.strip() for a in PackedBagel(und.official).answer(inputs, False, 5)]  # the backend strips too
    bad = [a.strip() for a in MixedCaches(und.official).answer(inputs, False, 5)]
    assert good == expected and bad != expected


def test_run_record_notes_and_one_resident_for_both_roles(weights):
    gen, und = get_generator(_spec(weights)), get_understander(_spec(weights, max_new_tokens=3))
    assert gen.resident is und.resident and gen.lock is und.lock  # one model, one lock
    revision = code_revision(str(CODE))  # the project's git commit here, None outside a git checkout
    assert revision is None or len(revision.split("+")[0]) == 40
    for notes in (und.notes, registry.describe("generator", _spec(weights))):  # loaded, or not loaded
        assert f"official code {CODE} @ {revision or 'not a git checkout'}" in notes
        assert "attention sdpa-varlen" in notes and "weights g2u card: BAGEL (tiny shapes), random weights" in notes


def test_bfloat16_loads_under_autocast(weights):
    und = get_understander(_spec(weights, dtype="bfloat16"))
    assert next(und.official.model.parameters()).dtype == torch.bfloat16
    assert isinstance(und.answer([UnderstandRequest([SOURCES[0]], "Which colour?")])[0], str)
    with pytest.raises(ValueError, match="dtype must be one of"):
        get_understander(_spec(weights, dtype="float16"))


def test_conversation_is_interleaved_turn_by_turn():
    a, b = SOURCES[0], SOURCES[1]
    req = UnderstandRequest.from_turns([Turn("user", [a], "Q? edit first"), Turn("assistant", [b]),
                                        Turn("user", [a], "Q?")])
    inputs = interleaved(req)
    assert [x if isinstance(x, str) else x.size for x in inputs] == [a.size, "Q? edit first", b.size, a.size, "Q?"]


def test_bagel_without_a_checkout_is_a_clear_error(tmp_path):
    with pytest.raises(ImportError, match=r"ByteDance-Seed/Bagel"):
        get_generator(ModelSpec(backend="bagel", model=str(tmp_path / "w")))
    with pytest.raises(ImportError, match=r"not a BAGEL checkout"):
        get_generator(ModelSpec(backend="bagel", model=str(tmp_path / "w"), params={"code": str(tmp_path)}))


def test_runs_notes_name_bagel_when_it_is_only_the_generator(weights, tmp_path, monkeypatch):
    chat = ChatServer(lambda body: "A")
    monkeypatch.setenv("OPENAI_API_KEY", "loopback")
    try:
        cfg = RunConfig.model_validate({
            "store": str(tmp_path / "store"), "warehouse": str(tmp_path / "wh.duckdb"), "run_id": "r",
            "benchmarks": [{"name": "DemoShapes", "source": str(REPO / "data/demo/DemoShapes.tsv"), "limit": 1}],
            "families": ["detail_enhancement"], "modes": ["baseline", "concat"],
            "generator": _spec(weights).model_dump(),
            "understander": {"backend": "openai", "model": "m", "params": {"base_url": chat.base_url}}})
        m = materialise_thoughts(cfg)
        assert m["generated"] == 1
        run_id = run_understanding(cfg, m["dataset_version"], m)
    finally:
        chat.close()
    notes = ThoughtStore(cfg.store).read_run_table(run_id, "run")["notes"][0]
    assert notes.startswith("generator: official code ") and "attention sdpa-varlen" in notes
    assert "weights g2u card: BAGEL (tiny shapes)" in notes


def test_runs_notes_name_one_resident_bagel_once(weights, tmp_path):
    spec = _spec(weights).model_dump()
    cfg = RunConfig.model_validate({"store": str(tmp_path / "store"), "warehouse": str(tmp_path / "wh.duckdb"),
                                    "benchmarks": [{"name": "B", "source": "b.tsv"}],
                                    "generator": spec, "understander": spec})
    own = get_understander(cfg.understander).notes
    assert run_notes(cfg, own) == own  # both roles, one model: its notes once
