"""The `g2u` command line: run, materialise, understand, report, query, evaluate, dataset, benchmarks."""
from __future__ import annotations

import shlex
import sys
from typing import Annotated, Optional

import polars as pl
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from g2u_tasks import jobs
from g2u_tasks.analysis import reports

from g2u_tasks.warehouse import database as warehouse
from g2u_tasks.config import ConfigError, RunConfig, check_before_work, load_config


class UserError(Exception):
    """An error the user can act on, printed as one line `error: …` (exit code `code`)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# Errors that are about the input or the machine, not a bug: one line, no traceback (unless --debug).
_ONE_LINE = {ConfigError: 2, warehouse.WarehouseLockedError: 1, warehouse.WarehouseWriteError: 1,
             jobs.RunNotLoadedError: 1}


class G2UGroup(TyperGroup):
    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except (UserError, *_ONE_LINE) as err:
            if ctx.params.get("debug"):
                raise
            code = err.code if isinstance(err, UserError) else next(c for t, c in _ONE_LINE.items()
                                                                   if isinstance(err, t))
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(code) from None


app = typer.Typer(help="Generation-to-Understanding: visual thoughts, understanding passes, reports.",
                  no_args_is_help=True, pretty_exceptions_enable=False, cls=G2UGroup)
console = Console(width=None if sys.stdout.isatty() else 160)


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="show the full traceback of an error")] = False) -> None:
    """Generation-to-Understanding: visual thoughts, understanding passes, reports."""
    from flows.progress import silence_telemetry

    silence_telemetry()  # before any command imports Prefect

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a config key: key.sub=value")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table | md | csv | json")]
WarehouseOpt = Annotated[str, typer.Option("--warehouse", "-w", help="DuckDB file")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="print every Prefect log line (each task's "
                                          "state, progress lines) instead of progress bars")]


def _show(frame: pl.DataFrame, fmt: str, title: str | None = None) -> None:
    if fmt != "table":
        typer.echo(reports.render(frame, fmt))
        return
    # the terminal shows a missing-reason breakdown only where something is missing (other formats: all)
    quiet = [c for c in frame.columns if (c.startswith("missing_") or c == "n_partial")
             and frame[c].dtype.is_numeric() and not (frame[c].fill_null(0) != 0).any()]
    frame = frame.drop(quiet)
    table = Table(title=title, show_lines=False)
    for col in frame.columns:  # fold: long names (missing_failed_thought) wrap rather than lose letters
        table.add_column(col, justify="right" if frame[col].dtype.is_numeric() else "left", overflow="fold")
    for row in frame.iter_rows():
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def _report(warehouse_path: str, name: str, run_id: str | None, fmt: str, out: str | None = None,
            detail: bool = False) -> None:
    """Show a report (its per-item rows with `detail`); with `out`, also write its files (and figures) there."""
    con = warehouse.connect(warehouse_path, read_only=True)
    try:
        if out is None:
            frame, written = reports.run_report(con, name, run_id, detail), []
        else:
            frame, written = reports.write_report(con, name, out, run_id, detail)
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


def _checked_config(config: str, overrides: list[str] | None) -> RunConfig:
    """The config, with everything checkable checked before any work starts."""
    from flows.executor import executor_spec

    cfg = load_config(config, overrides)
    try:
        executor_spec(cfg)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return check_before_work(cfg)


def _load_hint(err: jobs.RunNotLoadedError, config: str, overrides: list[str] | None) -> UserError:
    sets = "".join(f" --set {shlex.quote(o)}" for o in overrides or [])
    return UserError(f"{err}. Its outputs are stored; once the warehouse is free, finish it with: "
                     f"g2u load {err.run_id} --config {shlex.quote(config)}{sets}")


def _summary(result: dict, cfg: RunConfig, report_name: str) -> None:
    """What the run did and where its outputs are, in three lines above the report."""
    recovered = f", {result['recovered']} recovered from an interrupted run" if result.get("recovered") else ""
    loaded = result["loaded"]  # rows per warehouse table
    console.print(f"dataset v{result['dataset_version']}: {result['generated']} thought(s) generated, "
                  f"{result['reused']} reused{recovered}, {result['failed']} failed · run {result['run_id']}",
                  highlight=False)
    console.print(f"{loaded['predictions']} prediction(s), {loaded['quarantine']} quarantined row(s) "
                  f"· warehouse {cfg.warehouse} · store {cfg.store}", highlight=False)
    console.print(f"report {report_name} below · all reports: g2u report --list -w {shlex.quote(cfg.warehouse)}",
                  highlight=False)


@app.command()
def run(config: str, set_: SetOpt = None, report_name: str = reports.DEFAULT_REPORT,
        verbose: VerboseOpt = False) -> None:
    """The main job: materialise -> understand -> validate -> load -> report."""
    from flows.config_ref import ConfigRef
    from flows.local_server import isolated_prefect
    from flows.progress import terminal

    cfg = _checked_config(config, set_)
    # this run's own Prefect home and server, unless PREFECT_API_URL is set
    with terminal(verbose), isolated_prefect():
        from flows.pipeline import g2u_pipeline

        try:
            result = g2u_pipeline(ConfigRef.of(cfg), report_name)
        except jobs.RunNotLoadedError as err:
            raise _load_hint(err, config, set_) from err
    _summary(result, cfg, report_name)
    _report(cfg.warehouse, report_name, result["run_id"], "table")


@app.command()
def materialise(config: str, set_: SetOpt = None, verbose: VerboseOpt = False) -> None:
    """Generate missing thoughts only; prints the dataset version."""
    from flows.config_ref import ConfigRef
    from flows.local_server import isolated_prefect
    from flows.progress import terminal

    cfg = _checked_config(config, set_)
    with terminal(verbose), isolated_prefect():
        from flows.pipeline import materialise_thoughts

        m = materialise_thoughts(ConfigRef.of(cfg))
    console.print(f"{m['generated']} generated, {m['reused']} reused, {m['failed']} failed")
    typer.echo(m["dataset_version"])


@app.command()
def understand(config: str, dataset_version: Annotated[int, typer.Option("--dataset-version")],
               set_: SetOpt = None, verbose: VerboseOpt = False) -> None:
    """Understanding passes against a pinned dataset version, then validate and load."""
    from flows.config_ref import ConfigRef
    from flows.local_server import isolated_prefect
    from flows.progress import terminal

    cfg = _checked_config(config, set_)
    with terminal(verbose), isolated_prefect():
        from flows.pipeline import run_understanding, validate_and_load

        ref = ConfigRef.of(cfg)
        run_id = run_understanding(ref, dataset_version)
        try:
            validate_and_load(ref, run_id, dataset_version)
        except jobs.RunNotLoadedError as err:
            raise _load_hint(err, config, set_) from err
    typer.echo(run_id)


@app.command()
def load(run_id: str, config: Annotated[str, typer.Option("--config", "-c", help="the run's config file")],
         set_: SetOpt = None) -> None:
    """Validate and load a stored run into the warehouse (after a load that could not finish);
    nothing is generated or answered again."""
    from g2u_tasks.warehouse import stage as load_stage

    cfg = load_config(config, set_)
    store = jobs.open_store(cfg)
    try:
        run = store.read_run_table(run_id, "run")
    except FileNotFoundError:
        raise UserError(f"run {run_id} has no stored outputs in {cfg.store} (check the run id and the "
                        "config's store)", code=2) from None
    version = run["dataset_version"][0]
    written = load_stage.load_run(cfg, run_id, version)
    console.print(f"run {run_id} (dataset v{version}) loaded into {cfg.warehouse}: "
                  + ", ".join(f"{k}={v}" for k, v in written.items()))


@app.command()
def report(name: Annotated[Optional[str], typer.Argument()] = None, fmt: FormatOpt = "table",
           run_id: Annotated[Optional[str], typer.Option("--run-id")] = None,
           warehouse_path: WarehouseOpt = warehouse.default_path(),
           list_: Annotated[bool, typer.Option("--list", help="list the reports")] = False,
           out: Annotated[Optional[str], typer.Option(
               "--out", help="also write NAME.md/.csv/.json and the report's PNG figures to this folder")] = None,
           detail: Annotated[bool, typer.Option(
               "--detail", help="the per-item rows behind a summary report (e.g. oracle_family)")] = False) -> None:
    """Render a report (SQL from sql/ or Python-backed statistics; default: gain over baseline) for a run
    (default: latest); `g2u report summary --out DIR` writes the one-page summary with its figures."""
    if list_:
        _show(pl.DataFrame({"report": list(reports.list_reports()), "question": list(reports.list_reports().values())}),
              fmt)
        return
    _report(warehouse_path, name or reports.DEFAULT_REPORT, run_id, fmt, out, detail)


@app.command()
def query(sql: str, fmt: FormatOpt = "table", warehouse_path: WarehouseOpt = warehouse.default_path()) -> None:
    """Ad-hoc SQL over the warehouse (read-only: nothing outside the warehouse is read or written,
    no database attached, no extension installed or loaded)."""
    import duckdb

    con = warehouse.connect(warehouse_path, read_only=True)
    try:
        relation = con.sql(sql)
        frame = relation.pl() if relation is not None else pl.DataFrame()
    except duckdb.PermissionException as err:
        raise UserError(f"refused: g2u query reads the warehouse only ({_first_line(err)})", code=2) from None
    except duckdb.Error as err:
        raise UserError(_first_line(err), code=2) from None
    finally:
        con.close()
    _show(frame, fmt)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _register_subcommands() -> None:
    from flows.cli_benchmarks import benchmarks_app
    from flows.cli_dataset import dataset_app
    from flows.cli_evaluate import evaluate
    from flows.cli_export import export

    app.command(help="Score predictions made elsewhere (e.g. a VLMEvalKit result file) with the reference rules.")(
        evaluate)
    app.command(help="Write a run's predictions as VLMEvalKit or lmms-eval files.")(export)
    app.add_typer(dataset_app, name="dataset", help="Versions, diffs, verification and releases of the thought dataset.")
    app.add_typer(benchmarks_app, name="benchmarks", help="The benchmarks G2U can load and score.")


_register_subcommands()

if __name__ == "__main__":
    app()
