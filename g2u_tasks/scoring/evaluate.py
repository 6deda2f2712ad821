"""`g2u evaluate`: score a predictions file made elsewhere as VLMEvalKit ca9a644 would (docs/SCORING.md).

Reads a VLMEvalKit result file (.xlsx/.tsv/.csv with `index` and `prediction`; columns lower-cased
except single capital letters), an lmms-eval samples log (.jsonl: doc_id, filtered_resps) or our own
Parquet (item_id + raw_output), joins it with the benchmark
data (the declaration's loader on `data_path`, else the original columns inside the predictions file),
and scores it through the same path as the pipeline (g2u_tasks/scoring/score.py).

Hostile or incomplete files: a row is refused (kept out of scoring, listed with its reason) when it
holds a spreadsheet formula, has an empty index, or its item is refused by the loader's rules
(`--data`); every group gets a `coverage` record (n_expected, n_predicted, n_scored, n_missing,
n_refused), and when it is incomplete every metric is `partial` with a note naming what is missing.
A file that cannot be read raises ValueError naming the file.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import string
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl

from g2u_tasks.benchmarks.adapters import load_benchmark_spec
from g2u_tasks.benchmarks.loaders import short_text, infer_question_type, parse_list_cell
from g2u_tasks.benchmarks.table import BenchmarkSpec, resolve
from g2u_tasks.records import QUESTION_TYPES, Item
from g2u_tasks.scoring import judge as J
from g2u_tasks.scoring.aggregations import FRACTION, record
from g2u_tasks.scoring.items import Row
from g2u_tasks.scoring.score import JudgePool, aggregate_rows, score_rows, to_frame

GROUP_COLUMNS = ("run_id", "condition", "mode", "seed")  # our Parquet: one evaluation per combination
REFUSED = "__refused__"  # per prediction row: why it is not scored (None: it is scored)
_CORE = {"index", "item_id", "prediction", "raw_output", "image", "question", "answer", "category", REFUSED}
COVERAGE_KEYS = ("n_expected", "n_predicted", "n_scored", "n_missing", "n_refused", "missing", "refused")
# Text a spreadsheet runs as a formula: "=..." always; "+", "-", "@" only before a function call, a DDE
# link (cmd|...) or a sheet reference (Sheet!A1), so answers such as "-3" or "+5 cm" stay answers.
_FORMULA_TEXT = re.compile(r"^\s*(=|[+\-@]\s*[A-Za-z_][\w.]*\s*[(|!])")
_CHECKED = ("index", "prediction")  # result-file text cells checked for formulas
_LISTED = 10  # item ids named in a note


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
    spec, label = resolve(benchmark)
    table = read_predictions(predictions_path)
    if "benchmark" in table.columns:
        table = table[table["benchmark"].isin({label, benchmark, *spec.names})]
        if table.empty:
            raise ValueError(f"{predictions_path}: no rows for benchmark {label!r}")
    data = load_data(label, data_path) if data_path else None
    keys = [c for c in GROUP_COLUMNS if c in table.columns]
    groups = [((), table)] if not keys else list(table.groupby(keys, dropna=False, sort=True))
    out = []
    pool = JudgePool(judge)
    try:
        for key, part in groups:
            rows, coverage = _join(spec, part, data, predictions_path)
            note = score_rows(spec.suite, rows, pool)
            records = aggregate_rows(label, spec.suite, rows, note)
            records = with_coverage(label, records, coverage)
            labels = {k: _plain(v) for k, v in zip(keys, key if isinstance(key, tuple) else (key,))}
            out.append((labels, to_frame(label, rows), [{**r, **labels} for r in records]))
    finally:
        pool.close()
    return out


# ---- reading -------------------------------------------------------------------------------------


def read_predictions(path: str) -> pd.DataFrame:
    """A predictions table with `item_id`, `prediction` (text) and REFUSED columns plus every original one.

    REFUSED holds why a row is not scored, else None: an empty index, or in a VLMEvalKit result file a
    spreadsheet formula (an .xlsx formula cell anywhere in the row, never evaluated nor its cached value
    used; formula-like text in a .csv/.tsv index or prediction). ValueError naming the file when it
    cannot be read."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".parquet", ".xlsx", ".tsv", ".csv", ".jsonl"):
        raise ValueError(f"{path}: unsupported predictions format (expected .xlsx, .tsv, .csv, .parquet or "
                         "an lmms-eval *_samples_*.jsonl)")
    if not p.is_file():
        raise FileNotFoundError(f"{path}: no such predictions file")
    formulas: dict[int, dict[str, str]] = {}
    if suffix == ".xlsx":
        df, formulas = _read_xlsx(p)
    elif suffix == ".jsonl":
        df = read_lmms_samples(p)
    else:
        try:
            df = pl.read_parquet(p).to_pandas() if suffix == ".parquet" else \
                pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",", dtype=str)
        except (pl.exceptions.PolarsError, OSError, ValueError) as exc:  # pandas' parser errors are ValueErrors
            raise ValueError(f"{path}: cannot read this {suffix} file ({type(exc).__name__}: {exc})") from None
    if suffix == ".parquet":
        if "raw_output" not in df.columns or "item_id" not in df.columns:
            raise ValueError(f"{path}: a Parquet predictions file needs item_id and raw_output columns")
        df = df.rename(columns={"raw_output": "prediction"})
        id_column = "item_id"
    else:
        df.columns = [_column_name(c) for c in df.columns]
        df = df.loc[:, ~pd.Index(df.columns).duplicated(keep="last")]
        if "index" not in df.columns or "prediction" not in df.columns:
            raise ValueError(f"{path}: a VLMEvalKit result file needs index and prediction columns")
        id_column = "index"
    if df.empty:
        raise ValueError(f"{path}: no prediction rows")
    checked = [] if suffix in (".parquet", ".jsonl") else [c for c in _CHECKED if c in df.columns]
    refused = [_refusal(n, rec, formulas.get(n - 1, {}), checked, id_column)
               for n, rec in enumerate(df.to_dict("records"), start=1)]
    ids = [None if id_column in formulas.get(i, {}) else _cell(x) for i, x in enumerate(df[id_column])]
    df["item_id"] = pd.Series(ids, index=df.index, dtype=object)  # object: None stays None, not NaN
    df["prediction"] = [str(x) if not _missing(x) else "nan" for x in df["prediction"]]  # upstream str(x)
    df[REFUSED] = pd.Series(refused, index=df.index, dtype=object)
    return df


