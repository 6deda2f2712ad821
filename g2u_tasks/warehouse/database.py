"""DuckDB warehouse: derived from the store, loaded idempotently.

Each load replaces the rows it supersedes (same key) inside one transaction, so re-running a job
never duplicates a row; a run's large parts are staged first, committed part by part (STAGE_SCHEMA)."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Iterable, Iterator

import duckdb
import polars as pl
import pyarrow as pa

from g2u_tasks.records import SCHEMAS
from g2u_tasks.warehouse import views

LOG = logging.getLogger(__name__)

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


# A read-only connection (g2u query, reports) reaches nothing but the warehouse file: no files
# read or written elsewhere, no ATTACH, no extensions installed or loaded, and the settings locked
# so that a query cannot turn them back on.
READ_ONLY_SETTINGS = {
    "enable_external_access": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "lock_configuration": True,
}
LOCK_WAIT_ENV = "G2U_WAREHOUSE_LOCK_WAIT_S"
DEFAULT_LOCK_WAIT_S = 60.0
# Row groups of the read-write warehouse (DuckDB default 122,880): see `_attach_read_write`.
ROW_GROUP_ROWS = 16_384
# DuckDB's buffer pool during a load (default 80% of RAM: blocks written stay cached, so a load's
# memory grew with the run); what does not fit spills to `<warehouse>.tmp`, as DuckDB does for a file.
LOAD_MEMORY_LIMIT = "128MB"


class WarehouseLockedError(RuntimeError):
    """Another process holds the warehouse's write lock (a notebook, a long `g2u query`, a load)."""


class WarehouseWriteError(RuntimeError):
    """A load that could not be written (disk full, file too large, not writable); nothing was loaded."""


def _lock_holder(err: duckdb.Error) -> str | None:
    """The holder DuckDB names in a lock error: "Conflicting lock is held in PROGRAM (PID N)"."""
    found = re.search(r"held in (.+?) \(PID (\d+)\)", str(err))
    return f"PID {found.group(2)} ({Path(found.group(1)).name})" if found else None


def _is_lock_error(err: duckdb.Error) -> bool:
    return "Could not set lock" in str(err) or "Conflicting lock" in str(err)


def connect(path: str | Path, read_only: bool = False, lock_wait_s: float | None = None) -> duckdb.DuckDBPyConnection:
    """A read-write connection (tables created/migrated), or a read-only, sandboxed one.

    A lock held by another process is waited for, up to `lock_wait_s` (default: $G2U_WAREHOUSE_LOCK_WAIT_S
    or 60 s), retrying with backoff; then WarehouseLockedError names the holder."""
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.exists():
        raise FileNotFoundError(f"warehouse not found: {path} (run `g2u run` first)")
    wait = float(os.environ.get(LOCK_WAIT_ENV, DEFAULT_LOCK_WAIT_S)) if lock_wait_s is None else lock_wait_s
    deadline, delay = time.monotonic() + wait, 0.25
    while True:
        try:
            con = (duckdb.connect(str(path), read_only=True, config=READ_ONLY_SETTINGS) if read_only
                   else _attach_read_write(path))
            break
        except duckdb.IOException as err:
            if not _is_lock_error(err):
                raise
            if time.monotonic() >= deadline:
                holder = _lock_holder(err) or "another process"
                raise WarehouseLockedError(f"warehouse {path} is locked by {holder}; waited {wait:g} s "
                                           f"(set {LOCK_WAIT_ENV} to wait longer)") from None
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 5.0)
    try:
        if not read_only:
            ensure_tables(con)
        ensure_views(con, temporary=read_only)
    except duckdb.Error as err:
        con.close()
        if _is_write_failure(err):
            raise WarehouseWriteError(f"warehouse {path} not writable, nothing was loaded: {_cause(err)}") from err
        raise
    return con


def _attach_read_write(path: Path) -> duckdb.DuckDBPyConnection:
    """The warehouse attached under its usual catalog name (the file's stem) with row groups of
    `ROW_GROUP_ROWS`: a transaction's inserted rows stay in memory only until they fill a row group
    (then DuckDB writes them to the file ahead of the commit), so the load's one move-in
    transaction holds a bounded number of rows however large the run."""
    con = duckdb.connect()
    try:
        name = '"' + path.stem.replace('"', '""') + '"'
        con.execute(f"ATTACH ? AS {name} (ROW_GROUP_SIZE {ROW_GROUP_ROWS})", [str(path)])
        con.execute(f"USE {name}")
        # an in-memory connection would spill to `.tmp` in the working directory
        con.execute("SET temp_directory = ?", [f"{path}.tmp"])
    except BaseException:
        con.close()
        raise
    return con


