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


def test_metrics_suite_keeps_a_zero_count_but_not_an_empty_rate():
    """A count (unit sum) over zero items is a real value; a rate over zero predictions is not."""
    from g2u_tasks.records import METRICS_SCHEMA

    rows = [{"run_id": "r", "benchmark": "B", "condition": "baseline", "mode": "baseline", "metric": metric,
             "value": value, "n": 0, "unit": unit, "status": "ok", "note": None}
            for metric, value, unit in (("judge_fallback", 0.0, "sum"), ("accuracy", 0.5, "fraction"))]
    good, bad = validate("metrics", pl.from_arrow(pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)))
    assert good["metric"].to_list() == ["judge_fallback"]
    assert bad["metric"].to_list() == ["accuracy"] and "over no predictions" in bad["reasons"][0]


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


def _staged_tables(con):
    return con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = ?",
                       [warehouse.STAGE_SCHEMA]).fetchall()


def test_parts_are_staged_then_moved_in_by_one_transaction(tmp_path):
    """A load whose parts stop midway (a killed or failing load) changes no table and leaves at most its
    staging tables, which the next load drops; a finished load replaces the run's parts and keyed rows."""
    con = warehouse.connect(tmp_path / "w.duckdb")
    warehouse.load(con, {}, parts={"predictions": [_preds()]})
    before = con.execute("SELECT * FROM predictions ORDER BY ALL").fetchall()

    def broken():
        yield _preds(run_id="r2")
        raise OSError("part file gone")

    with pytest.raises(OSError, match="part file gone"):
        warehouse.load(con, {}, parts={"predictions": broken()})
    assert con.execute("SELECT * FROM predictions ORDER BY ALL").fetchall() == before
    assert _staged_tables(con) == [("predictions",)]  # its leftover, staged and committed
    written = warehouse.load(con, {}, before=[("DELETE FROM predictions WHERE run_id = ?", ["r1"])],
                             parts={"predictions": [_preds().slice(0, 2), _preds().slice(2)]})
    assert written == {"predictions": 4} and _staged_tables(con) == []
    assert con.execute("SELECT * FROM predictions ORDER BY ALL").fetchall() == before
    con.close()


def test_a_move_in_over_the_memory_limit_runs_again_without_it(tmp_path, monkeypatch, caplog):
    """Deriving a large run's rows may need more than LOAD_MEMORY_LIMIT: DuckDB's real out-of-memory
    error rolls the move-in back and it runs again, unlimited, from the staged parts; the result is the
    same as an unlimited load's, and the connection's limit is its default again."""
    from g2u_tasks.records import RUNS_SCHEMA

    rows = [("B", str(i), c, m, None if c == "baseline" else f"t{i}", "A", i % 3 == 0)
            for i in range(20_000) for c, m in (("baseline", "baseline"), ("identity", "concat"))]
    run = pa.Table.from_pylist([{"run_id": "r1", "status": "completed"}], schema=RUNS_SCHEMA)
    derived = {}
    for limit in ("8MB", warehouse.LOAD_MEMORY_LIMIT):
        monkeypatch.setattr(warehouse, "LOAD_MEMORY_LIMIT", limit)
        con = warehouse.connect(tmp_path / f"{limit}.duckdb")
        default = con.execute("SELECT current_setting('memory_limit')").fetchone()
        caplog.clear()
        with caplog.at_level("INFO", logger=warehouse.__name__):
            written = warehouse.load(con, {"runs": run}, parts={"predictions": [_preds(rows=rows)]})
        assert written == {"predictions": 40_000, "runs": 1}
        assert ("needs more than 8MB" in caplog.text) == (limit == "8MB")
        assert con.execute("SELECT current_setting('memory_limit')").fetchone() == default
        assert con.execute("SELECT current_setting('temp_directory')").fetchone() == (f"{tmp_path / limit}.duckdb.tmp",)
        assert _staged_tables(con) == []
        derived[limit] = con.execute("SELECT * FROM derived_paired_items ORDER BY ALL").fetchall()
        con.close()
    assert len(derived["8MB"]) == 20_000 and derived["8MB"] == derived[warehouse.LOAD_MEMORY_LIMIT]


def test_gain_report_computes_gain_over_baseline(tmp_path):
    path = tmp_path / "w.duckdb"
    con = warehouse.connect(path)
    warehouse.load(con, {"predictions": _preds(), "metrics": compute_metrics(pl.from_arrow(_preds()))})
    con.close()
    con = warehouse.connect(path, read_only=True)
    frame = reports.run_report(con, "gain_over_baseline", run_id="r1")
    con.close()
    row = frame.filter(pl.col("condition") == "identity").row(0, named=True)
    assert row["accuracy_pct"] == 100.0 and row["gain_pp"] == 50.0
    assert row["n"] == row["n_paired"] == 2 and row["n_missing"] == 0
    assert "| benchmark |" in reports.render(frame.drop("run_id"), "md")
    with pytest.raises(FileNotFoundError, match="run `g2u run` first"):
        warehouse.connect(tmp_path / "missing.duckdb", read_only=True)


