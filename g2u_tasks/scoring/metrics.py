"""Run-level metrics from scored predictions: accuracy and the share of unparsed answers.

Both are over the scored rows only (`correct` not null); `n` counts them and `note` says how many
rows were left unscored and excluded."""
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
    scored = pl.col("correct").is_not_null()
    unparsed = pl.col("extracted_answer").is_null() | pl.col("extracted_answer").is_in(UNPARSED)
    agg = predictions.group_by(keys).agg(
        pl.col("correct").cast(pl.Float64).mean().alias("accuracy"),  # mean skips nulls
        unparsed.filter(scored).cast(pl.Float64).mean().alias("unparsed_rate"),
        scored.sum().cast(pl.Int64).alias("n"),
        (~scored).sum().cast(pl.Int64).alias("n_unscored"),
    )
    long = agg.unpivot(index=[*keys, "n", "n_unscored"], on=["accuracy", "unparsed_rate"], variable_name="metric")
    note = pl.when(pl.col("n_unscored") > 0).then(
        pl.format("{} unscored row(s) excluded", pl.col("n_unscored"))).otherwise(pl.lit(None, pl.String))
    long = long.select(
        *keys, "metric", "value", pl.col("n").cast(pl.Int64), pl.lit("fraction").alias("unit"),
        pl.when(pl.col("value").is_null()).then(pl.lit("not_computed")).otherwise(pl.lit("ok")).alias("status"),
        note.alias("note"),
    ).sort([*keys, "metric"])
    return long.to_arrow().cast(METRICS_SCHEMA)
