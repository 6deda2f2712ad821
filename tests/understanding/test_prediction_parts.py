"""Predictions are written part by part as batches finish, and the load reads them from those parts:
a rerun replaces every part, a bad row in a part is quarantined while the rest loads."""
from __future__ import annotations

import json
from pathlib import Path

import duckdb
import polars as pl
import pytest

from g2u_tasks.config import RunConfig
from g2u_tasks.store.thought_store import ThoughtStore
from g2u_tasks.thoughts.stage import materialise_thoughts
from g2u_tasks.understanding import stage as understanding_stage
from g2u_tasks.understanding.stage import run_understanding
from g2u_tasks.warehouse import run_predictions
from g2u_tasks.warehouse.stage import load_run
from tests.loopback_chat import ChatServer

REPO = Path(__file__).resolve().parents[2]
N_ITEMS, BATCH = 3, 4
N_TASKS = N_ITEMS * (1 + 2 * 2)  # baseline + 2 families x (concat, replace)


@pytest.fixture
def chat():
    # "B" when a request carries two images (concat), else "A": a verdict attached to the wrong row shows
    server = ChatServer(lambda body: "B" if json.dumps(body).count('"image_url"') > 2 else "A")
    yield server
    server.close()


def _cfg(root: Path, base_url: str) -> RunConfig:
    return RunConfig.model_validate({
        "store": str(root / "store"), "warehouse": str(root / "wh.duckdb"), "run_id": "r",
        "benchmarks": [{"name": "DemoShapes", "source": str(REPO / "data/demo/DemoShapes.tsv"), "limit": N_ITEMS}],
        "families": ["identity", "detail_enhancement"], "batch_size": BATCH,
        "understander": {"backend": "openai", "model": "m", "params": {"base_url": base_url}},
    })


def _warehouse(cfg: RunConfig, sql: str) -> list[tuple]:
    con = duckdb.connect(cfg.warehouse, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


# the load takes all parts at once, or two or three at a time (scoring concatenates two at a time)
@pytest.mark.parametrize("chunk_rows", [16384, 5])
def test_parts_of_batches_replaced_by_a_rerun_and_loaded_with_bad_rows_quarantined(tmp_path, chat, monkeypatch,
                                                                                   chunk_rows):
    monkeypatch.setenv("OPENAI_API_KEY", "loopback")
    monkeypatch.setattr(run_predictions, "CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(run_predictions, "CONCAT_PARTS", 256 if chunk_rows > 5 else 2)
    monkeypatch.setattr(understanding_stage, "PART_ROWS", 2 * BATCH)  # a part per two batches
    cfg = _cfg(tmp_path, chat.base_url)
    store = ThoughtStore(cfg.store)
    version = materialise_thoughts(cfg)["dataset_version"]
    # a killed earlier attempt left more parts than this run writes, and no run record
    store.write_run_part("r", "predictions", 99, pl.DataFrame({"item_id": ["stale"]}).to_arrow())

    assert run_understanding(cfg, version) == "r"
    parts = [f for f in store.iter_run_parts("r", "predictions")]
    assert [f.height for f in parts] == [2 * BATCH, N_TASKS - 2 * BATCH]  # two batches a part, the rest last
    assert len(store.run_parts("r", "predictions")) == len(parts)  # the stale part is gone
    first = parts[0].select("item_id", "condition", "mode").rows()[:BATCH]
    assert first == [("0", "baseline", "baseline"), ("0", "identity", "concat"), ("0", "identity", "replace"),
                     ("0", "detail_enhancement", "concat")]  # item-major, in task order
    assert len(chat.requests) == N_TASKS

    load_run(cfg, "r", version)
    assert _warehouse(cfg, "SELECT count(*), count(DISTINCT (item_id, condition, mode)) FROM predictions") == [
        (N_TASKS, N_TASKS)]
    assert _warehouse(cfg, "SELECT count(*) FROM predictions WHERE correct IS NULL") == [(0,)]  # scored
    assert _warehouse(cfg, "SELECT mode, extracted_answer, count(*) FROM predictions GROUP BY ALL ORDER BY ALL") == [
        ("baseline", "A", N_ITEMS), ("concat", "B", 2 * N_ITEMS), ("replace", "A", 2 * N_ITEMS)]

    # one row of the second part turns bad: it is quarantined, every other row still loads
    bad = parts[1].with_columns(pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("bogus"))
                                .otherwise(pl.col("mode")).alias("mode"))
    store.write_run_part("r", "predictions", 1, bad.to_arrow())
    load_run(cfg, "r", version)
    assert _warehouse(cfg, "SELECT count(*) FROM predictions") == [(N_TASKS - 1,)]
    assert _warehouse(cfg, "SELECT count(*) FROM predictions WHERE mode = 'bogus'") == [(0,)]
    reasons = _warehouse(cfg, "SELECT item_id, reason FROM quarantine WHERE stage = 'predictions'")
    assert parts[1]["condition"][3] != "baseline"
    assert reasons == [(parts[1]["item_id"][3], "mode: unknown mode (value: 'bogus')")]
    n = _warehouse(cfg, "SELECT sum(n) FROM metrics WHERE metric = 'accuracy'")
    assert n == [(N_TASKS - 1,)]  # metrics count exactly the rows that loaded

    # a rerun of the same run id answers again and replaces every part: no duplicates
    assert run_understanding(cfg, version) == "r"
    assert sum(f.height for f in store.iter_run_parts("r", "predictions")) == N_TASKS
    load_run(cfg, "r", version)
    assert _warehouse(cfg, "SELECT count(*) FROM predictions") == [(N_TASKS,)]
    assert _warehouse(cfg, "SELECT count(*) FROM quarantine WHERE stage = 'predictions'") == [(0,)]
