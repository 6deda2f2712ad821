"""`g2u benchmarks …`: the benchmark table (g2u_tasks/benchmarks/table.py) on the command line."""
from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from g2u_tasks.benchmarks.table import SPECS, spec_row

benchmarks_app = typer.Typer(help="The benchmarks this project scores, and how.", no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 160)


@benchmarks_app.callback()
def benchmarks() -> None:
    """The benchmarks this project scores, and how (a group, even with one command)."""


@benchmarks_app.command("list")
def list_benchmarks(
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json")] = "table",
) -> None:
    """Every benchmark spec: names, formats, question types, metric suite, judge."""
    rows = [spec_row(spec) for spec in SPECS]
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    if fmt != "table":
        raise typer.BadParameter(f"unknown format {fmt!r} (table | json)", param_hint="--format")
    table = Table(title="Benchmarks")
    for column in ("name", "aliases", "formats", "question types", "extraction", "metric suite", "judge"):
        table.add_column(column)
    for row in rows:
        qtypes = row["question_type"] or "per item: " + ", ".join(row["question_types"])
        judge = row["judge"] if row["judge_model"] is None else f"{row['judge']} ({row['judge_model']})"
        table.add_row(row["name"], ", ".join(row["aliases"]), ", ".join(row["formats"]), qtypes,
                      row["extraction"], row["metric_suite"], judge)
    console.print(table)