def read_lmms_samples(path: Path) -> pd.DataFrame:
    """An lmms-eval `--log_samples` file, one JSON object per line: `doc_id`, `filtered_resps` (the
    scored reply; a list when a doc had several requests, the first is taken), else `resps`, plus
    `target`, `input` and the task's per-metric fields. Columns: index (= doc_id), prediction, and the
    fields of `doc` when a record has one (older lmms-eval, and `g2u export`); otherwise pass --data."""
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read this .jsonl file ({type(exc).__name__}: {exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {number} is not JSON ({exc.msg})") from None
        if not isinstance(rec, dict) or "doc_id" not in rec:
            raise ValueError(f"{path}: line {number} is not an lmms-eval sample (no doc_id)")
        doc = rec.get("doc") if isinstance(rec.get("doc"), dict) else {}
        reply = rec["filtered_resps"] if "filtered_resps" in rec else rec.get("resps")
        while isinstance(reply, list):
            reply = reply[0] if reply else None
        records.append({**{k: v for k, v in doc.items() if k not in ("index", "prediction")},
                        "index": None if rec["doc_id"] is None else str(rec["doc_id"]), "prediction": reply})
    return pd.DataFrame(records or None, columns=None if records else ["index", "prediction"], dtype=object)


def _column_name(name: Any) -> str:
    """VLMEvalKit: every column name lower-cased except single capital letters (option columns)."""
    text = str(name)
    return text if len(text) == 1 and text in string.ascii_uppercase else text.lower()


def _read_xlsx(path: Path) -> tuple[pd.DataFrame, dict[int, dict[str, str]]]:
    """The first sheet (header on its first row, blank rows skipped, as pandas reads it) and, per data
    row position, its formula cells {column: formula text}."""
    import openpyxl
    from openpyxl.worksheet.formula import ArrayFormula, DataTableFormula

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=False, keep_links=False)
        try:
            sheet = book.worksheets[0]
            sheet.reset_dimensions()  # a stale <dimension> would cut rows off
            cells = [[(c.value, c.data_type == "f" or isinstance(c.value, (ArrayFormula, DataTableFormula)))
                      for c in row] for row in sheet.iter_rows()]
        finally:
            book.close()
    except Exception as exc:  # openpyxl raises BadZipFile, KeyError, InvalidFileException ... on damaged files
        raise ValueError(f"{path}: not a readable .xlsx file ({type(exc).__name__}: {exc})") from None
    cells = [row for row in cells if any(v is not None for v, _ in row)]
    if not cells:
        raise ValueError(f"{path}: the first sheet is empty")
    width = max(len(row) for row in cells)
    header = [v for v, _ in cells[0]] + [None] * (width - len(cells[0]))
    columns = [f"Unnamed: {i}" if v is None else str(v) for i, v in enumerate(header)]
    values, formulas = [], {}
    for pos, row in enumerate(cells[1:]):
        row = row + [(None, False)] * (width - len(row))
        found = {_column_name(col): _formula_text(v) for col, (v, is_formula) in zip(columns, row) if is_formula}
        if found:
            formulas[pos] = found
        values.append([_formula_text(v) if is_formula else v for v, is_formula in row])
    return pd.DataFrame(values, columns=columns, dtype=object), formulas


def _formula_text(value: Any) -> str:
    return getattr(value, "text", None) or str(value)  # ArrayFormula keeps its text in .text


def _refusal(number: int, rec: dict[str, Any], formulas: dict[str, str], checked: list[str],
             id_column: str) -> str | None:
    """Why prediction row `number` (1-based, header excluded) is not scored, else None."""
    why = [f"{col} is a spreadsheet formula {short_text(text)}" for col, text in formulas.items()]
    for col in checked:
        value = rec.get(col)
        if col not in formulas and isinstance(value, str) and _FORMULA_TEXT.match(value):
            why.append(f"{col} is formula-like text {short_text(value)}")
    if id_column not in formulas and _cell(rec.get(id_column)) is None:
        why.append(f"empty {id_column}")
    return f"row {number}: " + "; ".join(why) + "; not scored" if why else None


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


@dataclasses.dataclass
class Data:
    """The benchmark data of `--data`: items that can be scored, and why the others cannot."""

    items: dict[str, Item]
    refused: dict[str, str]  # item id -> the loader's reason (the `items` suite's rules)
    ids: list[str]  # every item id, in file order


@dataclasses.dataclass
class Coverage:
    """What one evaluation covers: n_predicted = n_scored + n_refused, always."""

    n_expected: int
    n_predicted: int
    n_scored: int
    missing: list[str]
    refused: list[dict[str, Any]]  # {item_id, reason}
    with_data: bool


def load_data(label: str, data_path: str) -> Data:
    """The data file's items through the declaration's loader, with the pipeline's rules: an item the
    loader flags (answer not among the options, empty question, malformed row, ...), a duplicated id or
    a missing gold answer is refused, never scored."""
    items = load_benchmark_spec(label, data_path, benchmark=label)
    counts = Counter(it.item_id for it in items)
    usable: dict[str, Item] = {}
    refused: dict[str, list[str]] = {}
    for it in items:
        why = [e for e in [it.extra.get("load_error")] if e]
        if counts[it.item_id] > 1:
            why.append(f"item_id {it.item_id!r} appears {counts[it.item_id]} times in the benchmark data")
        if it.answer is None:
            why.append("gold answer missing")
        if why:
            refused.setdefault(it.item_id, []).extend(w for w in why if w not in refused.get(it.item_id, []))
        else:
            usable[it.item_id] = it
    return Data(usable, {k: "; ".join(v) for k, v in refused.items()}, list(counts))


def _join(spec: BenchmarkSpec, table: pd.DataFrame, data: Data | None, path: str) -> tuple[list[Row], Coverage]:
    refused = [{"item_id": i, "reason": why} for i, why in zip(table["item_id"], table[REFUSED]) if why]
    usable = table[[why is None for why in table[REFUSED]]]
    ids = [str(x) for x in usable["item_id"]]
    dupes = sorted(i for i, k in Counter(ids).items() if k > 1)
    if dupes:
        raise ValueError(f"{path}: duplicate item ids {dupes[:5]}")
    if data is None:
        if "question" not in table.columns:
            raise ValueError(f"{path} holds no question column: pass the benchmark data (--data)")
        rows = [_row_from_columns(spec, rec) for rec in usable.to_dict("records")]
        return rows, Coverage(len(table), len(table), len(rows), [], refused, with_data=False)
    unknown = [i for i in ids if i not in data.items and i not in data.refused]
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} prediction(s) not in the benchmark data, e.g. {unknown[:5]}")
    rows = []
    for i, prediction in zip(ids, usable["prediction"]):
        if i in data.refused:
            refused.append({"item_id": i, "reason": f"the benchmark data refuses item {i!r}: {data.refused[i]}"})
        else:
            rows.append(row_from_item(data.items[i], prediction))
    predicted = {str(i) for i in table["item_id"] if i is not None}
    missing = [i for i in data.ids if i not in predicted]
    return rows, Coverage(len(data.ids), len(table), len(rows), missing, refused, with_data=True)


