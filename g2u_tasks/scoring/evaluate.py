"""Score a predictions file made elsewhere as VLMEvalKit ca9a644 would (docs/SCORING.md).

Reads a VLMEvalKit result file (.xlsx/.tsv/.csv with `index` and `prediction`; columns lower-cased
except single capital letters) or our own Parquet (item_id + raw_output), joins it with the benchmark
data (the spec's adapter on `data_path`, else the original columns inside the predictions file),
extracts answers with the spec's rule set, consults the judge where the reference would, and applies
the benchmark's metric suite.
"""
from __future__ import annotations

import json
import logging
import math
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import polars as pl

from g2u_tasks.scoring import judge as J
from g2u_tasks.benchmarks.adapters import load_benchmark_spec
from g2u_tasks.scoring.suites import METRIC_SUITES, judge_fallback_record, qspatial_gold_cm
from g2u_tasks.benchmarks.table import BenchmarkSpec, resolve
from g2u_tasks.benchmarks.loaders import infer_question_type, parse_list_cell
from g2u_tasks.records import QUESTION_TYPES, Item, canonical_json
from g2u_tasks.scoring.extraction import extract, extract_authors, mathvista_hit, mathvista_prefetch, qspatial_ratio

log = logging.getLogger(__name__)

GROUP_COLUMNS = ("run_id", "condition", "mode", "seed")  # our Parquet: one evaluation per combination
_CORE = {"index", "item_id", "prediction", "raw_output", "image", "question", "answer", "category"}
FRAME_SCHEMA = {
    "benchmark": pl.String, "item_id": pl.String, "question": pl.String, "answer": pl.String,
    "options": pl.String, "category": pl.String, "question_type": pl.String, "extra": pl.String,
    "prediction": pl.String, "extracted": pl.String, "hit": pl.Boolean, "judged": pl.Boolean,
    "score": pl.Float64,
}


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


# ---- entry point ---------------------------------------------------------------------------------


def evaluate_predictions(benchmark: str, predictions_path: str, data_path: str | None = None,
                         judge: J.JudgeSpec | None = None) -> list[dict[str, Any]]:
    """Metric records {benchmark, metric, value, n, unit, status, note} (+ run keys for our Parquet)."""
    return [rec for _, _, records in _evaluate(benchmark, predictions_path, data_path, judge) for rec in records]


def score_predictions(benchmark: str, predictions_path: str, data_path: str | None = None,
                      judge: J.JudgeSpec | None = None) -> pl.DataFrame:
    """The scored rows behind `evaluate_predictions` (the metric suites' input frame, + run keys)."""
    frames = [frame.with_columns(**{k: pl.lit(_plain(v)) for k, v in labels.items()})
              for labels, frame, _ in _evaluate(benchmark, predictions_path, data_path, judge)]
    return pl.concat(frames, how="diagonal_relaxed")


def _evaluate(benchmark: str, predictions_path: str, data_path: str | None,
              judge: J.JudgeSpec | None) -> list[tuple[dict[str, Any], pl.DataFrame, list[dict[str, Any]]]]:
    """Per run group (our Parquet) or once (a VLMEvalKit file): (group labels, scored frame, records)."""
    spec, label = _resolve_spec(benchmark)
    table = read_predictions(predictions_path)
    if "benchmark" in table.columns:
        table = table[table["benchmark"].isin({label, benchmark, *spec.names})]
        if table.empty:
            raise ValueError(f"{predictions_path}: no rows for benchmark {label!r}")
    items = _load_items(spec, label, data_path) if data_path else None
    keys = [c for c in GROUP_COLUMNS if c in table.columns]
    groups = [((), table)] if not keys else list(table.groupby(keys, dropna=False, sort=True))
    out = []
    for key, part in groups:
        rows = _join(spec, part, items, predictions_path)
        frame, records = score_and_report(label, spec, rows, judge)
        labels = {k: _plain(v) for k, v in zip(keys, key if isinstance(key, tuple) else (key,))}
        out.append((labels, frame, [{**r, **labels} for r in records]))
    return out


