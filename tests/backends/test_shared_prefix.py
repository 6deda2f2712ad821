"""Shared-prefix execution in the transformers understander: greedy answers identical to the
unshared path on a realistic item-major sweep (CPU, fp32, tiny random-weight models)."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from g2u_tasks.backends import registry
from g2u_tasks.backends.tiny_models import TINY_BUILDERS
from g2u_tasks.backends.understanders import get_understander, prefix_sharing
from g2u_tasks.config import ModelSpec
from g2u_tasks.records import Item
from g2u_tasks.thoughts.families import load_families
from g2u_tasks.understanding.prompts import build_request

FAMILIES = ["detail_enhancement", "context_expansion", "structural_visualisation", "identity"]
# arch -> does the backend share prefixes for it (else it must fall back to the plain batch)
ARCHS = {"llava": True, "gemma3": True}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("shared")
    return {arch: TINY_BUILDERS[f"tiny-{arch}"](root / arch) for arch in ARCHS}


@pytest.fixture(autouse=True)
def _fresh_cache(fresh_models):
    """Each test loads its own instances."""


def _image(seed: int, size=(72, 56)) -> Image.Image:
    return Image.linear_gradient("L").resize(size).rotate(seed * 29).convert("RGB")


def _item(i: int) -> Item:
    if i % 2:
        return Item("B", str(i), f"What is shown in picture {i}?", {"A": "a cat", "B": "a dog", "C": "a bird"},
                    "A", None, "mcq", "x", ())
    return Item("B", str(i), "Is there a cat in the image? Answer yes or no." + " Look." * (i % 3), {}, "yes",
                None, "yes_no", "x", ())


def sweep(n_items: int = 5):
    """Item-major requests, as plan_understanding orders them: baseline, then per family concat and
    replace; an item's original image is one object across its requests (as in understand_batch)."""
    families = load_families(FAMILIES)
    reqs, labels = [], []
    for i in range(n_items):
        item, original = _item(i), [_image(i, (72 + 8 * i, 56))]
        reqs.append(build_request(item, original, "baseline")[0])
        labels.append((i, "baseline", "baseline"))
        for f, fam in enumerate(families):
            thought = _image(100 + 10 * i + f, (64, 64 + 4 * f))
            for mode in ("concat", "replace"):
                reqs.append(build_request(item, original, mode, thought, fam)[0])
                labels.append((i, fam.name, mode))
    return reqs, labels


def _spec(path, **params) -> ModelSpec:
    return ModelSpec(backend="transformers", model=str(path), params={"max_new_tokens": 10, **params})


def _count_decodes(monkeypatch) -> list[tuple[int, int]]:
    """Per decode pass: (rows, columns already in its cache)."""
    real, calls = prefix_sharing.decode_greedy, []

    def decode(model, cache, mask, *args, **kwargs):
        calls.append(tuple(mask.shape))
        return real(model, cache, mask, *args, **kwargs)

    monkeypatch.setattr(prefix_sharing, "decode_greedy", decode)
    return calls


@pytest.mark.parametrize("arch", list(ARCHS))
def test_shared_matches_unshared_on_a_sweep(built, arch, monkeypatch):
    reqs, labels = sweep()
    plain = get_understander(_spec(built[arch], share_prefix=False, batch_size=64))
    shared = get_understander(_spec(built[arch], share_prefix=True, batch_size=64))
    assert not plain.share_prefix and shared.share_prefix is ARCHS[arch]
    expected = plain.answer(reqs)
    calls = _count_decodes(monkeypatch)
    got = shared.answer(reqs)
    assert got == expected, [(lab, e, g) for lab, e, g in zip(labels, expected, got) if e != g]
    assert any(len(a) > 0 for a in got)
    if ARCHS[arch]:
        # One chunk: one decode pass over all its rows, continued from a cache holding every token
        # but each row's last (the prefill ran before it).
        assert len(calls) == 1 and calls[0][0] == len(reqs), calls
        longest = max(len(t) for t in shared._prepare(reqs)["input_ids"])
        assert calls[0][1] >= longest - 1, calls
    # Small chunks (an item split over chunks, groups cut) and a reversed batch change nothing.
    small = get_understander(_spec(built[arch], share_prefix=True, batch_size=4))
    small_calls = _count_decodes(monkeypatch)
    assert small.answer(reqs) == expected
    assert len(small_calls) == len(small._chunks(reqs))  # one pass per chunk, shared or not
    assert shared.answer(reqs[::-1]) == expected[::-1]
    # Each request alone (nothing to share) gives the same answer.
    assert [shared.answer([r])[0] for r in reqs[:9]] == expected[:9]


