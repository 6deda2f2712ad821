"""`g2u evaluate`: score predictions made elsewhere (a VLMEvalKit result file, an lmms-eval sample
log, or our Parquet)."""
from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from g2u_tasks.scoring.evaluate import GROUP_COLUMNS, evaluate_predictions, records_json
from g2u_tasks.scoring.judge import JudgeSpec

BenchmarkOpt = Annotated[str, typer.Option("--benchmark", "-b", help="benchmark name or alias, e.g. MME")]
PredictionsOpt = Annotated[str, typer.Option("--predictions", "-p",
                                             help="VLMEvalKit result (.xlsx/.tsv/.csv), lmms-eval "
                                                  "*_samples_*.jsonl, or our .parquet")]
DataOpt = Annotated[Optional[str], typer.Option("--data", help="benchmark data file (default: the original "
                                                               "columns inside the predictions file)")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table | json")]
JudgeUrlOpt = Annotated[Optional[str], typer.Option("--judge-base-url",
                                                    help="OpenAI-compatible endpoint of the LLM judge")]
JudgeModelOpt = Annotated[Optional[str], typer.Option("--judge-model",
                                                      help="judge model (default: VLMEvalKit's per benchmark)")]
_SHOWN_REFUSED = 10  # refused rows listed on stderr
JudgeKeyOpt = Annotated[str, typer.Option("--judge-api-key-env", help="environment variable with the judge key")]


def evaluate(benchmark: BenchmarkOpt, predictions: PredictionsOpt, data: DataOpt = None, fmt: FormatOpt = "table",
             judge_base_url: JudgeUrlOpt = None, judge_model: JudgeModelOpt = None,
             judge_api_key_env: JudgeKeyOpt = "OPENAI_API_KEY") -> None:
    """Score a predictions file exactly as VLMEvalKit would; optional LLM judge."""
    if fmt not in ("table", "json"):
        raise typer.BadParameter("--format must be table or json")
    if judge_model and not judge_base_url:
        raise typer.BadParameter("--judge-model needs --judge-base-url")
    try:
        judge = JudgeSpec(base_url=judge_base_url, model=judge_model, api_key_env=judge_api_key_env) \
            if judge_base_url else None
        records = evaluate_predictions(benchmark, predictions, data, judge)
    except (ValueError, OSError) as exc:  # bad input files: one line naming the file, exit code 2
        typer.echo(f"error: {' '.join(str(exc).splitlines())}", err=True)
        raise typer.Exit(2) from None
    for r in records:  # stderr: keeps the JSON on stdout clean
        if r["metric"] == "coverage" and r["status"] != "ok":
            where = " ".join([r["benchmark"], *(f"{k}={r[k]}" for k in GROUP_COLUMNS if k in r)])
            typer.echo(f"warning: {where}: {r['note']}; its metrics are marked {r['status']}", err=True)
            for refused in r["refused"][:_SHOWN_REFUSED]:
                typer.echo(f"  refused {refused['item_id']}: {refused['reason']}", err=True)
            if len(r["refused"]) > _SHOWN_REFUSED:
                typer.echo(f"  ... {len(r['refused']) - _SHOWN_REFUSED} more refused (--format json lists all)", err=True)
    if fmt == "json":
        typer.echo(records_json(records))
        return
    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"{benchmark} — {predictions}")
    run_keys = [k for k in GROUP_COLUMNS if any(k in r for r in records)]
    for col in (*run_keys, "metric", "value", "n", "unit", "status", "note"):
        table.add_column(col, justify="right" if col in ("value", "n") else "left")
    for r in records:
        value = "—" if r["value"] is None else f"{r['value']:.4f}" if r["unit"] == "fraction" else f"{r['value']:.2f}"
        table.add_row(*(str(r.get(k, "")) for k in run_keys), r["metric"], value, str(r["n"]), r["unit"],
                      r["status"], r["note"])
    console.print(table)
