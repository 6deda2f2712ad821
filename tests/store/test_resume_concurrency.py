"""Resume after SIGKILL and concurrent writers, with real subprocesses and plain functions (no Prefect).

Each worker materialises a config through the stage's own sequence (thoughts.stage.generate_missing) with a `counting`
generator: the reference operators, optionally slowed down, appending one line per generated
thought to a counter file (so the test can tell what was regenerated). Racing writers start
together and hold their first commit until both reached it, so a commit conflict always happens."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from g2u_tasks.store.thought_store import ThoughtStore
from tests.moto_s3 import moto_s3

REPO = Path(__file__).resolve().parents[2]
FAMILIES = ["reconstruction", "detail_enhancement", "context_expansion", "structural_visualisation"]  # all call it

WORKER = r"""
import json, os, sys, time
from g2u_tasks.benchmarks.loaders import load_benchmark
from g2u_tasks.config import RunConfig
from g2u_tasks.thoughts.families import load_families
from g2u_tasks.backends.generators.base import register_generator
from g2u_tasks.backends.generators.reference import ReferenceGenerator
from g2u_tasks.thoughts.materialise import plan_thoughts
from g2u_tasks.thoughts.stage import generate_missing
from g2u_tasks.store.thought_store import ThoughtStore
import g2u_tasks.store.thought_store as store_mod


class CountingGenerator(ReferenceGenerator):
    def generate(self, batch):
        with open(os.environ["G2U_TEST_COUNTER"], "a") as f:
            f.write("x\n" * len(batch))
        time.sleep(float(os.environ.get("G2U_TEST_SLOW_S", "0")) * len(batch))
        return super().generate(batch)


def at_commit_barrier(fn):
    # hold the first commit until both writers reached theirs: both build on the same version
    def gated(*args, **kwargs):
        barrier = os.environ.get("G2U_TEST_BARRIER")
        if barrier:
            open(os.path.join(barrier, f"commit-{os.getpid()}"), "w").close()
            deadline = time.time() + 10
            while sum(n.startswith("commit-") for n in os.listdir(barrier)) < 2 and time.time() < deadline:
                time.sleep(0.005)
        return fn(*args, **kwargs)
    return gated


register_generator("counting")(CountingGenerator)
store_mod.delta_parts.commit_parts = at_commit_barrier(store_mod.delta_parts.commit_parts)
cfg = RunConfig.model_validate_json(sys.argv[1])
items = [it for b in cfg.benchmarks for it in load_benchmark(b.name, b.source, limit=b.limit)]
planned = plan_thoughts(items, load_families(cfg.families), cfg)
store = ThoughtStore(cfg.store, cfg.storage_options or None)
barrier = os.environ.get("G2U_TEST_BARRIER")
if barrier:  # start generating together with the other writer
    open(os.path.join(barrier, f"ready-{os.getpid()}"), "w").close()
    while not os.path.exists(os.path.join(barrier, "go")):
        time.sleep(0.005)