def score_and_report(benchmark: str, spec: BenchmarkSpec, rows: list[Row],
                     judge_spec: J.JudgeSpec | None) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """Extract, judge where needed, then the suite's metrics plus one judge_fallback record."""
    suite = spec.metric_suite
    use_judge = judge_spec is not None and spec.judge != "none"  # run.py gives Q-Spatial no judge
    lazy = _LazyJudge(J.Judge(judge_spec, suite, spec.judge_model) if use_judge else None)
    try:
        SCORERS[suite](rows, spec.extraction, lazy)
    finally:
        lazy.close()
    frame = to_frame(benchmark, rows)
    records = METRIC_SUITES[suite](frame)
    note = _fallback_note(lazy, spec.judge)
    records.append(judge_fallback_record(benchmark, sum(r.needs_judge for r in rows), note))
    return frame, records


def _fallback_note(lazy: "_LazyJudge", judge_level: str) -> str:
    if judge_level == "none":
        return "this benchmark uses no judge"
    if lazy.used:
        return f"resolved by judge {lazy.model} ({lazy.calls} call(s))"
    why = "judge not working" if lazy.failed_probe else "no judge"
    if judge_level == "required":
        return f"{why}: items that need the judge stay unscored; affected metrics not computed"
    return f"{why}: scored as wrong (VLMEvalKit exact matching)"


def to_frame(benchmark: str, rows: list[Row]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"benchmark": benchmark, "item_id": r.item_id, "question": r.question, "answer": r.answer,
          "options": canonical_json(r.options), "category": r.category, "question_type": r.question_type,
          "extra": canonical_json(r.extra), "prediction": r.prediction, "extracted": r.extracted,
          "hit": r.hit, "judged": r.judged, "score": r.score} for r in rows],
        schema=FRAME_SCHEMA,
    )


# ---- reading -------------------------------------------------------------------------------------


