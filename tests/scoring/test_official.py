"""The pipeline's official metrics equal `g2u evaluate` on the same predictions."""
from pathlib import Path

import polars as pl
import pytest

from g2u_tasks.benchmarks.adapters import load_benchmark_spec
from g2u_tasks.scoring.evaluate import evaluate_predictions
from g2u_tasks.scoring.official import official_metrics
from g2u_tasks.records import PREDICTIONS_SCHEMA, items_table

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"


def _pipeline_frames(name: str, seeds=(0,)):
    items = load_benchmark_spec(name, str(FIX / f"{name}.tsv"), images_root=str(FIX / "images"))
    preds = pl.read_csv(FIX / "predictions" / f"{name}.tsv", separator="\t", infer_schema=False)
    rows = [
        {"run_id": "r", "benchmark": name, "item_id": r["index"], "condition": "identity", "mode": "concat",
         "seed": s, "raw_output": r["prediction"]}
        for s in seeds for r in preds.iter_rows(named=True)
    ]
    frame = pl.DataFrame(rows).with_columns(
        *[pl.lit(None, pl.String).alias(c) for c in PREDICTIONS_SCHEMA.names
          if c not in ("run_id", "benchmark", "item_id", "condition", "mode", "seed", "raw_output")]
    )
    return pl.from_arrow(items_table(items)), frame


@pytest.mark.parametrize("name", ["MME", "HallusionBench", "POPE", "MMBench_DEV_EN", "MMStar"])
def test_official_metrics_match_evaluate(name):
    items, preds = _pipeline_frames(name)
    got = {r["metric"]: r["value"] for r in official_metrics(items, preds).to_pylist()}
    want = {r["metric"]: r["value"] for r in evaluate_predictions(name, str(FIX / "predictions" / f"{name}.tsv"))}
    assert got == pytest.approx(want)
    assert len(got) > 3


def test_two_seeds_average_and_judge_only_stays_not_computed():
    items, preds = _pipeline_frames("MME", seeds=(0, 1))
    one = {r["metric"]: r for r in official_metrics(*_pipeline_frames("MME")).to_pylist()}
    two = {r["metric"]: r for r in official_metrics(items, preds).to_pylist()}
    assert two["perception"]["value"] == pytest.approx(one["perception"]["value"])
    assert two["perception"]["n"] == 2 * one["perception"]["n"]
    mmvet = official_metrics(*_pipeline_frames("MMVet")).to_pylist()
    overall = next(r for r in mmvet if r["metric"] == "Overall")
    assert overall["status"] == "not_computed" and overall["value"] is None


def test_benchmarks_without_a_spec_are_left_to_accuracy():
    items, preds = _pipeline_frames("MME")
    assert official_metrics(items.with_columns(pl.lit("DemoYesNo").alias("benchmark")),
                            preds.with_columns(pl.lit("DemoYesNo").alias("benchmark"))).num_rows == 0