print(json.dumps(generate_missing(store, cfg.generator, planned, cfg.batch_size)))
"""


def _config(store: str, families=FAMILIES, seeds=(0,), limit=4) -> str:
    return json.dumps({
        "store": store,
        "benchmarks": [{"name": n, "source": str(REPO / f"data/demo/{n}.tsv"), "limit": limit}
                       for n in ("DemoShapes", "DemoYesNo")],
        "families": list(families), "seeds": list(seeds), "batch_size": 2,
        "generator": {"backend": "counting"}, "understander": {"backend": "transformers", "model": "unused"},
    })


def _start(config: str, counter: Path, **env) -> subprocess.Popen:
    full_env = {**os.environ, "G2U_TEST_COUNTER": str(counter),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), **env}
    return subprocess.Popen([sys.executable, "-c", WORKER, config], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    result["commit_retries"] = err.count("lost a race")  # logged by ThoughtStore.commit
    return result


def _count(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def _journaled(pending: Path) -> list[str]:
    """Thought ids in the resume journal (one JSON row a line, one file per batch)."""
    return sorted(json.loads(line)["thought_id"] for f in pending.glob("*.jsonl") for line in f.read_text().splitlines())


def _ok_rows_per_key(store: ThoughtStore) -> dict[str, int]:
    df = store.manifest().filter(pl.col("status") == "ok").group_by("thought_id").len()
    return dict(zip(df["thought_id"].to_list(), df["len"].to_list()))


def test_sigkill_midway_then_resume_without_regenerating(tmp_path):
    root = tmp_path / "store"
    config = _config(f"file://{root}")
    n = 2 * 4 * len(FAMILIES)  # items x families
    proc = _start(config, tmp_path / "calls-1", G2U_TEST_SLOW_S="0.08")
    pending = root / "thoughts/pending"
    deadline = time.monotonic() + 60
    while len(_journaled(pending)) < 6:
        assert proc.poll() is None and time.monotonic() < deadline, "worker ended before the kill"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    store = ThoughtStore(f"file://{root}")
    assert store.version() is None and store.manifest().height == 0  # no visible partial version
    journaled = _journaled(pending)
    blobs = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (root / "thoughts/blobs").rglob("*.png")}
    assert 6 <= len(journaled) < n and len(blobs) >= len(journaled)

    result = _finish(_start(config, tmp_path / "calls-2"))
    assert result["recovered"] == len(journaled) and result["generated"] == n - len(journaled)
    assert _count(tmp_path / "calls-2") == n - len(journaled)  # journaled thoughts were not regenerated
    assert result["dataset_version"] == 0 and store.version() == 0
    df = store.manifest()
    assert df.height == n and df["thought_id"].n_unique() == n and set(df["status"]) == {"ok"}
    assert set(journaled) <= set(df["thought_id"])
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in blobs} == blobs  # never rewritten
    assert not list(pending.iterdir())  # journal cleared after the commit

    again = _finish(_start(config, tmp_path / "calls-3"))
    assert again["reused"] == n and again["generated"] == 0 and _count(tmp_path / "calls-3") == 0
    assert store.version() == 0


def _race(configs: list[str], tmp_path: Path, tag: str, env: dict | None = None) -> list[dict]:
    """Start writers together (barrier after imports) and wait for all; each must exit 0."""
    barrier = tmp_path / f"barrier-{tag}"
    barrier.mkdir()
    procs = [_start(c, tmp_path / f"calls-{tag}-{i}", G2U_TEST_BARRIER=str(barrier), **(env or {}))
             for i, c in enumerate(configs)]
    deadline = time.monotonic() + 60
    while len(list(barrier.glob("ready-*"))) < len(procs):
        assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, "a writer died early"
        time.sleep(0.01)
    (barrier / "go").touch()
    return [_finish(p) for p in procs]


def _expected_keys(results: list[dict], store: ThoughtStore) -> None:
    per_key = _ok_rows_per_key(store)
    assert set(per_key.values()) == {1}, "a key has more than one ok row"
    assert store.manifest().filter(pl.col("status") != "ok").height == 0
    for r in results:
        assert r["failed"] == 0 and r["dataset_version"] is not None
    # both writers held their first commit until the other reached it: one lost and retried
    assert sum(r["commit_retries"] for r in results) >= 1, "no commit conflict happened"


def test_concurrent_writers_both_commit_one_ok_row_per_key(tmp_path):
    store_uri = f"file://{tmp_path / 'store'}"
    # overlapping plans: detail_enhancement and context_expansion are in both
    a = _config(store_uri, FAMILIES[:3])
    b = _config(store_uri, FAMILIES[1:])
    store = ThoughtStore(store_uri)

    first = _race([a, b], tmp_path, "create")  # both race to create the table
    _expected_keys(first, store)
    assert len(_ok_rows_per_key(store)) == 2 * 4 * len(FAMILIES)
    assert first[0]["planned"] == first[1]["planned"] == 2 * 4 * 3

    v = store.version()
    second = _race([_config(store_uri, FAMILIES[:3], seeds=(1,)), _config(store_uri, FAMILIES[1:], seeds=(1,))],
                   tmp_path, "merge")  # both MERGE into an existing table
    _expected_keys(second, store)
    assert len(_ok_rows_per_key(store)) == 2 * 2 * 4 * len(FAMILIES) and store.version() > v


def test_concurrent_writers_on_s3(tmp_path, monkeypatch):
    with moto_s3(monkeypatch):  # the workers inherit its credentials and endpoint
        store = ThoughtStore("s3://g2u-race/conc")
        store.fs.mkdir("g2u-race")
        results = _race([_config(store.root, FAMILIES[:3], limit=2), _config(store.root, FAMILIES[1:], limit=2)],
                        tmp_path, "s3")
        _expected_keys(results, store)
        assert len(_ok_rows_per_key(store)) == 2 * 2 * len(FAMILIES)
