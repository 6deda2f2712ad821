"""The scoring stage of a run: every stored prediction scored once by its benchmark's suite.

Scoring runs per run x benchmark x condition x mode x seed, on the raw outputs the understanding
stage stored. It fills `extracted_answer`, `correct` and `unscored_reason` of each prediction, and
`metrics` aggregate exactly those verdicts: accuracy and unparsed_rate over the scored rows (their
`n`/`note` say how many were left unscored), plus the suite's official metrics."""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from g2u_tasks.benchmarks.table import resolve
from g2u_tasks.records import METRICS_SCHEMA, PREDICTIONS_SCHEMA, Item
from g2u_tasks.scoring.evaluate import row_from_item
from g2u_tasks.scoring.judge import JudgeSpec
from g2u_tasks.scoring.metrics import compute_metrics
from g2u_tasks.scoring.items import Row
from g2u_tasks.scoring.score import JudgePool, aggregate_rows, score_rows
from g2u_tasks.scoring.suites import GENERIC, ScoringSuite

GROUP_KEYS = ["run_id", "benchmark", "condition", "mode", "seed"]
NO_ITEM = "item not among the run's items"
VERDICT_COLUMNS = ["extracted_answer", "correct", "unscored_reason"]  # what scoring fills
_ROW = "_row"


def suite_of(benchmark: str) -> tuple[ScoringSuite, str]:
    """(suite, the benchmark's spelling in its declaration); undeclared benchmarks get the generic suite."""
    try:
        spec, label = resolve(benchmark)
    except ValueError:
        return GENERIC, benchmark
    return spec.suite, label


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


@dataclass
class _Group:
    benchmark: str  # the declaration's spelling
    suite: ScoringSuite
    note: str
    rows: dict[str, Row]  # item_id -> scored row (none kept when the suite has no aggregation)


@dataclass
class ScoredRun:
    """A run's predictions with their verdicts, and the scored rows behind them (for `metrics`)."""

    predictions: pl.DataFrame
    groups: dict[tuple, _Group] = field(default_factory=dict)

    def metrics(self, predictions: pl.DataFrame | None = None) -> pa.Table:
        """accuracy / unparsed_rate and the official metrics over `predictions` (default: all of them;
        pass the rows that passed validation), from the verdicts already made: no judge call here."""
        predictions = self.predictions if predictions is None else predictions
        official: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for key, part in predictions.group_by(GROUP_KEYS, maintain_order=True):
            group = self.groups.get(tuple(key))
            if group is None:
                continue
            rows = [group.rows[i] for i in part["item_id"] if i in group.rows]
            for rec in aggregate_rows(group.benchmark, group.suite, rows, group.note):
                official[tuple(key)[:4]][rec["metric"]].append(rec)
        return pa.concat_tables([compute_metrics(predictions), _official_table(official)])


def score_run(items: pl.DataFrame, predictions: pl.DataFrame, judge: JudgeSpec | None = None) -> ScoredRun:
    """Score every prediction once, per run x benchmark x condition x mode x seed; the scored
    predictions keep the order they came in (each verdict is written at its row's position)."""
    by_ref = items_from_table(items)
    predictions = with_all_columns(predictions)
    n = predictions.height
    extracted, correct, reason = [None] * n, [None] * n, [NO_ITEM] * n
    groups: dict[tuple, _Group] = {}
    pool = JudgePool(judge)
    try:
        keyed = predictions.select(*GROUP_KEYS, "item_id", "raw_output").with_row_index(_ROW)
        for key, part in keyed.group_by(GROUP_KEYS, maintain_order=True):
            benchmark = key[1]
            suite, label = suite_of(benchmark)
            rows = {i: row_from_item(by_ref[(benchmark, i)], out)
                    for i, out in zip(part["item_id"], part["raw_output"]) if (benchmark, i) in by_ref}
            note = score_rows(suite, list(rows.values()), pool)
            for at, i in zip(part[_ROW], part["item_id"]):
                if (row := rows.get(i)) is not None:
                    extracted[at], correct[at], reason[at] = row.extracted, row.hit, row.unscored_reason
            # metrics() re-aggregates a group's rows only for a suite with an aggregation: keep none otherwise
            groups[tuple(key)] = _Group(label, suite, note, rows if suite.aggregate is not None else {})
    finally:
        pool.close()
    return ScoredRun(predictions.with_columns(
        pl.Series("extracted_answer", extracted, pl.String), pl.Series("correct", correct, pl.Boolean),
        pl.Series("unscored_reason", reason, pl.String)), groups)


def with_all_columns(predictions: pl.DataFrame) -> pl.DataFrame:
    """Run files written before `unscored_reason` existed gain it (as null)."""
    schema = pl.from_arrow(PREDICTIONS_SCHEMA.empty_table()).schema
    missing = [pl.lit(None, dtype).alias(c) for c, dtype in schema.items() if c not in predictions.columns]
    return predictions.with_columns(missing).select(list(schema)) if missing else predictions


def _official_table(official: dict[tuple, dict[str, list[dict]]]) -> pa.Table:
    """With several seeds a metric is averaged over seeds (n summed); not computed if any seed's is not."""
    out = []
    for (run_id, benchmark, condition, mode), per_metric in official.items():
        for metric, recs in per_metric.items():
            computed = all(r["status"] == "ok" and r["value"] is not None for r in recs)
            out.append({
                "run_id": run_id, "benchmark": benchmark, "condition": condition, "mode": mode, "metric": metric,
                "value": sum(r["value"] for r in recs) / len(recs) if computed else None,
                "n": sum(r["n"] for r in recs), "unit": recs[0]["unit"],
                "status": "ok" if computed else "not_computed", "note": recs[0].get("note"),
            })
    return pa.Table.from_pylist(out, schema=METRICS_SCHEMA)
