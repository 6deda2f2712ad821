"""SQL reports: one file per question in sql/; rendered as tables, Markdown, CSV or JSON."""
from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import polars as pl

SQL_DIR = Path(os.environ.get("G2U_SQL_DIR", Path(__file__).resolve().parents[1] / "sql"))
DEFAULT_REPORT = "gain_over_baseline"


def list_reports() -> dict[str, str]:
    """name -> first comment line (the question it answers)."""
    out = {}
    for path in sorted(SQL_DIR.glob("*.sql")):
        first = path.read_text().splitlines()[0] if path.read_text() else ""
        out[path.stem] = first.lstrip("- ").strip()
    return out


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
    sql = report_sql(name).strip().rstrip(";")
    frame = con.sql(sql).pl()
    if "run_id" in frame.columns:
        run_id = run_id or latest_run(con)
        frame = frame.filter(pl.col("run_id") == run_id)
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
