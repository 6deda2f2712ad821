"""The scoring stage (g2u_tasks.scoring.stage) on stored predictions equals `g2u evaluate` on the
same predictions: one per-item scorer, one aggregation."""
from pathlib import Path

import polars as pl
import pytest

from g2u_tasks.benchmarks.adapters import load_benchmark_spec
from g2u_tasks.records import PREDICTIONS_SCHEMA, items_table
from g2u_tasks.scoring.evaluate import evaluate_predictions, score_predictions
from g2u_tasks.scoring.items import NO_JUDGE
from g2u_tasks.scoring.stage import score_run

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"
RUN_KEYS = ("run_id", "benchmark", "item_id", "condition", "mode", "seed", "raw_output")


def _pipeline_frames(name: str, seeds=(0,)):
    items = load_benchmark_spec(name, str(FIX / f"{name}.tsv"), images_root=str(FIX / "images"))
    preds = pl.read_csv(FIX / "predictions" / f"{name}.tsv", separator="\t", infer_schema=False)
    rows = [
        {"run_id": "r", "benchmark": name, "item_id": r["index"], "condition": "identity", "mode": "concat",
         "seed": s, "raw_output": r["prediction"]}
        for s in seeds for r in preds.iter_rows(named=True)
    ]
    frame = pl.DataFrame(rows).with_columns(
        *[pl.lit(None, pl.String).alias(c) for c in PREDICTIONS_SCHEMA.names if c not in RUN_KEYS]
    )
    return pl.from_arrow(items_table(items)), frame


def _official(metrics) -> dict[str, dict]:
    return {r["metric"]: r for r in metrics.to_pylist() if r["metric"] not in ("accuracy", "unparsed_rate")}


@pytest.mark.parametrize("name", ["MME", "HallusionBench", "POPE", "MMBench_DEV_EN", "MMStar", "QSpatial_plus"])
def test_stage_matches_evaluate(name):
    items, preds = _pipeline_frames(name)
    run = score_run(items, preds)
    got = {m: r["value"] for m, r in _official(run.metrics()).items()}
    path = str(FIX / "predictions" / f"{name}.tsv")
    want = {r["metric"]: r["value"] for r in evaluate_predictions(name, path) if r["metric"] != "coverage"}
    assert got == pytest.approx(want) and len(got) > 3
    per_item = score_predictions(name, path)
    verdicts = dict(zip(per_item["item_id"], per_item["hit"]))
    assert dict(zip(run.predictions["item_id"], run.predictions["correct"])) == verdicts
    accuracy = next(r for r in run.metrics().to_pylist() if r["metric"] == "accuracy")
    assert accuracy["value"] == pytest.approx(sum(verdicts.values()) / len(verdicts))


def test_two_seeds_average_and_judge_only_stays_not_computed():
    items, preds = _pipeline_frames("MME", seeds=(0, 1))
    one = _official(score_run(*_pipeline_frames("MME")).metrics())
    two = _official(score_run(items, preds).metrics())
    assert two["perception"]["value"] == pytest.approx(one["perception"]["value"])
    assert two["perception"]["n"] == 2 * one["perception"]["n"]
    run = score_run(*_pipeline_frames("MMVet"))
    overall = _official(run.metrics())["Overall"]
    assert overall["status"] == "not_computed" and overall["value"] is None
    assert run.predictions["correct"].is_null().all()
    assert set(run.predictions["unscored_reason"]) == {NO_JUDGE}
    accuracy = next(r for r in run.metrics().to_pylist() if r["metric"] == "accuracy")
    assert accuracy["status"] == "not_computed" and accuracy["n"] == 0
    assert accuracy["note"] == f"{run.predictions.height} unscored row(s) excluded"


def test_metrics_cover_only_the_rows_passed_in():
    items, preds = _pipeline_frames("MMStar")
    run = score_run(items, preds)
    kept = run.predictions.head(4)
    acc = next(r for r in run.metrics(kept).to_pylist() if r["metric"] == "accuracy")
    assert acc["n"] == 4 and acc["value"] == pytest.approx(kept["correct"].mean())
    assert _official(run.metrics(kept))["Overall"]["n"] == 4


def test_benchmarks_without_a_declaration_get_the_generic_suite():
    items, preds = _pipeline_frames("MME")
    items = items.with_columns(pl.lit("DemoYesNo").alias("benchmark"))
    run = score_run(items, preds.with_columns(pl.lit("DemoYesNo").alias("benchmark")))
    assert set(run.metrics()["metric"].to_pylist()) == {"accuracy", "unparsed_rate"}  # no official metrics
    declared = score_run(*_pipeline_frames("MME")).predictions
    assert run.predictions["correct"].to_list() == declared["correct"].to_list()  # same YOrN rules


def test_old_run_files_without_unscored_reason_are_scored():
    items, preds = _pipeline_frames("MMStar")
    run = score_run(items, preds.drop("unscored_reason"))
    assert run.predictions.columns == PREDICTIONS_SCHEMA.names
    assert run.predictions["unscored_reason"].is_null().all() and run.predictions["correct"].is_not_null().all()


def test_an_older_warehouse_gains_unscored_reason(tmp_path):
    import duckdb

    from g2u_tasks.warehouse import database as warehouse

    path = tmp_path / "old.duckdb"
    old = [c for c in PREDICTIONS_SCHEMA.names if c != "unscored_reason"]
    con = duckdb.connect(str(path))
    con.execute(f"CREATE TABLE predictions ({', '.join(f'{c} VARCHAR' for c in old)})")
    con.execute("INSERT INTO predictions (run_id, item_id) VALUES ('old', '1')")
    con.close()
    items, preds = _pipeline_frames("MMVet")
    con = warehouse.connect(path)  # read-write: additive migration
    try:
        warehouse.load(con, {"predictions": score_run(items, preds).predictions})
        rows = con.execute("SELECT run_id, correct, unscored_reason FROM predictions ORDER BY run_id").fetchall()
    finally:
        con.close()
    assert rows[0] == ("old", None, None) and {r[2] for r in rows[1:]} == {NO_JUDGE}
