"""Each benchmark's official metrics (issue 5 rules) per run x condition x mode, for the `metrics` table.

Benchmarks whose name resolves to a spec in benchmark_specs get their reference metric suite; others
keep only the generic accuracy. With several seeds, a metric is computed per seed and averaged
(n summed); it is not computed if any seed's value is not computed."""
from __future__ import annotations

import json
from collections import defaultdict

import polars as pl
import pyarrow as pa

from g2u_tasks.benchmarks.table import resolve
from g2u_tasks.scoring.evaluate import score_items
from g2u_tasks.scoring.judge import JudgeSpec
from g2u_tasks.records import METRICS_SCHEMA, Item


def items_from_table(items: pl.DataFrame) -> dict[tuple[str, str], Item]:
    """Items (without images) from the run's `items` table."""
    return {
        (r["benchmark"], r["item_id"]): Item(
            benchmark=r["benchmark"], item_id=r["item_id"], question=r["question"],
            options=json.loads(r["options"] or "{}"), answer=r["answer"], category=r["category"],
            question_type=r["question_type"], image_sha256=r["image_sha256"], images=(), hint=r["hint"],
            extra=json.loads(r["extra"] or "{}"),
        )
        for r in items.iter_rows(named=True)
    }


def has_spec(benchmark: str) -> bool:
    try:
        resolve(benchmark)
    except ValueError:
        return False
    return True


def official_metrics(items: pl.DataFrame, predictions: pl.DataFrame, judge: JudgeSpec | None = None) -> pa.Table:
    by_ref = items_from_table(items)
    out = []
    for (run_id, benchmark, condition, mode), part in predictions.group_by(
        ["run_id", "benchmark", "condition", "mode"], maintain_order=True
    ):
        if not has_spec(benchmark):
            continue
        per_metric: dict[str, list[dict]] = defaultdict(list)
        for _, seed_part in part.group_by("seed", maintain_order=True):
            rows = [r for r in seed_part.iter_rows(named=True) if (benchmark, r["item_id"]) in by_ref]
            recs = score_items(benchmark, [by_ref[(benchmark, r["item_id"])] for r in rows],
                               [r["raw_output"] for r in rows], judge)
            for rec in recs:
                per_metric[rec["metric"]].append(rec)
        for metric, recs in per_metric.items():
            values = [r["value"] for r in recs]
            computed = all(r["status"] == "ok" and v is not None for r, v in zip(recs, values))
            out.append({
                "run_id": run_id, "benchmark": benchmark, "condition": condition, "mode": mode, "metric": metric,
                "value": sum(values) / len(values) if computed else None, "n": sum(r["n"] for r in recs),
                "unit": recs[0]["unit"], "status": "ok" if computed else "not_computed", "note": recs[0].get("note"),
            })
    return pa.Table.from_pylist(out, schema=METRICS_SCHEMA)