def _is_write_failure(err: BaseException) -> bool:
    """DuckDB's ways of saying a write did not reach the disk (full device, file size limit, read-only)."""
    text = str(err).lower()
    return isinstance(err, (duckdb.IOException, duckdb.TransactionException)) and (
        "could not write" in text or "no space" in text or "too large" in text or "failed to commit" in text)


def _cause(err: BaseException) -> str:
    return str(err).splitlines()[0].removeprefix("TransactionContext Error: ")


def ensure_views(con: duckdb.DuckDBPyConnection, temporary: bool = False) -> None:
    """The shared views reports select from (sql/models/); TEMP on a read-only connection."""
    views.ensure_views(con, {name: table_schema(name) for name in SCHEMAS}, temporary)


def require_views(con: duckdb.DuckDBPyConnection) -> None:
    """The shared views on a connection not opened through `connect`: created as TEMP views when absent."""
    if not views.have_views(con):
        ensure_views(con, temporary=True)


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


SLICE_ROWS = 4096  # rows of a table converted to Arrow and handed to DuckDB at once


def _arrow(name: str, data: pa.Table | pl.DataFrame, columns: Iterable[str] | None = None) -> pa.Table:
    """`data` in the table's schema (only `columns` of it, those `data` has, when given)."""
    schema = table_schema(name)
    if columns is not None:
        have = set(data.columns if isinstance(data, pl.DataFrame) else data.schema.names)
        schema = pa.schema([schema.field(c) for c in columns if c in have])
    picked = data.select(schema.names)
    return (picked.to_arrow() if isinstance(picked, pl.DataFrame) else picked).cast(schema)


def _slices(name: str, data: pa.Table | pl.DataFrame, columns: Iterable[str] | None = None) -> Iterator[pa.Table]:
    """`data` as Arrow, SLICE_ROWS rows at a time (one empty slice for an empty table)."""
    rows = data.height if isinstance(data, pl.DataFrame) else data.num_rows
    for start in range(0, max(rows, 1), SLICE_ROWS):
        yield _arrow(name, data.slice(start, SLICE_ROWS), columns)


def _insert(con: duckdb.DuckDBPyConnection, name: str, arrow: pa.Table) -> None:
    con.register("_new", arrow)
    cols = ", ".join(f'"{c}"' for c in arrow.schema.names)
    con.execute(f"INSERT INTO {name} ({cols}) SELECT {cols} FROM _new")
    con.unregister("_new")


# A load's parts wait here, each committed on its own, for the one short transaction that moves them
# into the real tables: a transaction holding every part of a run grows with the run (issue 12). A
# schema of its own, so no report or `main` table sees them; emptied before and dropped after a load.
STAGE_SCHEMA = "g2u_load_stage"


def load(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table | pl.DataFrame],
         before: list[tuple[str, list]] = (),
         parts: dict[str, Iterable[pa.Table | pl.DataFrame]] | None = None,
         keyed_parts: dict[str, Iterable[pa.Table | pl.DataFrame]] | None = None) -> dict[str, int]:
    """Upsert several tables in one transaction (after the `before` statements, in it too); returns
    rows written per table. Each table reaches DuckDB in slices: all its superseded rows are deleted
    first, then the slices are inserted. `parts`: tables appended part by part, never held whole;
    their rows replace nothing (a `before` statement deletes what they supersede), and the runs they
    belong to must be among those `tables` load. `keyed_parts`: tables upserted part by part, never
    held whole, replacing the rows with their keys. Parts are staged first (STAGE_SCHEMA), then moved
    in by the one transaction. A write that fails (disk full) raises WarehouseWriteError, loading nothing.

    The load runs under LOAD_MEMORY_LIMIT; a move-in that needs more (deriving a very large run's
    rows) is rolled back and run again without it, from the staged parts."""
    con.execute(f"SET memory_limit = '{LOAD_MEMORY_LIMIT}'")
    try:
        staged = _stage(con, {**(keyed_parts or {}), **(parts or {})})
        try:
            written = _move_in(con, tables, before, staged, keyed_parts or {})
        except duckdb.OutOfMemoryException:
            LOG.info("warehouse load needs more than %s; moving in again without the limit", LOAD_MEMORY_LIMIT)
            con.execute("RESET memory_limit")
            written = _move_in(con, tables, before, staged, keyed_parts or {})
    except Exception as err:
        if _is_write_failure(err):
            raise WarehouseWriteError(f"warehouse load not written, nothing was loaded: {_cause(err)}") from err
        raise
    finally:
        with contextlib.suppress(duckdb.Error):  # a connection a failure has closed keeps its error
            con.execute("RESET memory_limit")
    con.execute(f"DROP SCHEMA IF EXISTS {STAGE_SCHEMA} CASCADE")
    return written