def test_gain_report_reads_the_run_it_is_asked_for(tmp_path):
    con = warehouse.connect(tmp_path / "w.duckdb")
    warehouse.load(con, {"predictions": pa.concat_tables([_preds("r1"), _preds("r2", rows=[
        ("B", "1", "baseline", "baseline", None, "A", True), ("B", "1", "identity", "concat", "t1", "Z", False)])])})
    r1 = reports.run_report(con, "gain_over_baseline", run_id="r1")
    r2 = reports.run_report(con, "gain_over_baseline", run_id="r2")
    con.close()
    assert set(r1["run_id"]) == {"r1"} and set(r2["run_id"]) == {"r2"}
    assert r2.filter(pl.col("condition") == "identity")["gain_pp"].to_list() == [-100.0]


def _old_warehouse(path) -> None:
    """A warehouse from before the views, plan columns, unscored_reason and the quarantine table."""
    import duckdb

    old = duckdb.connect(str(path))
    old.execute("CREATE TABLE predictions (run_id VARCHAR, benchmark VARCHAR, item_id VARCHAR, condition VARCHAR, "
                "mode VARCHAR, seed BIGINT, thought_id VARCHAR, understander VARCHAR, prompt VARCHAR, "
                "raw_output VARCHAR, extracted_answer VARCHAR, answer VARCHAR, correct BOOLEAN)")
    old.execute("INSERT INTO predictions VALUES "
                "('r0', 'B', '1', 'baseline', 'baseline', NULL, NULL, 'u', 'p', 'A', 'A', 'A', true), "
                "('r0', 'B', '2', 'baseline', 'baseline', NULL, NULL, 'u', 'p', 'Z', 'Z', 'A', false), "
                "('r0', 'B', '2', 'identity', 'concat', 0, 't2', 'u', 'p', 'A', 'A', 'A', true)")
    old.execute("CREATE TABLE thoughts (thought_id VARCHAR, benchmark VARCHAR, item_id VARCHAR, family VARCHAR, "
                "prompt_source VARCHAR, generator VARCHAR, generator_params VARCHAR, seed BIGINT, psnr DOUBLE, "
                "ssim DOUBLE, gen_seconds DOUBLE, status VARCHAR)")
    old.execute("INSERT INTO thoughts VALUES ('t2', 'B', '2', 'identity', 'template', 'reference', '{}', 0, 100, 1, "
                "0, 'ok')")
    old.execute("CREATE TABLE metrics (run_id VARCHAR, benchmark VARCHAR, condition VARCHAR, mode VARCHAR, "
                "metric VARCHAR, value DOUBLE, n BIGINT)")
    old.execute("CREATE TABLE runs (run_id VARCHAR, finished_at TIMESTAMPTZ, dataset_version BIGINT, "
                "generator VARCHAR, understander VARCHAR, notes VARCHAR, n_items BIGINT)")
    old.execute("INSERT INTO runs VALUES ('r0', now(), 1, 'reference', 'u', NULL, 2)")
    old.execute("CREATE TABLE items (benchmark VARCHAR, item_id VARCHAR, category VARCHAR)")
    old.close()


def test_reports_read_an_older_warehouse_read_only(tmp_path):
    import duckdb

    path = tmp_path / "old.duckdb"
    _old_warehouse(path)
    con = warehouse.connect(path, read_only=True)
    try:
        for name in reports.list_reports():
            reports.run_report(con, name)  # every report runs on the old shape
        row = reports.run_report(con, "gain_over_baseline").filter(pl.col("condition") == "identity").row(0, named=True)
        assert (row["n"], row["accuracy_pct"], row["gain_pp"], row["n_missing"]) == (1, 100.0, 100.0, 0)
        gain = reports.run_report(con, "gain_ci").filter(pl.col("condition") == "identity")
        assert gain["gain_pp"].to_list() == [100.0]
    finally:
        con.close()
    raw = duckdb.connect(str(path), read_only=True)
    stored = raw.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    row = reports.run_report(raw, "flips").row(0, named=True)  # a plain connection gets TEMP views on demand
    raw.close()
    assert stored == [] and (row["fixed"], row["n_items"]) == (1, 1)


def test_read_write_connection_stores_the_shared_views(tmp_path):
    import duckdb

    from g2u_tasks.warehouse import views

    path = tmp_path / "w.duckdb"
    _old_warehouse(path)
    warehouse.connect(path).close()  # migrates the tables, stores the views
    raw = duckdb.connect(str(path), read_only=True)
    stored = {r[0] for r in raw.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    paired = raw.execute("SELECT item_id, score, baseline_score FROM paired_items").fetchall()
    raw.close()
    assert set(views.MODELS) | {f"stg_{t}" for t in ("predictions", "thoughts", "quarantine")} <= stored
    assert paired == [("2", 1.0, 0.0)]


def test_every_model_and_report_is_documented_and_run_scoped():
    from g2u_tasks.warehouse import views

    files = {p.stem for p in views.MODELS_DIR.glob("*.sql")}
    assert files == set(views.MODELS)
    for path in [*views.MODELS_DIR.glob("*.sql"), *views.SQL_DIR.glob("*.sql")]:
        assert path.read_text().startswith("-- "), path  # a one-line purpose
    for path in views.SQL_DIR.glob("*.sql"):
        assert "$run_id" in path.read_text(), path  # reports select their run, not filtered afterwards


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
