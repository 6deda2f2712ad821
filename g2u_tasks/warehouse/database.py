"""DuckDB warehouse (DESIGN §5): derived from the store, loaded idempotently.

Each load replaces the rows it supersedes (same key) inside one transaction, so re-running a job
never duplicates a row."""
from __future__ import annotations

import os
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from g2u_tasks.records import SCHEMAS

# table -> columns identifying the rows a new load replaces
REPLACE_KEYS = {
    "items": ["benchmark", "item_id"],
    "thoughts": ["thought_id"],
    "predictions": ["run_id"],
    "metrics": ["run_id"],
    "runs": ["run_id"],
    "quarantine": ["run_id", "stage"],
}
EXTRA_COLUMNS = {"thoughts": [("dataset_version", pa.int64())]}


def table_schema(name: str) -> pa.Schema:
    schema = SCHEMAS[name]
    for field_name, typ in EXTRA_COLUMNS.get(name, []):
        schema = schema.append(pa.field(field_name, typ))
    return schema


def connect(path: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.exists():
        raise FileNotFoundError(f"warehouse not found: {path} (run `g2u run` first)")
    con = duckdb.connect(str(path), read_only=read_only)
    if not read_only:
        ensure_tables(con)
    return con


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create missing tables; add columns that newer schemas introduced (additive migration)."""
    for name in SCHEMAS:
        empty = table_schema(name).empty_table()
        con.register("_empty", empty)
        con.execute(f"CREATE TABLE IF NOT EXISTS {name} AS SELECT * FROM _empty")
        have = {r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()}
        types = {r[0]: r[1] for r in con.execute("DESCRIBE SELECT * FROM _empty").fetchall()}
        for col in table_schema(name).names:
            if col not in have:
                con.execute(f'ALTER TABLE {name} ADD COLUMN "{col}" {types[col]}')
        con.unregister("_empty")


def load(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table | pl.DataFrame]) -> dict[str, int]:
    """Upsert several tables in one transaction; returns rows written per table."""
    written = {}
    con.execute("BEGIN TRANSACTION")
    try:
        for name, data in tables.items():
            arrow = data.to_arrow() if isinstance(data, pl.DataFrame) else data
            arrow = arrow.select(table_schema(name).names).cast(table_schema(name))
            con.register("_new", arrow)
            cols = ", ".join(f'"{c}"' for c in arrow.schema.names)
            keys = REPLACE_KEYS[name]
            cond = " AND ".join(f"t.{k} IS NOT DISTINCT FROM n.{k}" for k in keys)
            con.execute(f"DELETE FROM {name} t WHERE EXISTS (SELECT 1 FROM _new n WHERE {cond})")
            con.execute(f"INSERT INTO {name} ({cols}) SELECT {cols} FROM _new")
            con.unregister("_new")
            written[name] = arrow.num_rows
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return written


def default_path() -> str:
    return os.environ.get("G2U_WAREHOUSE", ".g2u/warehouse.duckdb")
