"""Reports, one per question: SQL files in sql/ (selecting one run's rows, `$run_id`, from the shared views in
sql/models/) and Python-backed statistics (resampling, plots) registered in PYTHON_REPORTS over the same views;
rendered as tables, Markdown, CSV or JSON, and written with their figures to a folder."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import duckdb
import polars as pl

from g2u_tasks.analysis import plots
from g2u_tasks.analysis import statistics as analysis
from g2u_tasks.analysis import summary
from g2u_tasks.warehouse import database as warehouse
from g2u_tasks.warehouse.views import SQL_DIR
DEFAULT_REPORT = "gain_over_baseline"
Figures = Callable[[analysis.RunData, pl.DataFrame, Path], list[Path]]


@dataclass(frozen=True)
class PythonReport:
    question: str
    table: Callable[[analysis.RunData], pl.DataFrame]
    figures: Figures
    page: Callable[[analysis.RunData, pl.DataFrame, list[Path]], str] | None = None  # replaces the Markdown table
    parts: tuple[str, ...] = analysis.PARTS  # what of the run it reads (load_run reads nothing else)


PYTHON_REPORTS: dict[str, PythonReport] = {
    "gain_ci": PythonReport(
        "Does imagining help beyond noise? Gain over baseline per benchmark x condition x mode over the items "
        "paired with the baseline (n_paired; n_missing and why), with a paired bootstrap 95% CI, McNemar p, "
        "fixed/broken items and the official headline metric.",
        analysis.gain_ci, plots.gain_ci_figures, parts=("pair_cells", "missing_cells", "official")),
    "fidelity_gain": PythonReport(
        "Does generative fidelity bound the gain? Gain per PSNR bin (CI) per family and Spearman rho between "
        "fidelity and per-item gain.",
        analysis.fidelity_gain, plots.fidelity_figures, parts=("fidelity_cells", "fidelity_ranks")),
    "family_oracle": PythonReport(
        "Which edit family transfers best, and how good would choosing per item be? Paired family gains (CI), the "
        "oracle family's accuracy and the generation cost per point of gain (mean_gen_seconds: each thought's "
        "share of its generator call's device time).",
        analysis.family_oracle, plots.family_figures, parts=("pair_cells", "missing_cells", "oracle_cells", "oracle_winners", "costs")),
    "self_direction": PythonReport(
        "Can the model decide what to imagine? Chosen families, parse failures, agreement with the oracle, "
        "stability across seeds and gain over baseline (CI).",
        analysis.self_direction, plots.self_direction_figures, parts=("plans", "pairs", "missing", "oracle")),
    "self_vs_families": PythonReport(
        "Does the model's own choice beat fixed choices? Self-directed vs baseline, each fixed family and the "
        "oracle, with CI.",
        analysis.self_vs_families, plots.self_vs_families_figures, parts=("plans", "pairs", "missing", "oracle")),
    "summary": PythonReport(
        "What did this run find? Each finding in one sentence with its numbers.",
        summary.findings, summary.summary_figures, summary.page,
        parts=("pairs", "missing", "pair_cells", "missing_cells", "oracle", "oracle_cells", "oracle_winners",
               "fidelity_cells", "fidelity_ranks", "official", "costs", "plans")),
}


def list_reports() -> dict[str, str]:
    """name -> the question it answers (first comment line of a SQL file, or the Python report's question)."""
    out = {}
    for path in sorted(SQL_DIR.glob("*.sql")):
        first = path.read_text().splitlines()[0] if path.read_text() else ""
        out[path.stem] = first.lstrip("- ").strip()
    out.update({name: rep.question for name, rep in PYTHON_REPORTS.items()})
    return dict(sorted(out.items()))


DETAIL_DIR = SQL_DIR / "detail"  # per-item rows behind a summary report, shown only when asked (`detail`)


def report_sql(name: str, detail: bool = False) -> str:
    path = SQL_DIR / f"{name}.sql"
    if not path.exists():
        raise ValueError(f"unknown report {name!r}; known: {', '.join(list_reports())}")
    if detail:
        path = DETAIL_DIR / f"{name}.sql"
        if not path.exists():
            raise ValueError(f"report {name!r} has no per-item detail; reports with one: {', '.join(detail_reports())}")
    return path.read_text()


def detail_reports() -> list[str]:
    return sorted(p.stem for p in DETAIL_DIR.glob("*.sql"))


def latest_run(con: duckdb.DuckDBPyConnection) -> str | None:
    warehouse.require_views(con)
    rows = con.execute("SELECT run_id FROM stg_runs ORDER BY finished_at DESC NULLS LAST LIMIT 1").fetchall()
    row = rows[0] if rows else None
    return row[0] if row else None


def run_report(con: duckdb.DuckDBPyConnection, name: str, run_id: str | None = None,
               detail: bool = False) -> pl.DataFrame:
    """The report's rows for one run (the latest by default); SQL reports select it themselves (`$run_id`).
    Reports are summaries; `detail` gives the per-item rows behind one (sql/detail/NAME.sql) instead."""
    warehouse.require_views(con)
    if name in PYTHON_REPORTS and detail:
        raise ValueError(f"report {name!r} has no per-item detail; reports with one: {', '.join(detail_reports())}")
    if name in PYTHON_REPORTS:
        rep = PYTHON_REPORTS[name]
        return rep.table(analysis.load_run(con, run_id or latest_run(con), parts=rep.parts))
    sql = report_sql(name, detail).strip().rstrip(";")
    return con.sql(sql, params={"run_id": run_id or latest_run(con)}).pl()


def run_header(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> str:
    warehouse.require_views(con)
    run_id = run_id or latest_run(con)
    row = con.execute(
        "SELECT run_id, dataset_version, generator, understander, notes, n_items FROM stg_runs WHERE run_id = ?",
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
                 run_id: str | None = None, detail: bool = False) -> tuple[pl.DataFrame, list[Path]]:
    """Write NAME.md, NAME.csv, NAME.json and the report's PNG figures to out_dir; returns (rows, paths)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = PYTHON_REPORTS.get(name)
    if rep is None or detail:
        frame, figures = run_report(con, name, run_id, detail), []
    else:
        # figures read more than their table: the parts of every report's figures (the summary's)
        parts = tuple(dict.fromkeys([*rep.parts, *PYTHON_REPORTS["summary"].parts]))
        data = analysis.load_run(con, run_id or latest_run(con), parts=parts)
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
