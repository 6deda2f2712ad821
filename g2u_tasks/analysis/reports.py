"""Reports, one per question: SQL files in sql/ and Python-backed statistics (resampling, plots) registered
in PYTHON_REPORTS; rendered as tables, Markdown, CSV or JSON, and written with their figures to a folder."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import duckdb
import polars as pl

from g2u_tasks.analysis import statistics as analysis

from g2u_tasks.analysis import plots

from g2u_tasks.analysis import summary

SQL_DIR = Path(os.environ.get("G2U_SQL_DIR", Path(__file__).resolve().parents[2] / "sql"))
DEFAULT_REPORT = "gain_over_baseline"
Figures = Callable[[analysis.RunData, pl.DataFrame, Path], list[Path]]


@dataclass(frozen=True)
class PythonReport:
    question: str
    table: Callable[[analysis.RunData], pl.DataFrame]
    figures: Figures
    page: Callable[[analysis.RunData, pl.DataFrame, list[Path]], str] | None = None  # replaces the Markdown table


PYTHON_REPORTS: dict[str, PythonReport] = {
    "gain_ci": PythonReport(
        "Does imagining help beyond noise? Gain over baseline per benchmark x condition x mode with a paired "
        "bootstrap 95% CI, McNemar p, fixed/broken items and the official headline metric.",
        analysis.gain_ci, plots.gain_ci_figures),
    "fidelity_gain": PythonReport(
        "Does generative fidelity bound the gain? Gain per PSNR bin (CI) per family and Spearman rho between "
        "fidelity and per-item gain.",
        analysis.fidelity_gain, plots.fidelity_figures),
    "family_oracle": PythonReport(
        "Which edit family transfers best, and how good would choosing per item be? Family gains (CI), the oracle "
        "family's accuracy and the generation cost per point of gain.",
        analysis.family_oracle, plots.family_figures),
    "self_direction": PythonReport(
        "Can the model decide what to imagine? Chosen families, parse failures, agreement with the oracle, "
        "stability across seeds and gain over baseline (CI).",
        analysis.self_direction, plots.self_direction_figures),
    "self_vs_families": PythonReport(
        "Does the model's own choice beat fixed choices? Self-directed vs baseline, each fixed family and the "
        "oracle, with CI.",
        analysis.self_vs_families, plots.self_vs_families_figures),
    "summary": PythonReport(
        "What did this run find? Each finding in one sentence with its numbers.",
        summary.findings, summary.summary_figures, summary.page),
}


def list_reports() -> dict[str, str]:
    """name -> the question it answers (first comment line of a SQL file, or the Python report's question)."""
    out = {}
    for path in sorted(SQL_DIR.glob("*.sql")):
        first = path.read_text().splitlines()[0] if path.read_text() else ""
        out[path.stem] = first.lstrip("- ").strip()
    out.update({name: rep.question for name, rep in PYTHON_REPORTS.items()})
    return dict(sorted(out.items()))


def report_sql(name: str) -> str:
    path = SQL_DIR / f"{name}.sql"
    if not path.exists():
        raise ValueError(f"unknown report {name!r}; known: {', '.join(list_reports())}")
    return path.read_text()


def latest_run(con: duckdb.DuckDBPyConnection) -> str | None:
    rows = con.execute("SELECT run_id FROM runs ORDER BY finished_at DESC NULLS LAST LIMIT 1").fetchall()
    row = rows[0] if rows else None
    return row[0] if row else None


def run_report(con: duckdb.DuckDBPyConnection, name: str, run_id: str | None = None) -> pl.DataFrame:
    """The report's rows, restricted to one run (the latest by default) when it has a run_id column."""
    if name in PYTHON_REPORTS:
        return PYTHON_REPORTS[name].table(analysis.load_run(con, run_id or latest_run(con)))
    sql = report_sql(name).strip().rstrip(";")
    frame = con.sql(sql).pl()
    if "run_id" in frame.columns:
        run_id = run_id or latest_run(con)
        frame = frame.filter(pl.col("run_id") == run_id) if run_id is not None else frame.clear()
    return frame


def run_header(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> str:
    run_id = run_id or latest_run(con)
    row = con.execute(
        "SELECT run_id, dataset_version, generator, understander, notes, n_items FROM runs WHERE run_id = ?",
        [run_id],
    ).fetchall()
    row = row[0] if row else None
    if not row:
        return "no run in the warehouse yet"
    head = f"run {row[0]} · dataset v{row[1]} · generator {row[2]} · understander {row[3]} · {row[5]} items"
    return head + (f"\nNOTE: {row[4]}" if row[4] else "")


def render(frame: pl.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return frame.write_csv()
    if fmt == "json":
        return json.dumps(frame.to_dicts(), indent=2, default=str)
    if fmt == "md":
        cols = frame.columns
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in frame.iter_rows()]
        return "\n".join(lines)
    raise ValueError(f"unknown format {fmt!r}; use table, md, csv or json")


def write_report(con: duckdb.DuckDBPyConnection, name: str, out_dir: str | Path,
                 run_id: str | None = None) -> tuple[pl.DataFrame, list[Path]]:
    """Write NAME.md, NAME.csv, NAME.json and the report's PNG figures to out_dir; returns (rows, paths)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = PYTHON_REPORTS.get(name)
    if rep is None:
        frame, figures = run_report(con, name, run_id), []
    else:
        data = analysis.load_run(con, run_id or latest_run(con))
        frame = rep.table(data)
        figures = rep.figures(data, frame, out_dir)
    header = run_header(con, run_id)
    markdown = (rep.page(data, frame, figures) if rep is not None and rep.page else
                f"## {name}\n\n{list_reports().get(name, '')}\n\n{header}\n\n{render(frame, 'md')}\n")
    written = []
    for suffix, text in (("md", markdown), ("csv", render(frame, "csv")), ("json", render(frame, "json"))):
        path = out_dir / f"{name}.{suffix}"
        path.write_text(text)
        written.append(path)
    return frame, written + figures
