"""`g2u export`: a run's predictions as other harnesses write them, so `g2u evaluate` (or the other
harness) can score them again.

One file per benchmark x condition x mode (x seed, when the run has several seeds), from the warehouse
(`predictions` joined with `items`):

- vlmevalkit: `<out>/<condition>_<mode>/<model>_<benchmark>.xlsx`, VLMEvalKit's result table: the
  dataset columns (index, question, A.., answer, category, hint, then every `extra` field) plus
  `prediction` (the raw output). Text cells are written as text, never as formulas.
- lmms-eval: `<out>/<condition>_<mode>/<model>/<run_id>_samples_<benchmark>.jsonl`, one record per item
  as lmms-eval's --log_samples writes it (doc_id, target, filtered_resps, input, doc_hash), plus `doc`
  (the same dataset columns, as lmms-eval before 0.4 logged it) and `g2u` (our extracted answer and
  verdict). doc_id is the item id (an int when it is one).

`g2u evaluate --benchmark B --predictions FILE` reads both back without --data.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import duckdb

FORMATS = ("vlmevalkit", "lmms-eval")
_CORE = ("index", "question", "answer", "category", "hint")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def export_run(con: duckdb.DuckDBPyConnection, run_id: str, fmt: str, out: str | Path) -> list[Path]:
    """Write run `run_id`'s predictions in `fmt` under `out`; returns the files written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
    frame = con.sql(
        """SELECT p.benchmark, p.item_id, p.condition, p.mode, p.seed, p.understander, p.prompt, p.raw_output,
                  p.extracted_answer, p.correct, i.question, i.options, i.answer, i.category, i.hint, i.extra
           FROM predictions p LEFT JOIN items i ON i.benchmark = p.benchmark AND i.item_id = p.item_id
           WHERE p.run_id = ?""", params=[run_id]).pl()
    if frame.is_empty():
        raise ValueError(f"run {run_id!r} has no predictions in the warehouse")
    several_seeds = frame["seed"].drop_nulls().n_unique() > 1  # baseline rows may carry no seed
    written = []
    keys = ["benchmark", "condition", "mode", "seed"]
    for (benchmark, condition, mode, seed), part in frame.group_by(keys, maintain_order=True):
        folder = Path(out) / _safe(f"{condition}_{mode}" + (f"_seed{seed}" if several_seeds and seed is not None else ""))
        model = _safe(str(part["understander"][0] or "model"))
        rows = sorted(part.iter_rows(named=True), key=lambda r: _id_order(r["item_id"]))
        if fmt == "vlmevalkit":
            path = folder / f"{model}_{_safe(benchmark)}.xlsx"
            _write_xlsx(path, [{**dataset_columns(r), "prediction": r["raw_output"]} for r in rows])
        else:
            path = folder / model / f"{_safe(run_id)}_samples_{_safe(benchmark)}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(lmms_sample(r), ensure_ascii=False) + "\n" for r in rows),
                            encoding="utf-8")
        written.append(path)
    return written


def dataset_columns(row: dict[str, Any]) -> dict[str, Any]:
    """An item as VLMEvalKit dataset columns: index, question, option letters, answer, category, hint,
    then its extra fields (non-text values as JSON text)."""
    options = json.loads(row["options"] or "{}")
    extra = json.loads(row["extra"] or "{}")
    cols: dict[str, Any] = {"index": row["item_id"], "question": row["question"], **options,
                            "answer": row["answer"], "category": row["category"], "hint": row["hint"]}
    for key, value in extra.items():
        if key not in cols and key not in ("prediction", "load_error") and not (len(key) == 1 and key.isupper()):
            cols[key] = value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return {k: v for k, v in cols.items() if v is not None}


def lmms_sample(row: dict[str, Any]) -> dict[str, Any]:
    doc = dataset_columns(row)
    return {
        "doc_id": int(row["item_id"]) if row["item_id"].isdigit() else row["item_id"],
        "target": str(row["answer"]),
        "filtered_resps": row["raw_output"],
        "input": row["prompt"],
        "doc_hash": hashlib.sha256(json.dumps(doc, indent=2, ensure_ascii=False).encode()).hexdigest(),
        "doc": doc,
        "g2u": {"extracted_answer": row["extracted_answer"], "correct": row["correct"]},
    }


def _write_xlsx(path: Path, records: list[dict[str, Any]]) -> None:
    import openpyxl

    columns = list(dict.fromkeys(k for r in records for k in r))
    columns = [c for c in columns if c != "prediction"] + ["prediction"]
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(columns)
    for r in records:
        sheet.append([r.get(c) for c in columns])
    for row in sheet.iter_rows(min_row=2):
        for cell in row:
            if isinstance(cell.value, str) and cell.data_type == "f":
                cell.data_type = "s"  # a reply such as "=1+1" stays text, never a formula
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)


def _id_order(item_id: str) -> tuple:
    return (0, int(item_id), "") if item_id.isdigit() else (1, 0, item_id)


def _safe(name: str) -> str:
    return _SAFE.sub("_", name).strip("_") or "_"
