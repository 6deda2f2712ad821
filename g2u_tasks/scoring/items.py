"""Per-item scoring: one prediction joined with its item becomes an extracted answer and a verdict.

Each scorer follows one VLMEvalKit (ca9a644) or authors' procedure: the suite's rules first, the LLM
judge for the rows the rules cannot settle (when one is configured and answers its probe). A row
whose verdict needs a judge that is missing keeps `hit = None` and says why in `unscored_reason`.
"""
from __future__ import annotations

import logging
import string
from dataclasses import dataclass
from typing import Any, Callable

from g2u_tasks.scoring import judge as J
from g2u_tasks.scoring.aggregations import qspatial_gold_cm
from g2u_tasks.benchmarks.hooks import as_list
from g2u_tasks.scoring.extraction import (extract, extract_authors, mathvista_hit, mathvista_prefetch,
                                          qspatial_ratio, unig2u_mmsi_letter, unig2u_relaxed,
                                          unig2u_visualpuzzles_letter)

log = logging.getLogger(__name__)

NO_JUDGE = "needs judge: no judge configured"
JUDGE_NOT_WORKING = "judge failed: no reply to the 'hello' probe"


@dataclass
class Row:
    """One prediction joined with its item; scoring fills extracted / hit / judged / score."""

    item_id: str
    question: str
    answer: str | None
    options: dict[str, str]
    category: str | None
    question_type: str
    extra: dict[str, Any]
    prediction: str
    extracted: str | None = None
    hit: bool | None = None
    judged: bool = False
    score: float | None = None
    needs_judge: bool = False
    unscored_reason: str | None = None


class LazyJudge:
    """Holds the judge; `get()` returns it only once it answered VLMEvalKit's 'hello' probe (asked once)."""

    def __init__(self, judge: J.Judge | None):
        self._judge, self._checked = judge, False
        self.failed_probe = self.used = False

    def get(self) -> J.Judge | None:
        if self._judge is not None and not self._checked:
            self._checked = True
            if not self._judge.working():
                log.warning("judge %s is not working; falling back to exact matching", self._judge.model)
                self.failed_probe = True
        self.used = self.used or (self._judge is not None and not self.failed_probe)
        return None if self.failed_probe else self._judge

    @property
    def model(self) -> str | None:
        return None if self._judge is None else self._judge.model

    @property
    def calls(self) -> int:
        return 0 if self._judge is None else self._judge.calls

    def close(self) -> None:
        if self._judge is not None:
            self._judge.close()


ItemScorer = Callable[[list[Row], str, LazyJudge], None]


def mark_unscored(rows: list[Row], lazy: LazyJudge) -> None:
    """Say why each row without a verdict has none."""
    why = JUDGE_NOT_WORKING if lazy.failed_probe else NO_JUDGE
    for r in rows:
        r.unscored_reason = why if r.hit is None else None


def _gold(row: Row) -> str | None:
    return row.extra.get("gold_letter", row.answer)


def _first_pass(rule_set: str, row: Row, question_type: str) -> str | None:
    """The rule set's reading; the suite fixes the question type (MCQ suites always match options)."""
    return extract_authors(row.prediction) if rule_set == "authors" else extract(
        rule_set, row.prediction, row.options, question_type)


def _run_judge(lazy: LazyJudge, rows: list[Row], work: Callable[[J.Judge, int, Row], None]) -> J.Judge | None:
    """Run `work` on every row that needs the judge (concurrently); returns the judge if one was used."""
    todo = [r for r in rows if r.needs_judge]
    judge = lazy.get() if todo else None
    if judge is not None:
        judge.map(lambda i, r: work(judge, i, r), todo)
        for r in todo:
            r.judged = True
    return judge


def score_yes_no(rows: list[Row], rule_set: str, lazy: LazyJudge) -> None:
    """ImageYORNDataset: YOrN_Extraction; 'Unknown' rows go to YOrN_auxeval; score = answer == extracted."""
    for r in rows:
        r.extracted = _first_pass(rule_set, r, "yes_no") or "Unknown"
        r.needs_judge = r.extracted == "Unknown"

    def work(judge: J.Judge, i: int, r: Row) -> None:
        r.extracted = J.judge_yes_no(judge, r.question, r.prediction, index=i)

    _run_judge(lazy, rows, work)
    for r in rows:
        r.hit = r.extracted == r.answer


