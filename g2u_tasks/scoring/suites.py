"""The scoring suites: one object per suite, holding its per-item scorer, its aggregation and its judge.

A benchmark declaration (g2u_tasks/benchmarks/table.py) names one suite. `GENERIC` scores benchmarks
without a declaration by question type and reports only accuracy.

- extraction: the rule set the scorer reads answers with: "vlmevalkit" (YOrN_Extraction for yes/no,
  can_infer for MCQ; judge only as fallback), "authors" (the authors' own can_infer), "judge" (an LLM
  judge grades or extracts every row), "qspatial" (last \\scalar{…} and \\distance_unit{…}), "ocr",
  "lmms-eval" (the UniG2U sub-task's own rule: relaxed accuracy, MMSI letter, VisualPuzzles parser).
- judge: "required" (some verdicts exist only with a judge) | "optional" (only for rows the rules
  can't parse; without one they count as wrong, as VLMEvalKit's exact matching) | "none".
- judge_model: VLMEvalKit run.py's default judge for the suite (a JudgeSpec.model overrides it).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable

import polars as pl

from g2u_tasks.scoring import aggregations as agg
from g2u_tasks.scoring import items as I
from g2u_tasks.scoring.extraction import RULE_SETS

JUDGE_LEVELS = ("required", "optional", "none")
GPT35 = "gpt-3.5-turbo-0125"  # VLMEvalKit "chatgpt-0125", the run.py default for Y/N and MCQ
GPT4 = "gpt-4-1106-preview"
GPT4O_MINI = "gpt-4o-mini-2024-07-18"


@dataclass(frozen=True, kw_only=True)
class ScoringSuite:
    name: str
    item_scorer: I.ItemScorer  # fills extracted / hit (None = needs a judge) for a list of rows
    aggregate: Callable[[pl.DataFrame], list[dict[str, Any]]] | None  # None: accuracy only
    extraction: str
    judge: str
    judge_model: str | None
    prepare: Callable[[I.Row], None] | None = None  # per-row step before scoring (e.g. MMMU_preproc)

    def __post_init__(self) -> None:
        problems = [f"{v!r} not in {allowed}" for v, allowed in ((self.extraction, RULE_SETS),
                                                                 (self.judge, JUDGE_LEVELS)) if v not in allowed]
        if (self.judge == "none") != (self.judge_model is None):
            problems.append("judge_model must be set exactly when a judge is used")
        if problems:
            raise ValueError(f"scoring suite {self.name!r}: " + "; ".join(problems))


def _table(*suites: ScoringSuite) -> MappingProxyType:
    out: dict[str, ScoringSuite] = {}
    for s in suites:
        if s.name in out:
            raise ValueError(f"scoring suite {s.name!r} is declared twice")
        out[s.name] = s
    return MappingProxyType(out)


def _exact_match(name: str, item_scorer: I.ItemScorer, aggregate, **more: Any) -> ScoringSuite:
    """VLMEvalKit's rule-first suites: its extraction, the default judge only for unparsed rows."""
    return ScoringSuite(name=name, item_scorer=item_scorer, aggregate=aggregate, extraction="vlmevalkit",
                        judge="optional", judge_model=GPT35, **more)


def _lmms_eval(name: str, item_scorer: I.ItemScorer, aggregate) -> ScoringSuite:
    """lmms-eval UniG2U sub-tasks: rules only, no judge."""
    return ScoringSuite(name=name, item_scorer=item_scorer, aggregate=aggregate, extraction="lmms-eval",
                        judge="none", judge_model=None)


# lmms-eval MMSI-Bench sub-task -> the one metric its YAML aggregates (= the items' question_type)
MMSI_METRICS = {"attribute_appr": "Attribute (Appr.)", "attribute_meas": "Attribute (Meas.)",
                "motion_cam": "Motion (Cam.)", "motion_obj": "Motion (Obj.)", "msr": "MSR"}

SUITES: MappingProxyType = _table(
    _exact_match("mme", I.score_yes_no, agg.mme),
    _exact_match("hallusionbench", I.score_yes_no, agg.hallusionbench),
    _exact_match("pope", I.score_yes_no, agg.pope),
    _exact_match("mcq", I.score_mcq, agg.mcq),
    _exact_match("mmmu", I.score_mcq, agg.mcq, prepare=I.mmmu_preproc),
    _exact_match("mmbench_circular", I.score_circular, agg.mmbench_circular),
    ScoringSuite(name="mathvista", item_scorer=I.score_mathvista, aggregate=agg.mathvista, extraction="judge",
                 judge="required", judge_model=GPT4O_MINI),
    ScoringSuite(name="mmvet", item_scorer=I.score_mmvet, aggregate=agg.mmvet, extraction="judge",
                 judge="required", judge_model=GPT4),
    ScoringSuite(name="kiva", item_scorer=I.score_kiva, aggregate=agg.mcq, extraction="authors",
                 judge="required", judge_model=GPT35),
    ScoringSuite(name="spatial457", item_scorer=I.score_verdict, aggregate=agg.mcq, extraction="judge",
                 judge="required", judge_model=GPT35),
    ScoringSuite(name="qspatial", item_scorer=I.score_qspatial, aggregate=agg.qspatial, extraction="qspatial",
                 judge="none", judge_model=None),
    _lmms_eval("unig2u_chartqa", I.score_unig2u_relaxed, agg.unig2u_chartqa),
    *(_lmms_eval(f"unig2u_mmsi_{task}", I.score_unig2u_mmsi, agg.unig2u_question_type(metric))
      for task, metric in MMSI_METRICS.items()),
    _lmms_eval("unig2u_visualpuzzles", I.score_unig2u_visualpuzzles, agg.unig2u_accuracy),
)

GENERIC = ScoringSuite(name="generic", item_scorer=I.score_by_question_type, aggregate=None,
                       extraction="vlmevalkit", judge="optional", judge_model=GPT35, prepare=I.normalise_gold)


def get_suite(name: str) -> ScoringSuite:
    if name not in SUITES:
        raise ValueError(f"unknown scoring suite {name!r}; expected one of {sorted(SUITES)}")
    return SUITES[name]
