"""kill -9 at every stage of a run, then recovery: the warehouse equals an uninterrupted run's.

Each attempt is a real subprocess running the core's own stage sequences (materialise -> understand
-> validate & load, as the flows do, without Prefect) with a counting generator (the reference
operators, slowed, one counter line per generated thought) and a loopback understander. The test
kills it while generating, while committing the manifest, while answering and inside the warehouse
load's transaction; the last attempt runs to the end. Then: 0 duplicate keys, 0 thoughts generated
twice, 0 processes left, 0 temp files after vacuum, and every table equal to a clean run's."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from g2u_tasks.store.thought_store import ThoughtStore
from tests.loopback_chat import ChatServer

REPO = Path(__file__).resolve().parents[2]

WORKER = r"""
import os, sys, time
from g2u_tasks.backends.generators.base import register_generator
from g2u_tasks.backends.generators.reference import ReferenceGenerator
from g2u_tasks.config import RunConfig
from g2u_tasks.thoughts.stage import materialise_thoughts
from g2u_tasks.understanding.stage import run_understanding
from g2u_tasks.warehouse import views
from g2u_tasks.warehouse.stage import load_run
import g2u_tasks.store.thought_store as store_mod

PAUSE = os.environ.get("G2U_TEST_PAUSE_AT")  # commit | load: hold there (so the test can kill)


class CountingGenerator(ReferenceGenerator):
    def generate(self, batch):  # counted once it returns: a call killed midway made nothing
        time.sleep(0.4 * len(batch))
        out = super().generate(batch)
        with open(os.environ["G2U_TEST_COUNTER"], "a") as f:
            f.write("x\n" * len(batch))
        return out


def paused(point, fn):
    def held(*args, **kwargs):
        if PAUSE == point:
            open(os.environ["G2U_TEST_MARK"], "w").write(point)
            time.sleep(60)
        return fn(*args, **kwargs)
    return held


register_generator("counting", params=frozenset())(CountingGenerator)
store_mod.delta_parts.commit_parts = paused("commit", store_mod.delta_parts.commit_parts)
views.refresh_runs = paused("load", views.refresh_runs)
cfg = RunConfig.model_validate_json(open(sys.argv[1]).read())
m = materialise_thoughts(cfg)
run_id = run_understanding(cfg, m["dataset_version"], m)
load_run(cfg, run_id, m["dataset_version"])
print("DONE", run_id)
"""

TABLES = {  # key columns per table (what a duplicate would repeat)
    "items": ["benchmark", "item_id"],
    "thoughts": ["thought_id"],
    "predictions": ["run_id", "benchmark", "item_id", "condition", "mode", "seed"],
    "metrics": ["run_id", "benchmark", "condition", "mode", "metric"],
    "runs": ["run_id"],
}
COMPARED = {  # columns that must be equal to the clean run's (not timings or timestamps)
    "items": ["benchmark", "item_id", "question", "answer", "image_sha256"],
    "thoughts": ["thought_id", "benchmark", "item_id", "family", "blob_uri", "status", "psnr"],
    "predictions": ["benchmark", "item_id", "condition", "mode", "seed", "thought_id", "raw_output", "correct"],
    "metrics": ["benchmark", "condition", "mode", "metric", "value", "n"],
    "quarantine": ["stage", "benchmark", "item_id", "reason"],
}


def _config(root: Path, base_url: str) -> Path:
    cfg = {
        "store": str(root / "store"), "warehouse": str(root / "wh.duckdb"), "run_id": "r",
        "benchmarks": [{"name": n, "source": str(REPO / f"data/demo/{n}.tsv"), "limit": 3}
                       for n in ("DemoShapes", "DemoYesNo")],
        "families": ["detail_enhancement", "context_expansion", "identity"], "batch_size": 2,
        "generator": {"backend": "counting"},
        "understander": {"backend": "openai", "model": "m", "params": {"base_url": base_url}},
    }
    path = root / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def _start(config: Path, root: Path, pause: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "G2U_TEST_COUNTER": str(root / "counter"), "G2U_TEST_MARK": str(root / "mark"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("G2U_TEST_PAUSE_AT", None)
    if pause:
        env["G2U_TEST_PAUSE_AT"] = pause
    return subprocess.Popen([sys.executable, "-c", WORKER, str(config)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"worker ended before the kill {what}: {proc.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, f"never reached the kill point {what}"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def _finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "DONE" in out, err[-3000:]


def _count(root: Path) -> int:
    counter = root / "counter"
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def _tables(path: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        for table, keys in TABLES.items():
            dup = con.execute(f"SELECT count(*) FROM (SELECT {', '.join(keys)} FROM {table} "
                              f"GROUP BY ALL HAVING count(*) > 1)").fetchone()[0]
            assert dup == 0, f"{table}: {dup} duplicate key(s)"
        return {t: sorted(con.execute(f"SELECT {', '.join(cols)} FROM {t}").fetchall(), key=repr)
                for t, cols in COMPARED.items()}
    finally:
        con.close()


@pytest.mark.slow
def test_kill_9_at_every_stage_then_the_warehouse_equals_a_clean_run(tmp_path):
    chat = ChatServer(lambda body: (time.sleep(0.05), "A")[1])
    try:
        clean, killed = tmp_path / "clean", tmp_path / "killed"
        for root in (clean, killed):
            root.mkdir()
        _finish(_start(_config(clean, chat.base_url), clean))
        n_thoughts = _count(clean)  # generator calls of an uninterrupted run
        assert n_thoughts > 0

        config = _config(killed, chat.base_url)
        # 1. while generating: two batches are journaled, the next one is in its generator call
        pending = killed / "store" / "thoughts" / "pending"
        _kill_when(_start(config, killed), lambda: len(list(pending.glob("*.jsonl"))) >= 2, "while generating")
        assert 0 < _count(killed) < n_thoughts
        # 2. while committing the manifest (every thought generated, the commit not yet written)
        _kill_when(_start(config, killed, "commit"), lambda: (killed / "mark").exists(), "at the commit")
        (killed / "mark").unlink()
        assert ThoughtStore(str(killed / "store")).version() is None  # no partial version is visible
        # 3. while answering: the commit landed, the understander is being called
        answered = len(chat.requests)
        _kill_when(_start(config, killed), lambda: len(chat.requests) >= answered + 3, "while answering")
        assert ThoughtStore(str(killed / "store")).version() == 0
        # 4. inside the warehouse load's transaction
        _kill_when(_start(config, killed, "load"), lambda: (killed / "mark").exists(), "inside the load")
        # 5. recovery: run to the end
        _finish(_start(config, killed))
    finally:
        chat.close()

    assert _count(killed) == n_thoughts, "a thought was generated twice"
    assert _tables(killed / "wh.duckdb") == _tables(clean / "wh.duckdb")
    with duckdb.connect(str(killed / "wh.duckdb"), read_only=True) as con:  # the killed load's staging is gone
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'g2u_load_stage'").fetchone() == (0,)
    store = ThoughtStore(str(killed / "store"))
    store.remove_temp_files(older_than_s=0)
    assert store.temp_files() == []
    assert not list((killed / "store" / "thoughts").glob("pending/*"))  # the journal was committed
    alive = subprocess.run(["pgrep", "-f", str(killed / "config.json")], capture_output=True, text=True)
    assert alive.stdout.strip() == "", "a killed worker left a process behind"