def score_mcq(rows: list[Row], rule_set: str, lazy: LazyJudge) -> None:
    """mcq_vanilla_eval: can_infer, else the judge (3 tries, then a seeded random option), else 'Z'."""
    for r in rows:
        r.extracted = _first_pass(rule_set, r, "mcq")
        r.needs_judge = r.extracted is None

    def work(judge: J.Judge, i: int, r: Row) -> None:
        r.extracted, _ = J.judge_option(judge, r.question, r.options, r.prediction, r.item_id, index=i)

    _run_judge(lazy, rows, work)
    for r in rows:
        r.extracted = r.extracted or "Z"  # no judge: 'Z', i.e. wrong (VLMEvalKit exact matching)
        r.hit = r.extracted == _gold(r)


def score_circular(rows: list[Row], rule_set: str, lazy: LazyJudge) -> None:
    """mcq_circular_eval: pre-fetch every rotation; any wrong letter settles the group at 0; the judge
    is asked (rotation by rotation, stopping at the first wrong one) only for groups not yet settled."""
    groups: dict[int, list[Row]] = {}
    for r in sorted(rows, key=lambda x: int(float(x.item_id))):
        g = r.extra.get("g_index")
        groups.setdefault(int(float(g)) if g is not None else int(float(r.item_id)) % 1_000_000, []).append(r)
    open_groups = []
    for members in groups.values():
        for r in members:
            r.extracted = _first_pass(rule_set, r, "mcq")
            r.hit = r.extracted is not None and r.extracted == r.answer
        if not any(r.extracted is not None and not r.hit for r in members) and any(r.extracted is None
                                                                                   for r in members):
            open_groups.append(members)
            for r in members:
                r.needs_judge = r.extracted is None
    judge = lazy.get() if open_groups else None
    if judge is not None:
        judge.map(lambda i, members: _judge_group(judge, i, members), open_groups)
    for r in rows:
        r.extracted = r.extracted or "Z"  # unparsed and not judged


def _judge_group(judge: J.Judge, index: int, members: list[Row]) -> None:
    for r in members:
        if r.extracted is not None:
            continue
        r.extracted, _ = J.judge_option(judge, r.question, r.options, r.prediction, r.item_id, index=index)
        r.judged, r.hit = True, r.extracted == r.answer
        if not r.hit:
            return  # upstream stops at the first wrong rotation


def score_mathvista(rows: list[Row], rule_set: str, lazy: LazyJudge) -> None:
    """MathVista_auxeval: pre-fetch (post_check prefetch=True), else the judge extracts; post_check scores."""
    for r in rows:
        r.extracted = mathvista_prefetch(r.prediction, **_mathvista_args(r))
        r.needs_judge = r.extracted is None
        r.hit = None if r.needs_judge else mathvista_hit(r.extracted, **_mathvista_args(r))

    def work(judge: J.Judge, i: int, r: Row) -> None:
        r.extracted = J.judge_mathvista(judge, r.question, r.prediction, index=i)
        r.hit = mathvista_hit(r.extracted, **_mathvista_args(r))

    _run_judge(lazy, rows, work)


def _mathvista_args(r: Row) -> dict[str, Any]:
    e = r.extra
    return {"question_type": str(e.get("mathvista_question_type") or e.get("question_type")),
            "answer_type": str(e.get("answer_type")), "answer": r.answer, "answer_option": e.get("answer_option"),
            "choices": r.options}


def score_mmvet(rows: list[Row], rule_set: str, lazy: LazyJudge) -> None:
    """MMVet_auxeval on every item; `score` (and `extracted`, as text) hold the 0-1 grade; `hit` means 1.0."""
    for r in rows:
        r.needs_judge = True

    def work(judge: J.Judge, i: int, r: Row) -> None:
        r.score, _ = J.judge_mmvet(judge, r.question, str(r.answer), r.prediction, index=i)
        r.extracted, r.hit = repr(r.score), r.score == 1.0

    _run_judge(lazy, rows, work)


def score_kiva(rows: list[Row], rule_set: str, lazy: LazyJudge) -> None:
    """The authors' MyVQABench: their parser, else their judge prompt (3 tries, then 'A'); hit =
    can_infer(opt) == answer. Without a judge an unparsed item stays unscored (upstream crashes)."""
    if rule_set not in ("authors", "judge"):
        score_mcq(rows, rule_set, lazy)
        return
    for r in rows:
        r.extracted = extract_authors(r.prediction)
        r.needs_judge = r.extracted is None
        r.hit = None if r.needs_judge else extract_authors(r.extracted) == r.answer

    def work(judge: J.Judge, i: int, r: Row) -> None:
        r.extracted = J.judge_authors_option(judge, r.question, r.prediction, index=i)
        r.hit = extract_authors(r.extracted) == r.answer

    _run_judge(lazy, rows, work)