def read_predictions(path: str) -> pd.DataFrame:
    """A predictions table with `item_id` and `prediction` (text) columns plus every original column."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        df = pl.read_parquet(p).to_pandas()
        if "raw_output" not in df.columns or "item_id" not in df.columns:
            raise ValueError(f"{path}: a Parquet predictions file needs item_id and raw_output columns")
        df = df.rename(columns={"raw_output": "prediction"})
    elif suffix in (".xlsx", ".tsv", ".csv"):
        if suffix == ".xlsx":
            df = pd.read_excel(p)  # openpyxl
        else:
            df = pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",", dtype=str)
        # VLMEvalKit: lower-case every column name except single capital letters (option columns)
        df.columns = [c if (len(str(c)) == 1 and str(c) in string.ascii_uppercase) else str(c).lower()
                      for c in df.columns]
        df = df.loc[:, ~pd.Index(df.columns).duplicated(keep="last")]
        if "index" not in df.columns or "prediction" not in df.columns:
            raise ValueError(f"{path}: a VLMEvalKit result file needs index and prediction columns")
        df["item_id"] = [_cell(x) for x in df["index"]]
    else:
        raise ValueError(f"{path}: unsupported predictions format (expected .xlsx, .tsv, .csv or .parquet)")
    df["prediction"] = [str(x) if not _missing(x) else "nan" for x in df["prediction"]]  # upstream str(x)
    return df


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell(value: Any) -> str | None:
    """A cell as text: None for empty/NaN, integral floats without '.0' (Excel reads 3 as 3.0)."""
    if _missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        stripped = value.strip()
        return None if stripped in ("", "nan", "NaN") else value
    return str(value)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


# ---- joining -------------------------------------------------------------------------------------


def _resolve_spec(benchmark: str) -> tuple[BenchmarkSpec, str]:
    """(spec, the name as spelled in the spec table, e.g. 'Spatial457_occ')."""
    return resolve(benchmark)


def _load_items(spec: BenchmarkSpec, label: str, data_path: str) -> dict[str, Item]:
    return {it.item_id: it for it in load_benchmark_spec(label, data_path, benchmark=label)}


def _join(spec: BenchmarkSpec, table: pd.DataFrame, items: dict[str, Item] | None, path: str) -> list[Row]:
    ids = [str(x) for x in table["item_id"]]
    dupes = sorted(i for i, k in Counter(ids).items() if k > 1)
    if dupes:
        raise ValueError(f"{path}: duplicate item ids {dupes[:5]}")
    if items is None:
        if "question" not in table.columns:
            raise ValueError(f"{path} holds no question column: pass the benchmark data (--data)")
        rows = [_row_from_columns(spec, rec) for rec in table.to_dict("records")]
    else:
        missing = [i for i in ids if i not in items]
        if missing:
            raise ValueError(f"{path}: {len(missing)} prediction(s) not in the benchmark data, e.g. {missing[:5]}")
        rows = [_row_from_item(items[i], p) for i, p in zip(ids, table["prediction"])]
    if spec.metric_suite == "mmmu":
        for r in rows:
            _mmmu_preproc(r)
    return rows


def _row_from_item(item: Item, prediction: str) -> Row:
    return Row(item.item_id, item.question, item.answer, dict(item.options), item.category, item.question_type,
               dict(item.extra), prediction)


def _row_from_columns(spec: BenchmarkSpec, rec: dict[str, Any]) -> Row:
    """A VLMEvalKit row (the dataset TSV's columns minus the image) as one of our rows."""
    cells = {k: _cell(v) for k, v in rec.items()}
    options = {k: v for k, v in cells.items() if len(k) == 1 and k in string.ascii_uppercase and v is not None}
    extra = {k: v for k, v in cells.items() if k not in _CORE and k not in options and v is not None
             and not (len(k) == 1 and k in string.ascii_uppercase)}
    if spec.metric_suite in ("mathvista", "qspatial"):  # the adapter's names for the source question_type
        extra[f"{spec.metric_suite}_question_type"] = extra.pop("question_type", None)
        if not options and extra.get("choices"):
            options = {chr(65 + i): str(v) for i, v in enumerate(parse_list_cell(extra["choices"]) or [])}
    answer = cells.get("answer")
    qtype = spec.question_type
    if qtype not in QUESTION_TYPES:
        qtype = infer_question_type(options, answer)
    return Row(str(cells["item_id"]), cells.get("question") or "", answer, options, cells.get("category"), qtype,
               extra, str(rec["prediction"]))


def _mmmu_preproc(row: Row) -> None:
    """`MMMU_preproc`: an open question becomes A = gold answer, B = 'Other Answers'; non-letter gold -> 'A'."""
    if "A" not in row.options:
        row.options = {"A": str(row.answer), "B": "Other Answers", **row.options}
        row.question_type = "mcq"
    row.extra["gold_letter"] = row.answer if row.answer in list(string.ascii_uppercase) else "A"


# ---- item scoring per suite ----------------------------------------------------------------------


class _LazyJudge:
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


def _gold(row: Row) -> str | None:
    return row.extra.get("gold_letter", row.answer)


def _first_pass(rule_set: str, row: Row, question_type: str) -> str | None:
    """The rule set's reading; the suite fixes the question type (MCQ suites always match options)."""
    return extract_authors(row.prediction) if rule_set == "authors" else extract(
        rule_set, row.prediction, row.options, question_type)


def _run_judge(lazy: _LazyJudge, rows: list[Row], work: Callable[[J.Judge, int, Row], None]) -> J.Judge | None:
    """Run `work` on every row that needs the judge (concurrently); returns the judge if one was used."""
    todo = [r for r in rows if r.needs_judge]
    judge = lazy.get() if todo else None
    if judge is not None:
        judge.map(lambda i, r: work(judge, i, r), todo)
        for r in todo:
            r.judged = True
    return judge


def score_yes_no(rows: list[Row], rule_set: str, lazy: _LazyJudge) -> None:
    """ImageYORNDataset: YOrN_Extraction; 'Unknown' rows go to YOrN_auxeval; score = answer == extracted."""
    for r in rows:
        r.extracted = _first_pass(rule_set, r, "yes_no") or "Unknown"
        r.needs_judge = r.extracted == "Unknown"

    def work(judge: J.Judge, i: int, r: Row) -> None:
        r.extracted = J.judge_yes_no(judge, r.question, r.prediction, index=i)

    _run_judge(lazy, rows, work)
    for r in rows:
        r.hit = r.extracted == r.answer


def score_mcq(rows: list[Row], rule_set: str, lazy: _LazyJudge) -> None:
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


def score_circular(rows: list[Row], rule_set: str, lazy: _LazyJudge) -> None:
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


def score_mathvista(rows: list[Row], rule_set: str, lazy: _LazyJudge) -> None:
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


def score_mmvet(rows: list[Row], rule_set: str, lazy: _LazyJudge) -> None:
    """MMVet_auxeval on every item; `score` holds the 0-1 grade, `hit` means a grade of 1.0."""
    for r in rows:
        r.needs_judge = True

    def work(judge: J.Judge, i: int, r: Row) -> None:
        r.score, _ = J.judge_mmvet(judge, r.question, str(r.answer), r.prediction, index=i)
        r.hit = r.score == 1.0

    _run_judge(lazy, rows, work)


def score_kiva(rows: list[Row], rule_set: str, lazy: _LazyJudge) -> None:
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


def score_spatial457(rows: list[Row], rule_set: str, lazy: _LazyJudge) -> None:
    """The authors' Spatial457_occ/L5: every item goes to the strict 1/0 evaluator (one call)."""
    for r in rows:
        r.needs_judge = True

    def work(judge: J.Judge, i: int, r: Row) -> None:
        r.hit, _ = J.judge_authors_verdict(judge, r.question, r.prediction, str(r.answer), index=i)

    _run_judge(lazy, rows, work)


def score_qspatial(rows: list[Row], rule_set: str, lazy: _LazyJudge) -> None:
    """Regex parsing only (run.py gives Q-Spatial no judge); hit = delta_2."""
    for r in rows:
        r.extracted = extract("qspatial", r.prediction, r.options, r.question_type)
        ratio = qspatial_ratio(None if r.extracted is None else float(r.extracted),
                               qspatial_gold_cm(r.extra, r.answer, r.item_id))
        r.hit = ratio < 2.0


SCORERS: dict[str, Callable[[list[Row], str, _LazyJudge], None]] = {
    "mme": score_yes_no,
    "hallusionbench": score_yes_no,
    "pope": score_yes_no,
    "mcq": score_mcq,
    "mmmu": score_mcq,
    "mmbench_circular": score_circular,
    "mathvista": score_mathvista,
    "mmvet": score_mmvet,
    "kiva": score_kiva,
    "spatial457": score_spatial457,
    "qspatial": score_qspatial,
}


def records_json(records: list[dict[str, Any]]) -> str:
    """The CLI's JSON: {benchmark, metric, value, n} per record (plus run keys when present)."""
    keep = ("benchmark", "metric", "value", "n", *GROUP_COLUMNS)
    return json.dumps([{k: r[k] for k in keep if k in r} for r in records], indent=2)


def score_items(benchmark: str, items: list[Item], predictions: list[str],
                judge: J.JudgeSpec | None = None) -> list[dict[str, Any]]:
    """Metric records for predictions on loaded items (the pipeline's path; same rules as above)."""
    spec, label = _resolve_spec(benchmark)
    rows = [_row_from_item(it, p) for it, p in zip(items, predictions, strict=True)]
    if spec.metric_suite == "mmmu":
        for r in rows:
            _mmmu_preproc(r)
    return score_and_report(label, spec, rows, judge)[1]
