import polars as pl
import pyarrow as pa
import pytest

from g2u_tasks.analysis import reports

from g2u_tasks.warehouse import database as warehouse
from g2u_tasks.scoring.metrics import compute_metrics
from g2u_tasks.records import PREDICTIONS_SCHEMA
from g2u_tasks.warehouse.validation import validate


def _preds(run_id="r1", rows=None):
    rows = rows or [
        ("B", "1", "baseline", "baseline", None, "A", True),
        ("B", "2", "baseline", "baseline", None, "Z", False),
        ("B", "1", "identity", "concat", "t1", "A", True),
        ("B", "2", "identity", "concat", "t2", "B", True),
    ]
    return pa.Table.from_pylist([
        {"run_id": run_id, "benchmark": b, "item_id": i, "condition": c, "mode": m, "seed": None if c == "baseline" else 0,
         "thought_id": t, "understander": "u", "prompt": "p", "raw_output": x, "extracted_answer": x, "answer": "A",
         "correct": ok}
        for b, i, c, m, t, x, ok in rows
    ], schema=PREDICTIONS_SCHEMA)


def test_metrics_accuracy_and_unparsed_rate():
    m = pl.from_arrow(compute_metrics(pl.from_arrow(_preds())))
    get = lambda c, metric: m.filter((pl.col("condition") == c) & (pl.col("metric") == metric))["value"][0]
    assert get("baseline", "accuracy") == 0.5 and get("baseline", "unparsed_rate") == 0.5
    assert get("identity", "accuracy") == 1.0 and get("identity", "unparsed_rate") == 0.0
    assert set(m["n"]) == {2}


def test_validation_splits_bad_rows_with_reasons():
    frame = pl.from_arrow(_preds())
    frame = frame.with_columns(
        pl.when(pl.col("item_id") == "2").then(pl.lit("sideways")).otherwise(pl.col("mode")).alias("mode"),
        pl.when(pl.col("condition") == "identity").then(None).otherwise(pl.col("thought_id")).alias("thought_id"),
    )
    good, bad = validate("predictions", frame)
    assert good.height == 1 and bad.height == 3
    reasons = dict(zip(bad["item_id"] + "/" + bad["condition"], bad["reasons"]))
    assert "mode: unknown mode (value: 'sideways')" in reasons["2/baseline"]
    assert "thought_id: thought mode without a thought" in reasons["1/identity"]
    assert "unknown mode" in reasons["2/identity"] and "without a thought" in reasons["2/identity"]


def test_validation_missing_column_is_a_table_error():
    with pytest.raises(ValueError, match="table predictions: expectation"):
        validate("predictions", pl.DataFrame({"run_id": ["r"]}))


def test_load_is_idempotent_and_replaces_a_run(tmp_path):
    con = warehouse.connect(tmp_path / "w.duckdb")
    metrics = compute_metrics(pl.from_arrow(_preds()))
    for _ in range(2):
        warehouse.load(con, {"predictions": _preds(), "metrics": metrics})
    assert con.execute("SELECT count(*) FROM predictions").fetchall() == [(4,)]
    warehouse.load(con, {"predictions": _preds(rows=[("B", "1", "baseline", "baseline", None, "A", True)])})
    assert con.execute("SELECT count(*) FROM predictions").fetchall() == [(1,)]  # the run was replaced whole
    warehouse.load(con, {"predictions": _preds(run_id="r2")})
    assert con.execute("SELECT count(DISTINCT run_id) FROM predictions").fetchall() == [(2,)]
    con.close()


def test_failed_load_rolls_back(tmp_path):
    con = warehouse.connect(tmp_path / "w.duckdb")
    warehouse.load(con, {"predictions": _preds()})
    with pytest.raises(Exception):
        warehouse.load(con, {"predictions": _preds(run_id="r9"), "metrics": pa.table({"nope": [1]})})
    assert con.execute("SELECT DISTINCT run_id FROM predictions").fetchall() == [("r1",)]
    con.close()


def test_gain_report_computes_gain_over_baseline(tmp_path):
    path = tmp_path / "w.duckdb"
    con = warehouse.connect(path)
    warehouse.load(con, {"metrics": compute_metrics(pl.from_arrow(_preds()))})
    con.close()
    con = warehouse.connect(path, read_only=True)
    frame = reports.run_report(con, "gain_over_baseline", run_id="r1")
    con.close()
    row = frame.filter(pl.col("condition") == "identity").row(0, named=True)
    assert row["accuracy_pct"] == 100.0 and row["gain_pp"] == 50.0
    assert "| benchmark |" in reports.render(frame.drop("run_id"), "md")
    with pytest.raises(FileNotFoundError, match="run `g2u run` first"):
        warehouse.connect(tmp_path / "missing.duckdb", read_only=True)


def test_older_warehouse_gains_new_columns(tmp_path):
    import duckdb

    path = tmp_path / "old.duckdb"
    old = duckdb.connect(str(path))
    old.execute("CREATE TABLE metrics (run_id VARCHAR, benchmark VARCHAR, condition VARCHAR, mode VARCHAR, "
                "metric VARCHAR, value DOUBLE, n BIGINT)")
    old.execute("INSERT INTO metrics VALUES ('r0', 'B', 'baseline', 'baseline', 'accuracy', 0.5, 2)")
    old.close()
    con = warehouse.connect(path)
    warehouse.load(con, {"metrics": compute_metrics(pl.from_arrow(_preds()))})
    rows = con.execute("SELECT run_id, status FROM metrics ORDER BY run_id, metric LIMIT 2").fetchall()
    con.close()
    assert rows[0] == ("r0", None) and rows[1] == ("r1", "ok")