def score_verdict(rows: list[Row], rule_set: str, lazy: LazyJudge) -> None:
    """The authors' strict 1/0 evaluator on every item (Spatial457; free-form questions without a rule)."""
    for r in rows:
        r.needs_judge = True

    def work(judge: J.Judge, i: int, r: Row) -> None:
        r.hit, _ = J.judge_authors_verdict(judge, r.question, r.prediction, str(r.answer), index=i)
        r.extracted = "1" if r.hit else "0"

    _run_judge(lazy, rows, work)


def score_qspatial(rows: list[Row], rule_set: str, lazy: LazyJudge) -> None:
    """Regex parsing only (run.py gives Q-Spatial no judge); hit = delta_2."""
    for r in rows:
        r.extracted = extract("qspatial", r.prediction, r.options, r.question_type)
        ratio = qspatial_ratio(None if r.extracted is None else float(r.extracted),
                               qspatial_gold_cm(r.extra, r.answer, r.item_id))
        r.hit = ratio < 2.0


def score_unig2u_relaxed(rows: list[Row], rule_set: str, lazy: LazyJudge) -> None:
    """lmms-eval UniG2U ChartQA: the reply as it is, relaxed accuracy against the gold text."""
    for r in rows:
        r.extracted, r.hit = r.prediction, unig2u_relaxed(r.prediction, str(r.answer))


def score_unig2u_mmsi(rows: list[Row], rule_set: str, lazy: LazyJudge) -> None:
    """lmms-eval UniG2U MMSI-Bench: the narrowed letter against the gold (lower-cased, newlines as
    spaces, stripped); no letter scores 0."""
    for r in rows:
        r.extracted = unig2u_mmsi_letter(r.prediction)
        gold = str(r.answer).lower().replace("\n", " ").strip()
        r.hit = r.extracted is not None and r.extracted.lower() == gold


def score_unig2u_visualpuzzles(rows: list[Row], rule_set: str, lazy: LazyJudge) -> None:
    """lmms-eval UniG2U VisualPuzzles: `parse_response` letter, case-insensitive against the gold.
    Upstream crashes when nothing parses; here that scores 0."""
    for r in rows:
        choices = as_list(r.extra.get("choices")) or None
        r.extracted = unig2u_visualpuzzles_letter(r.prediction, choices)
        r.hit = r.extracted is not None and r.extracted.lower() == str(r.answer).lower()


_BY_QUESTION_TYPE: dict[str, ItemScorer] = {
    "mcq": score_mcq, "yes_no": score_yes_no, "open": score_verdict, "numeric": score_verdict,
}


def score_by_question_type(rows: list[Row], rule_set: str, lazy: LazyJudge) -> None:
    """Benchmarks without a declaration: can_infer for MCQ, YOrN for yes/no, the judge's verdict for
    free-form answers (no rule reads them, so without a judge they stay unscored)."""
    for qtype, scorer in _BY_QUESTION_TYPE.items():
        part = [r for r in rows if r.question_type == qtype]
        if part:
            scorer(part, rule_set, lazy)
    unknown = sorted({r.question_type for r in rows} - set(_BY_QUESTION_TYPE))
    if unknown:
        raise ValueError(f"unknown question_type: {unknown[0]!r}")


def normalise_gold(row: Row) -> None:
    """Generic items: gold letters stripped, yes/no gold capitalised ('yes' / 'YES' -> 'Yes')."""
    if row.answer is None:
        return
    if row.question_type == "mcq":
        row.answer = row.answer.strip()
    elif row.question_type == "yes_no":
        row.answer = row.answer.strip().capitalize()


def mmmu_preproc(row: Row) -> None:
    """`MMMU_preproc`: an open question becomes A = gold answer, B = 'Other Answers'; non-letter gold -> 'A'."""
    if "A" not in row.options:
        row.options = {"A": str(row.answer), "B": "Other Answers", **row.options}
        row.question_type = "mcq"
    row.extra["gold_letter"] = row.answer if row.answer in list(string.ascii_uppercase) else "A"
