"""Materialisation as plain functions: keys, reuse, failure isolation, atomic commit."""
from pathlib import Path

import pytest

from g2u_tasks.benchmarks.loaders import load_benchmark
from g2u_tasks.config import ModelSpec, RunConfig
from g2u_tasks.thoughts.families import load_families
from g2u_tasks.thoughts.materialise import generate_batch, plan_thoughts, split_reused
from g2u_tasks.store.thought_store import ThoughtStore

REPO = Path(__file__).resolve().parents[2]


def _cfg(**kw):
    base = {"benchmarks": [{"name": "DemoShapes", "source": str(REPO / "data/demo/DemoShapes.tsv"), "limit": 3}],
            "understander": {"backend": "transformers", "model": "m"}, "families": ["identity", "detail_enhancement"]}
    base.update(kw)
    return RunConfig.model_validate(base)


def _plan(cfg):
    items = load_benchmark("DemoShapes", cfg.benchmarks[0].source, limit=3)
    return plan_thoughts(items, load_families(cfg.families), cfg)


def test_keys_change_with_what_changes_the_image():
    base = {p.spec.thought_id for p in _plan(_cfg())}
    assert len(base) == 6
    assert base.isdisjoint({p.spec.thought_id for p in _plan(_cfg(seeds=[1]))})
    assert base.isdisjoint({p.spec.thought_id for p in _plan(_cfg(generator={"backend": "reference", "params": {"x": 1}}))})
    assert base == {p.spec.thought_id for p in _plan(_cfg(modes=["baseline"]))}  # modes don't change thoughts


def test_commit_is_atomic_and_reuse_is_by_key(tmp_path, monkeypatch):
    store = ThoughtStore(f"file://{tmp_path}/store")
    planned = _plan(_cfg())
    rows = generate_batch(store, ModelSpec(backend="reference"), planned)
    assert rows.num_rows == 6 and set(rows.column("status").to_pylist()) == {"ok"}

    def crash(*a, **k):
        raise RuntimeError("killed before commit")

    import deltalake

    monkeypatch.setattr("g2u_tasks.store.thought_store.write_deltalake", crash, raising=False)
    monkeypatch.setattr(deltalake, "write_deltalake", crash)
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
