"""The `g2u` command line (DESIGN §7)."""
from __future__ import annotations

import sys
from typing import Annotated, Optional

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from g2u_tasks.analysis import reports

from g2u_tasks.warehouse import database as warehouse
from g2u_tasks.config import load_config

app = typer.Typer(help="Generation-to-Understanding: visual thoughts, understanding passes, reports.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(width=None if sys.stdout.isatty() else 160)

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a config key: key.sub=value")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table | md | csv | json")]
WarehouseOpt = Annotated[str, typer.Option("--warehouse", "-w", help="DuckDB file")]


def _show(frame: pl.DataFrame, fmt: str, title: str | None = None) -> None:
    if fmt != "table":
        typer.echo(reports.render(frame, fmt))
        return
    table = Table(title=title, show_lines=False)
    for col in frame.columns:
        table.add_column(col, justify="right" if frame[col].dtype.is_numeric() else "left")
    for row in frame.iter_rows():
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def _report(warehouse_path: str, name: str, run_id: str | None, fmt: str, out: str | None = None) -> None:
    """Show a report; with `out`, also write its files (and figures) there."""
    con = warehouse.connect(warehouse_path, read_only=True)
    try:
        if out is None:
            frame, written = reports.run_report(con, name, run_id), []
        else:
            frame, written = reports.write_report(con, name, out, run_id)
        header = reports.run_header(con, run_id)
    finally:
        con.close()
    if fmt == "table":
        console.print(f"[bold]{name}[/bold] — {reports.list_reports().get(name, '')}")
        console.print(header)
        frame = frame.drop("run_id", strict=False)  # the header names the run
    _show(frame, fmt)
    for path in written:
        typer.echo(f"wrote {path}", err=True)  # stderr: keeps csv/json on stdout clean


@app.command()
def run(config: str, set_: SetOpt = None, report_name: str = reports.DEFAULT_REPORT) -> None:
    """The main job: materialise -> understand -> validate -> load -> report."""
    from flows.pipeline import g2u_pipeline

    cfg = load_config(config, set_)
    result = g2u_pipeline(cfg.model_dump(mode="json"), report_name)
    console.print(
        f"dataset v{result['dataset_version']}: {result['generated']} thought(s) generated, "
        f"{result['reused']} reused, {result.get('recovered', 0)} recovered from an interrupted run, "
        f"{result['failed']} failed · run {result['run_id']}"
    )
    _report(cfg.warehouse, report_name, result["run_id"], "table")


@app.command()
def materialise(config: str, set_: SetOpt = None) -> None:
    """Generate missing thoughts only; prints the dataset version."""
    from flows.pipeline import materialise_thoughts

    cfg = load_config(config, set_)
    m = materialise_thoughts(cfg.model_dump(mode="json"))
    console.print(f"{m['generated']} generated, {m['reused']} reused, {m['failed']} failed")
    typer.echo(m["dataset_version"])


@app.command()
def understand(config: str, dataset_version: Annotated[int, typer.Option("--dataset-version")],
               set_: SetOpt = None) -> None:
    """Understanding passes against a pinned dataset version, then validate and load."""
    from flows.pipeline import run_understanding, validate_and_load

    cfg = load_config(config, set_)
    run_id = run_understanding(cfg.model_dump(mode="json"), dataset_version)
    validate_and_load(cfg.model_dump(mode="json"), run_id, dataset_version)
    typer.echo(run_id)


@app.command()
def report(name: Annotated[Optional[str], typer.Argument()] = None, fmt: FormatOpt = "table",
           run_id: Annotated[Optional[str], typer.Option("--run-id")] = None,
           warehouse_path: WarehouseOpt = warehouse.default_path(),
           list_: Annotated[bool, typer.Option("--list", help="list the reports")] = False,
           out: Annotated[Optional[str], typer.Option(
               "--out", help="also write NAME.md/.csv/.json and the report's PNG figures to this folder")] = None) -> None:
    """Render a report (SQL from sql/ or Python-backed statistics; default: gain over baseline) for a run
    (default: latest); `g2u report summary --out DIR` writes the one-page summary with its figures."""
    if list_:
        _show(pl.DataFrame({"report": list(reports.list_reports()), "question": list(reports.list_reports().values())}),
              fmt)
        return
    _report(warehouse_path, name or reports.DEFAULT_REPORT, run_id, fmt, out)


@app.command()
def query(sql: str, fmt: FormatOpt = "table", warehouse_path: WarehouseOpt = warehouse.default_path()) -> None:
    """Ad-hoc SQL over the warehouse (read-only)."""
    con = warehouse.connect(warehouse_path, read_only=True)
    try:
        frame = con.sql(sql).pl()
    finally:
        con.close()
    _show(frame, fmt)


def _register_subcommands() -> None:
    from flows.cli_benchmarks import benchmarks_app
    from flows.cli_dataset import dataset_app
    from flows.cli_evaluate import evaluate

    app.command(help="Score predictions made elsewhere (e.g. a VLMEvalKit result file) with the reference rules.")(
        evaluate)
    app.add_typer(dataset_app, name="dataset", help="Versions, diffs, verification and releases of the thought dataset.")
    app.add_typer(benchmarks_app, name="benchmarks", help="The benchmarks G2U can load and score.")


_register_subcommands()

if __name__ == "__main__":
    app()
