"""`g2u export`: a run's predictions as a VLMEvalKit result table or lmms-eval sample logs."""
from __future__ import annotations

from typing import Annotated

import typer

from g2u_tasks.scoring.export import FORMATS, export_run
from g2u_tasks.warehouse import database as warehouse

FormatOpt = Annotated[str, typer.Option("--format", "-f", help=" | ".join(FORMATS))]
OutOpt = Annotated[str, typer.Option("--out", "-o", help="folder to write the files under")]
WarehouseOpt = Annotated[str, typer.Option("--warehouse", "-w", help="DuckDB file")]


def export(run_id: str, fmt: FormatOpt = "vlmevalkit", out: OutOpt = "exports",
           warehouse_path: WarehouseOpt = warehouse.default_path()) -> None:
    """Write RUN_ID's predictions (per benchmark x condition x mode) for other harnesses."""
    if fmt not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    con = warehouse.connect(warehouse_path, read_only=True)
    try:
        written = export_run(con, run_id, fmt, out)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        con.close()
    for path in written:
        typer.echo(str(path))