@pytest.mark.parametrize(("forward_cost", "static_decode"), [(0, True), (10**9, False)])
def test_every_bucketing_gives_the_same_answers(built, forward_cost, static_decode):
    """One continuation forward per distinct length, or a single padded one; decoding from a static
    or a dynamic cache: same tokens."""
    reqs, _ = sweep(3)
    und = get_understander(_spec(built["llava"], share_prefix=True, batch_size=64))
    inputs = und._prepare(reqs)
    rows = prefix_sharing.rows_from_inputs(inputs, [len(r.images) for r in reqs], [id(r.images[0]) for r in reqs])
    lengths = [len(r.ids) for r in rows]
    assert len(prefix_sharing.length_buckets(lengths, forward_cost)) == (len(set(lengths)) if forward_cost == 0 else 1)
    new = prefix_sharing.generate_shared(und.model, rows, und.processor.tokenizer.pad_token_id, und.image_token_id,
                                         und._gen_kwargs(), forward_cost=forward_cost, static_decode=static_decode)
    unshared = get_understander(_spec(built["llava"], share_prefix=False, batch_size=64))
    assert und._decode(new) == unshared.answer(reqs)


def test_prefix_covers_template_head_and_first_image_only(built):
    """LLaVA-1.5 layout: `<s>USER: <image>xN` is shared; the text after the image differs per mode."""
    reqs, _ = sweep(1)
    und = get_understander(_spec(built["llava"], share_prefix=True))
    inputs = und._prepare(reqs)
    rows = prefix_sharing.rows_from_inputs(inputs, [len(r.images) for r in reqs],
                                           [id(r.images[0]) for r in reqs])
    group_of, lengths = prefix_sharing.plan_groups(rows, und.image_token_id)
    # baseline + 4 concat share; replace rows start with their thought.
    assert group_of == [0, 0, None, 0, None, 0, None, 0, None]
    n_img = und.model.config.image_seq_length
    ids = rows[0].ids.tolist()
    assert lengths == [ids.index(und.image_token_id) + n_img + 1]  # the first image and its "\n"
    assert und.processor.tokenizer.decode(ids[lengths[0] - 1:lengths[0]]) == "\n"
    head = und.processor.tokenizer.decode(ids[:ids.index(und.image_token_id)])
    assert head == "<s>USER: "


def test_chunks_keep_groups_together():
    keys = ["a", "a", None, "b", "a", None, "b", "c", "c", "c"]
    assert prefix_sharing.chunks_by_key(keys, 4) == [[0, 1, 4, 2], [3, 6, 5], [7, 8, 9]]
    assert prefix_sharing.chunks_by_key(["a"] * 5, 2) == [[0, 1], [2, 3], [4]]


def test_share_prefix_param_is_checked(built):
    auto = get_understander(_spec(built["llava"]))  # auto: on for GPUs only; this machine runs on CPU
    assert auto.share_prefix is False and "shared-prefix" not in (auto.notes or "")
    assert "shared-prefix decoding" in get_understander(_spec(built["llava"], share_prefix=True)).notes
    assert "CUDA graphs" not in get_understander(_spec(built["llava"], share_prefix=True)).notes
    with pytest.raises(ValueError, match="share_prefix"):
        get_understander(_spec(built["llava"], share_prefix="yes"))
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        get_understander(_spec(built["llava"], cuda_graphs=True))
    compiled = get_understander(_spec(built["llava"], share_prefix=True, compile_decode=True))
    assert compiled.compile_decode and "compiled decode step" in compiled.notes
    with pytest.raises(ValueError, match="compile_decode"):
        get_understander(_spec(built["llava"], compile_decode="fast"))
    with pytest.raises(ValueError, match="compile_decode needs the static-cache decoding"):
        get_understander(_spec(built["llava"], share_prefix=False, compile_decode=True))


