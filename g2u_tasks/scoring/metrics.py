"""Run-level metrics from scored predictions (accuracy and the share of unparsed answers)."""
from __future__ import annotations

import polars as pl
import pyarrow as pa

from g2u_tasks.records import METRICS_SCHEMA

UNPARSED = ("Z", "Unknown")


def compute_metrics(predictions: pl.DataFrame) -> pa.Table:
    """One row per run x benchmark x condition x mode x metric; seeds are pooled."""
    keys = ["run_id", "benchmark", "condition", "mode"]
    if predictions.is_empty():
        return pa.Table.from_pylist([], schema=METRICS_SCHEMA)
    agg = predictions.group_by(keys).agg(
        pl.col("correct").cast(pl.Float64).mean().alias("accuracy"),
        (pl.col("extracted_answer").is_null() | pl.col("extracted_answer").is_in(UNPARSED))
        .cast(pl.Float64).mean().alias("unparsed_rate"),
        pl.len().alias("n"),
    )
    long = agg.unpivot(index=[*keys, "n"], on=["accuracy", "unparsed_rate"], variable_name="metric")
    long = long.select(
        *keys, "metric", "value", pl.col("n").cast(pl.Int64), pl.lit("fraction").alias("unit"),
        pl.lit("ok").alias("status"), pl.lit(None, pl.String).alias("note"),
    ).sort([*keys, "metric"])
    return long.to_arrow().cast(METRICS_SCHEMA)