def with_coverage(label: str, records: list[dict[str, Any]], cov: Coverage) -> list[dict[str, Any]]:
    """`records` plus the coverage record; when coverage is incomplete, every computed metric becomes
    `partial` (its value covers the scored items only, as VLMEvalKit scores the rows it is given)."""
    complete = not cov.missing and not cov.refused
    whole = "items of the benchmark data" if cov.with_data else "rows of the result file (no --data)"
    gaps = []
    if cov.missing:
        gaps.append(f"{len(cov.missing)} without a prediction ({_listed(cov.missing)})")
    if cov.refused:
        gaps.append(f"{len(cov.refused)} refused ({_listed([r['item_id'] for r in cov.refused])})")
    summary = f"scored {cov.n_scored} of {cov.n_expected} {whole}" + (f": {', '.join(gaps)}" if gaps else "")
    value = cov.n_scored / cov.n_expected if cov.n_expected else None
    status = "not_computed" if value is None else "ok" if complete else "partial"
    coverage = record(label, "coverage", value, cov.n_scored, FRACTION, status, summary)
    coverage.update(n_expected=cov.n_expected, n_predicted=cov.n_predicted, n_scored=cov.n_scored,
                    n_missing=len(cov.missing), n_refused=len(cov.refused), missing=list(cov.missing),
                    refused=list(cov.refused))
    if complete:
        return [*records, coverage]
    note = f"partial: {summary}; the value covers the scored items only"
    marked = [{**r, "status": "partial" if r["status"] == "ok" else r["status"],
               "note": f"{r['note']}; {note}" if r["note"] else note} for r in records]
    return [*marked, coverage]


def _listed(ids: list[str | None]) -> str:
    shown = ", ".join(repr(i) if i is not None else "no id" for i in ids[:_LISTED])
    return shown + (f", ... {len(ids) - _LISTED} more (see the coverage record)" if len(ids) > _LISTED else "")


def row_from_item(item: Item, prediction: str) -> Row:
    """A prediction joined with its item, ready for a suite's scorer."""
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


def records_json(records: list[dict[str, Any]]) -> str:
    """The CLI's JSON: {benchmark, metric, value, n, unit, status, note} per record (plus the coverage
    counts and lists on the coverage record, and run keys when present)."""
    keep = ("benchmark", "metric", "value", "n", "unit", "status", "note", *COVERAGE_KEYS, *GROUP_COLUMNS)
    return json.dumps([{k: r[k] for k in keep if k in r} for r in records], indent=2)
