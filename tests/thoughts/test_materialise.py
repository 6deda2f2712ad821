"""Materialisation as plain functions: keys, reuse, failure isolation, atomic commit, costs, controls."""
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from g2u_tasks.backends import registry
from g2u_tasks.benchmarks.loaders import load_benchmark
from g2u_tasks.config import ModelSpec, RunConfig
from g2u_tasks.images import decode
from g2u_tasks.store.thought_store import ThoughtStore
from g2u_tasks.thoughts.families import load_families
from g2u_tasks.thoughts.materialise import generate_batch, plan_thoughts, split_reused

REPO = Path(__file__).resolve().parents[2]


def _cfg(**kw):
    base = {"benchmarks": [{"name": "DemoShapes", "source": str(REPO / "data/demo/DemoShapes.tsv"), "limit": 3}],
            "understander": {"backend": "transformers", "model": "m"}, "families": ["identity", "detail_enhancement"]}
    base.update(kw)
    return RunConfig.model_validate(base)


def _plan(cfg, limit=3):
    items = load_benchmark("DemoShapes", cfg.benchmarks[0].source, limit=limit)
    return plan_thoughts(items, load_families(cfg.families), cfg)


def _batches(seq, size):
    return [seq[i : i + size] for i in range(0, len(seq), size)]


def _pixels(img) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


def _ids(cfg, family=None) -> set[str]:
    return {p.spec.thought_id for p in _plan(cfg) if family in (None, p.spec.family)}


def test_keys_change_with_what_changes_the_image():
    base = _ids(_cfg())
    assert len(base) == 6
    assert base.isdisjoint(_ids(_cfg(seeds=[1])))
    def editor(steps: int) -> RunConfig:
        return _cfg(generator={"backend": "diffusers", "model": "e", "params": {"num_inference_steps": steps}})

    assert _ids(_cfg(), "detail_enhancement").isdisjoint(_ids(editor(2), "detail_enhancement"))
    assert _ids(editor(2), "detail_enhancement").isdisjoint(_ids(editor(4), "detail_enhancement"))  # params count
    assert base == _ids(_cfg(modes=["baseline"]))  # modes don't change thoughts


def test_identity_is_keyed_without_the_generator_and_never_degraded():
    degrade = {"kind": "blur", "strengths": [0, 2]}
    editor = {"backend": "diffusers", "model": "some/editor", "params": {"degrade": degrade}}
    planned = _plan(_cfg(generator=editor))
    identity = [p for p in planned if p.spec.family == "identity"]
    assert len(identity) == 3 and len(planned) == 3 + 3 * 2  # one identity thought per item, two degrades else
    assert {(p.spec.generator, p.spec.generator_model, str(p.spec.generator_params)) for p in identity} == {
        ("identity", None, "{}")}
    assert {p.spec.thought_id for p in identity} == _ids(_cfg(), "identity")  # the same thought for any generator


def test_commit_is_atomic_and_reuse_is_by_key(tmp_path, monkeypatch):
    store = ThoughtStore(f"file://{tmp_path}/store")
    planned = _plan(_cfg())
    rows = generate_batch(store, ModelSpec(backend="reference"), planned)
    assert rows.num_rows == 6 and set(rows.column("status").to_pylist()) == {"ok"}

    def crash(*a, **k):
        raise RuntimeError("killed before commit")

    monkeypatch.setattr("g2u_tasks.store.delta_parts.commit_parts", crash)
    with pytest.raises(RuntimeError):
        store.commit(rows)
    assert store.version() is None and store.manifest().is_empty()  # nothing visible
    monkeypatch.undo()
    assert store.commit(rows) == 0
    todo, reused = split_reused(store, planned)
    assert todo == [] and reused == 6


def test_one_bad_item_fails_alone(tmp_path):
    store = ThoughtStore(f"file://{tmp_path}/store")
    planned = _plan(_cfg())
    broken = planned[0].item.__class__(**{**{f: getattr(planned[0].item, f) for f in planned[0].item.__slots__},
                                          "images": (b"garbage",)})
    planned[0] = planned[0].__class__(broken, planned[0].family, planned[0].spec)
    rows = generate_batch(store, ModelSpec(backend="reference"), planned).to_pylist()
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and "DemoShapes/" in failed[0]["error"] and "unreadable" in failed[0]["error"]
    assert sum(r["status"] == "ok" for r in rows) == 5


def test_materialise_through_a_diffusers_editor(tmp_path):
    """The store + key machinery drives a real (tiny) InstructPix2Pix pipeline loaded from disk."""
    from tests.diffusers_dummies import build_instruct_pix2pix

    path = build_instruct_pix2pix(tmp_path / "ip2p")
    gen = {"backend": "diffusers", "model": str(path), "params": {"num_inference_steps": 2, "resolution": 32}}
    cfg = _cfg(generator=gen, families=["detail_enhancement"])
    store = ThoughtStore(f"file://{tmp_path}/store")
    planned = _plan(cfg)
    rows = generate_batch(store, ModelSpec.model_validate(gen), planned).to_pylist()
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert all(r["generator"] == "diffusers" and r["psnr"] < 100 and r["width"] == r["height"] for r in rows)
    assert store.commit(generate_batch(store, ModelSpec.model_validate(gen), planned)) == 0
    again = generate_batch(store, ModelSpec.model_validate(gen), planned).to_pylist()
    assert [r["blob_sha256"] for r in again] == [r["blob_sha256"] for r in rows]  # fixed seed: same bytes


# ---- honest costs ------------------------------------------------------------------------------