@pytest.mark.slow
def test_compiled_decode_gives_the_same_answers(built, monkeypatch):
    """compile_decode through the user's path (from_pretrained, answer()): in fp32 on CPU the compiled
    decode step gives the eager step's answers, for shared and unshared chunks."""
    from torch._dynamo.utils import counters

    reqs, _ = sweep(3)
    reqs = reqs[:12]
    expected = get_understander(_spec(built["llava"], share_prefix=True, batch_size=5)).answer(reqs)
    registry.clear()
    und = get_understander(_spec(built["llava"], share_prefix=True, batch_size=5, compile_decode=True))
    counters.clear()
    paths = []
    for name in ("generate_static", "generate_shared"):
        real = getattr(prefix_sharing, name)
        def record(*a, _real=real, _name=name, **k):
            out = _real(*a, **k)
            paths.append((_name, k.get("compiled"), out is not None))  # True: this path decoded the chunk
            return out

        monkeypatch.setattr(prefix_sharing, name, record)
    assert und.answer(reqs) == expected
    assert counters["stats"]["unique_graphs"] >= 1  # the step really went through torch.compile
    assert {("generate_static", True, True), ("generate_shared", True, True)} <= set(paths), paths


@pytest.mark.parametrize("arch", list(ARCHS))
def test_static_decode_matches_generate_with_early_ends(built, arch):
    """The static-cache greedy loop gives generate's tokens: rows that end early are padded, the
    batch stops when all have ended, EOS is barred before min_new_tokens."""
    reqs, _ = sweep(2)
    und = get_understander(_spec(built[arch], share_prefix=False))
    feats = dict(und._prepare(reqs[:3]))
    width = feats["input_ids"].shape[1]
    base = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": und.processor.tokenizer.pad_token_id}
    with torch.inference_mode():
        free = und.model.generate(**feats, **base)[:, width:]
    end = int(free[0, 2])  # row 0 ends at its third token when this is its EOS
    for extra in ({"eos_token_id": end}, {"eos_token_id": [end, int(free[1, 1])], "min_new_tokens": 4}, {}):
        kwargs = {**base, **extra}
        with torch.inference_mode():
            expected = und.model.generate(**feats, **kwargs)[:, width:]
        got = prefix_sharing.generate_static(und.model, feats, kwargs)
        assert torch.equal(got, expected), (extra, got, expected)
    alone = {**base, "eos_token_id": end}
    with torch.inference_mode():
        one = {k: v[:1] for k, v in feats.items() if k != "pixel_values"}
        one["pixel_values"] = feats["pixel_values"][:1]
        expected = und.model.generate(**one, **alone)[:, width:]
    got = prefix_sharing.generate_static(und.model, one, alone)
    assert torch.equal(got, expected) and got.shape[1] == 3  # stopped when its only row ended


def test_greedy_plan_only_for_plain_greedy(built):
    und = get_understander(_spec(built["llava"]))
    plan = prefix_sharing.greedy_plan(und.model, {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0,
                                                  "eos_token_id": [2, 7], "min_new_tokens": 3})
    assert plan == prefix_sharing.GreedyPlan(max_new=5, min_new=3, eos=(2, 7), pad=0,
                                             suppress=tuple(und.model.generation_config.suppress_tokens or ()))
    for other in ({"do_sample": True}, {"num_beams": 2}, {"repetition_penalty": 1.2}, {"no_repeat_ngram_size": 2},
                  {"not_a_generation_field": 1}):
        assert prefix_sharing.greedy_plan(und.model, {"max_new_tokens": 5, **other}) is None, other


def test_length_buckets_cut_only_where_padding_costs_more_than_a_forward():
    lengths = [70, 750, 650, 700, 60]
    assert prefix_sharing.length_buckets(lengths, 192) == [[1, 3, 2], [0, 4]]
    assert prefix_sharing.length_buckets(lengths, 0) == [[1], [3], [2], [0], [4]]
    assert prefix_sharing.length_buckets(lengths, 10**6) == [[1, 3, 2, 0, 4]]
    assert prefix_sharing.length_buckets([0, 5, 0], 192) == [[1], [0, 2]]  # zero-length rows need no forward
    assert prefix_sharing.length_buckets([5], 192) == [[0]]
    assert torch.equal(prefix_sharing._collate([torch.tensor([1, 2]), torch.tensor([3])], 0),
                       torch.tensor([[1, 2], [0, 3]]))
