"""Great Expectations validation: one JSON suite per table in expectations/; failing rows are
split off with their reasons (for quarantine), the rest pass on."""
from __future__ import annotations

import json
import logging
import os
import re
import threading
from functools import cache
from pathlib import Path

import polars as pl

EXPECTATIONS_DIR = Path(os.environ.get("G2U_EXPECTATIONS_DIR", Path(__file__).resolve().parents[2] / "expectations"))
_LOCK = threading.Lock()
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # identifiers in a pandas row condition


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
def _suite_json(table: str) -> dict:
    return json.loads((EXPECTATIONS_DIR / f"{table}.json").read_text())


@cache
def load_suite(table: str):
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    data = _suite_json(table)
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
    """`column: reason (value: 'first 200 characters')`. An expectation's meta `value` may instead ask
    for the whole cell (`whole`: the cell is a message, e.g. an image error) or for one field of a JSON
    cell as the reason itself (`field:NAME`: e.g. the loader's own message in `extra`)."""
    kw, meta = cfg.kwargs, cfg.meta or {}
    where = kw.get("column") or ",".join(kw.get("column_list", []))
    why, show = meta.get("reason", cfg.type), meta.get("value", "quote")
    if _missing(value):
        return f"{where}: {why}"
    if show == "whole":
        return f"{where}: {why}: {value}"
    if show.startswith("field:"):
        message = json.loads(value).get(show.removeprefix("field:")) if isinstance(value, str) else None
        if message:
            return str(message)
    return f"{where}: {why} (value: {str(value)[:200]!r})"


def _leads(cfg) -> bool:
    """A cell's own message (`field:`) leads the row's reasons."""
    return str((cfg.meta or {}).get("value", "")).startswith("field:")


@cache
def suite_columns(table: str) -> frozenset[str]:
    """Every column an expectation of the suite reads (its column(s), names in its row condition)."""
    names: set[str] = set()
    for expectation in _suite_json(table)["expectations"]:
        kw = expectation["kwargs"]
        names.update([kw["column"]] if kw.get("column") else kw.get("column_list", []))
        names.update(_NAME.findall(kw.get("row_condition") or ""))
    return frozenset(names)


def validate(table: str, frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows passing every expectation, failing rows with a `reasons` column).

    Only the columns the suite reads are handed to Great Expectations (as pandas), so wide text
    columns such as prompts are never copied for it. An expectation that cannot run (e.g. a
    missing column) is a table-level error and raises."""
    if frame.is_empty():
        return frame, frame.with_columns(pl.lit(None, pl.String).alias("reasons"))
    read = suite_columns(table)
    pdf = frame.select([c for c in frame.columns if c in read]).to_pandas(use_pyarrow_extension_array=False)
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
            row = reasons.setdefault(i, [])
            text = _describe(r.expectation_config, value)
            row.insert(0, text) if _leads(r.expectation_config) else row.append(text)
    bad_idx = sorted(reasons)
    if not bad_idx:  # the frame itself, not a filtered copy
        return frame, frame.clear().with_columns(pl.lit(None, pl.String).alias("reasons"))
    flagged = frame.with_row_index("_row")
    good = flagged.filter(~pl.col("_row").is_in(bad_idx)).drop("_row")
    bad = flagged.filter(pl.col("_row").is_in(bad_idx)).with_columns(
        pl.col("_row").map_elements(lambda i: "; ".join(reasons[i]), return_dtype=pl.String).alias("reasons")
    ).drop("_row")
    return good, bad
