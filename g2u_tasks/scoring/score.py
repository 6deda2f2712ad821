"""One scoring path: a suite's per-item scorer, then its aggregation over those same verdicts.

Both the pipeline's scoring stage and `g2u evaluate` score through `score_rows` and `aggregate_rows`."""
from __future__ import annotations

from typing import Any

import polars as pl

from g2u_tasks.records import canonical_json
from g2u_tasks.scoring import judge as J
from g2u_tasks.scoring.aggregations import judge_fallback_record
from g2u_tasks.scoring.items import LazyJudge, Row, mark_unscored
from g2u_tasks.scoring.suites import ScoringSuite

FRAME_SCHEMA = {
    "benchmark": pl.String, "item_id": pl.String, "question": pl.String, "answer": pl.String,
    "options": pl.String, "category": pl.String, "question_type": pl.String, "extra": pl.String,
    "prediction": pl.String, "extracted": pl.String, "hit": pl.Boolean, "judged": pl.Boolean,
    "score": pl.Float64, "unscored_reason": pl.String,
}


class JudgePool:
    """One judge (probed once) per judge model, shared by every group a scoring call handles."""

    def __init__(self, spec: J.JudgeSpec | None):
        self.spec = spec
        self._judges: dict[str, LazyJudge] = {}

    def get(self, suite: ScoringSuite) -> LazyJudge:
        if self.spec is None or suite.judge == "none":  # run.py gives Q-Spatial no judge
            return LazyJudge(None)
        model = self.spec.model or suite.judge_model
        if model not in self._judges:
            self._judges[model] = LazyJudge(J.Judge(self.spec, suite.judge_model))
        return self._judges[model]

    def close(self) -> None:
        for lazy in self._judges.values():
            lazy.close()


def score_rows(suite: ScoringSuite, rows: list[Row], pool: JudgePool) -> str:
    """Score `rows` in place (extracted, hit, unscored_reason); returns the note of the group's
    judge_fallback record (whether a judge settled what the rules could not)."""
    if suite.prepare is not None:
        for r in rows:
            suite.prepare(r)
    lazy = pool.get(suite)
    calls_before = lazy.calls
    suite.item_scorer(rows, suite.extraction, lazy)
    mark_unscored(rows, lazy)
    return _fallback_note(lazy, suite.judge, lazy.calls - calls_before)


def aggregate_rows(benchmark: str, suite: ScoringSuite, rows: list[Row], note: str) -> list[dict[str, Any]]:
    """The suite's metric records over scored rows, plus one judge_fallback record (none without an
    aggregation: such benchmarks report accuracy only)."""
    if suite.aggregate is None:
        return []
    records = suite.aggregate(to_frame(benchmark, rows))
    records.append(judge_fallback_record(benchmark, sum(r.needs_judge for r in rows), note))
    return records


def _fallback_note(lazy: LazyJudge, judge_level: str, calls: int) -> str:
    if judge_level == "none":
        return "this benchmark uses no judge"
    if lazy.used:
        return f"resolved by judge {lazy.model} ({calls} call(s))"
    why = "judge not working" if lazy.failed_probe else "no judge"
    if judge_level == "required":
        return f"{why}: items that need the judge stay unscored; affected metrics not computed"
    return f"{why}: scored as wrong (VLMEvalKit exact matching)"


def to_frame(benchmark: str, rows: list[Row]) -> pl.DataFrame:
    """The aggregations' input: one row per scored prediction."""
    return pl.DataFrame(
        [{"benchmark": benchmark, "item_id": r.item_id, "question": r.question, "answer": r.answer,
          "options": canonical_json(r.options), "category": r.category, "question_type": r.question_type,
          "extra": canonical_json(r.extra), "prediction": r.prediction, "extracted": r.extracted,
          "hit": r.hit, "judged": r.judged, "score": r.score, "unscored_reason": r.unscored_reason}
         for r in rows],
        schema=FRAME_SCHEMA,
    )
