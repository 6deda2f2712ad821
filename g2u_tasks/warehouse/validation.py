"""Great Expectations validation: one JSON suite per table in expectations/; failing rows are
split off with their reasons (for quarantine), the rest pass on."""
from __future__ import annotations

import json
import logging
import os
import threading
from functools import cache
from pathlib import Path

import polars as pl

EXPECTATIONS_DIR = Path(os.environ.get("G2U_EXPECTATIONS_DIR", Path(__file__).resolve().parents[2] / "expectations"))
_LOCK = threading.Lock()


@cache
def _batch_definition():
    import great_expectations as gx  # slow import: only when validating

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = ctx.data_sources.add_pandas("g2u").add_dataframe_asset("frame")
    return asset.add_batch_definition_whole_dataframe("whole")


@cache
def load_suite(table: str):
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    path = EXPECTATIONS_DIR / f"{table}.json"
    data = json.loads(path.read_text())
    return ExpectationSuite(name=data["name"], expectations=[ExpectationConfiguration(**e) for e in data["expectations"]])


def _raised(info: dict) -> str | None:
    """The exception message GE recorded, flat or per metric, if any."""
    for entry in [info, *info.values()]:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return entry.get("exception_message") or "unknown error"
    return None


def _missing(value) -> bool:
    import pandas as pd

    return value is None or (not isinstance(value, (list, dict)) and bool(pd.isna(value)))


def _describe(cfg, value) -> str:
    kw = cfg.kwargs
    where = kw.get("column") or ",".join(kw.get("column_list", []))
    why = (cfg.meta or {}).get("reason", cfg.type)
    shown = "" if _missing(value) else f" (value: {str(value)[:200]!r})"
    return f"{where}: {why}{shown}"


def validate(table: str, frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows passing every expectation, failing rows with a `reasons` column).

    An expectation that cannot run (e.g. a missing column) is a table-level error and raises."""
    if frame.is_empty():
        return frame, frame.with_columns(pl.lit(None, pl.String).alias("reasons"))
    pdf = frame.to_pandas(use_pyarrow_extension_array=False)
    with _LOCK:  # the ephemeral context is shared per process
        result = _batch_definition().get_batch(batch_parameters={"dataframe": pdf}).validate(
            load_suite(table), result_format="COMPLETE"
        )
    reasons: dict[int, list[str]] = {}
    for r in result.results:
        error = _raised(r.exception_info)
        if error:
            raise ValueError(f"table {table}: expectation {r.expectation_config.type} could not run: {error}")
        if r.success:
            continue
        idx = r.result.get("unexpected_index_list") or []
        col = r.expectation_config.kwargs.get("column")
        for i in idx:
            i = int(i) if not isinstance(i, dict) else int(next(iter(i.values())))
            value = pdf.at[i, col] if col in pdf.columns else None
            reasons.setdefault(i, []).append(_describe(r.expectation_config, value))
    bad_idx = sorted(reasons)
    flagged = frame.with_row_index("_row")
    good = flagged.filter(~pl.col("_row").is_in(bad_idx)).drop("_row")
    bad = flagged.filter(pl.col("_row").is_in(bad_idx)).with_columns(
        pl.col("_row").map_elements(lambda i: "; ".join(reasons[i]), return_dtype=pl.String).alias("reasons")
    ).drop("_row")
    return good, bad