def _move_in(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table | pl.DataFrame],
             before: list[tuple[str, list]], staged: dict[str, int], keyed: Iterable[str]) -> dict[str, int]:
    """The one transaction of a load: `before`, the small tables, the staged ones, the derived rows.
    Rolled back on any error; returns rows written per table."""
    written = dict(staged)
    con.execute("BEGIN TRANSACTION")
    try:
        for sql, params in before:
            con.execute(sql, params)
        # before the rows they compare with are replaced
        stale = set(views.affected_runs(con, {name: _narrow(name, data) for name, data in tables.items()}))
        for name in keyed:
            if name == "thoughts":  # runs using a thought it changes
                stale.update(views.affected_runs(con, {}, f"{STAGE_SCHEMA}.{name}"))
            _delete_superseded(con, name, [f"{STAGE_SCHEMA}.{name}"])
        for name, data in tables.items():
            _delete_superseded(con, name, _slices(name, data, REPLACE_KEYS[name]))
            written[name] = 0
            for arrow in _slices(name, data):
                _insert(con, name, arrow)
                written[name] += arrow.num_rows
        for name in staged:
            cols = ", ".join(f'"{c}"' for c in con.table(f"{STAGE_SCHEMA}.{name}").columns)
            con.execute(f"INSERT INTO {name} ({cols}) SELECT {cols} FROM {STAGE_SCHEMA}.{name}")
        views.refresh_runs(con, sorted(stale))  # the per-run derived tables reports read, in the same transaction
        con.execute("COMMIT")
    except Exception:
        try:
            con.execute("ROLLBACK")
        except duckdb.TransactionException:
            pass  # no transaction, or a failed COMMIT has already ended it; keep the error that matters
        raise
    return written


def _stage(con: duckdb.DuckDBPyConnection, streams: dict[str, Iterable[pa.Table | pl.DataFrame]]) -> dict[str, int]:
    """Each table's parts appended to an empty staging copy of it, each part committed on its own;
    a killed load's leftovers are dropped first. Returns rows staged per table."""
    con.execute(f"DROP SCHEMA IF EXISTS {STAGE_SCHEMA} CASCADE")
    if not streams:
        return {}
    con.execute(f"CREATE SCHEMA {STAGE_SCHEMA}")
    written = {}
    for name, stream in streams.items():
        con.execute(f"CREATE TABLE {STAGE_SCHEMA}.{name} AS SELECT * FROM {name} LIMIT 0")
        written[name] = 0
        for part in stream:
            arrow = _arrow(name, part)
            _insert(con, f"{STAGE_SCHEMA}.{name}", arrow)
            written[name] += arrow.num_rows
    return written


def _narrow(name: str, data: pa.Table | pl.DataFrame) -> pa.Table:
    """The columns views.affected_runs compares."""
    return _arrow(name, data, ("run_id", "thought_id", *views.THOUGHT_COLUMNS))


def _delete_superseded(con: duckdb.DuckDBPyConnection, name: str, keys: Iterable[pa.Table | str]) -> None:
    """Delete the rows of `name` whose keys (REPLACE_KEYS) these slices (or tables, by name) hold."""
    cond = " AND ".join(f"t.{k} IS NOT DISTINCT FROM n.{k}" for k in REPLACE_KEYS[name])
    for source in keys:
        if isinstance(source, str):
            con.execute(f"DELETE FROM {name} t WHERE EXISTS (SELECT 1 FROM {source} n WHERE {cond})")
            continue
        con.register("_new", source)
        con.execute(f"DELETE FROM {name} t WHERE EXISTS (SELECT 1 FROM _new n WHERE {cond})")
        con.unregister("_new")


def default_path() -> str:
    return os.environ.get("G2U_WAREHOUSE", ".g2u/warehouse.duckdb")