@registry.register("generator", "test-sleepy", params={"per_item_s"})
class SleepyGenerator:
    """Takes `per_item_s` per request (sleeping, so threads could overlap if nothing serialised
    them) and records how long each of its calls took."""

    def __init__(self, spec: ModelSpec):
        self.name, self.per_item_s, self.calls = "test-sleepy", spec.params["per_item_s"], []

    def generate(self, batch):
        t0 = time.perf_counter()
        time.sleep(self.per_item_s * len(batch))
        out = [r.image.copy() for r in batch]
        self.calls.append(time.perf_counter() - t0)
        return out


def _costs(store, spec, batches, threads: int) -> tuple[list[float], float]:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        tables = list(pool.map(lambda b: generate_batch(store, spec, b), batches))
    rows = [r for t in tables for r in t.to_pylist()]
    assert [r["status"] for r in rows] == ["ok"] * len(rows)
    return [r["gen_seconds"] for r in rows], time.perf_counter() - t0


def test_concurrent_batches_do_not_inflate_generation_cost(tmp_path, fresh_models):
    per_item = 0.02
    gen = {"backend": "test-sleepy", "params": {"per_item_s": per_item}}
    cfg = _cfg(generator=gen, families=["detail_enhancement", "context_expansion"])
    spec = ModelSpec.model_validate(gen)
    batches = _batches(_plan(cfg, limit=8), 2)  # 8 batches of 2
    backend = registry.get_generator(spec).backend

    sequential, _ = _costs(ThoughtStore(f"file://{tmp_path}/a"), spec, batches, threads=1)
    backend.calls.clear()
    concurrent, wall = _costs(ThoughtStore(f"file://{tmp_path}/b"), spec, batches, threads=4)

    assert len(backend.calls) == len(batches) and all(c >= per_item for c in concurrent)
    # each thought carries its share of one call: the shares add up to the calls' own time, ...
    assert sum(concurrent) == pytest.approx(sum(backend.calls), rel=0.05, abs=0.002 * len(batches))
    # ... which one serialised model cannot spend faster than the wall clock, ...
    assert sum(concurrent) <= wall
    # ... and waiting for other threads' batches is not part of it
    assert np.mean(concurrent) <= 1.5 * np.mean(sequential)


# ---- controls with a real editor ---------------------------------------------------------------

def _editor(tmp_path) -> dict:
    from tests.diffusers_dummies import build_instruct_pix2pix

    path = build_instruct_pix2pix(tmp_path / "ip2p")
    return {"backend": "diffusers", "model": str(path),
            "params": {"num_inference_steps": 2, "resolution": 32, "batch_size": 2, "device": "cpu"}}


def test_identity_is_the_source_and_never_reaches_the_editor(tmp_path, fresh_models, monkeypatch):
    gen = _editor(tmp_path)
    spec = ModelSpec.model_validate(gen)
    editor = registry.get_generator(spec).backend
    asked, real = [], editor.generate
    monkeypatch.setattr(editor, "generate", lambda batch: asked.extend(batch) or real(batch))

    planned = _plan(_cfg(generator=gen, families=["identity", "reconstruction"]))
    rows = generate_batch(ThoughtStore(f"file://{tmp_path}/store"), spec, planned).to_pylist()
    store = ThoughtStore(f"file://{tmp_path}/store")
    assert [r["status"] for r in rows] == ["ok"] * 6
    sources = {p.spec.thought_id: decode(p.item.images[-1]) for p in planned}
    by_family = {f: [r for r in rows if r["family"] == f] for f in ("identity", "reconstruction")}

    for r in by_family["identity"]:  # the source, pixel for pixel, at no generation cost
        assert np.array_equal(_pixels(decode(store.read_blob(r["blob_uri"]))), _pixels(sources[r["thought_id"]]))
        assert r["generator"] == "identity" and r["gen_seconds"] == 0.0
    assert len(asked) == 3 and all(req.family.name == "reconstruction" for req in asked)  # identity never asked
    for r in by_family["reconstruction"]:  # the editor's own attempt at the image
        out = decode(store.read_blob(r["blob_uri"]))
        assert r["generator"] == "diffusers" and r["gen_seconds"] > 0
        assert out.size != sources[r["thought_id"]].size or not np.array_equal(
            _pixels(out), _pixels(sources[r["thought_id"]]))


@pytest.mark.slow
def test_flow_with_a_real_editor_on_the_default_executor_matches_a_sequential_run(
        tmp_path, prefect_harness, fresh_models):
    from flows.pipeline import materialise_thoughts

    gen = _editor(tmp_path)
    config = {**_cfg(generator=gen, families=["detail_enhancement", "reconstruction", "identity"]).model_dump(),
              "store": f"file://{tmp_path}/flow", "batch_size": 2}
    config["benchmarks"][0]["limit"] = 6  # 18 thoughts: 9 batches, 12 thoughts through the editor
    out = materialise_thoughts(config)
    assert out["failed"] == 0 and out["generated"] == 18

    planned = _plan(RunConfig.model_validate(config), limit=6)
    alone = ThoughtStore(f"file://{tmp_path}/alone")
    rows = [r for b in _batches(planned, 2) for r in generate_batch(alone, ModelSpec.model_validate(gen), b).to_pylist()]
    flow_rows = ThoughtStore(config["store"]).manifest().select("thought_id", "blob_sha256", "status").rows()
    assert sorted(flow_rows) == sorted((r["thought_id"], r["blob_sha256"], r["status"]) for r in rows)
