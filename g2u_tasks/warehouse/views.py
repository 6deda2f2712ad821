"""The warehouse's shared views, in two layers.

Staging views `stg_<table>` select every column of the table's current schema, typed NULL where an older
warehouse lacks it, so the models never depend on when a warehouse was made. The models are the files in
sql/models/ (one view each, named after the file, first line its purpose), created in MODELS order.

A read-write connection stores the views in the warehouse; a read-only one gets them as TEMP views, which
shadow any stored ones, so an older warehouse answers with today's definitions.

The per-item models that every report reads (DERIVED) are also persisted per run, at load time: a table
`derived_<model>` keyed by run_id, and the stored view `<model>` selects from it, so a report reads a few
thousand rows instead of re-deriving a million predictions. `derived_state` records the hash of the definitions
the tables were built with: a read-write connection rebuilds them when it differs (an older warehouse, a newer
model, a migrated column); a read-only connection uses them only when it matches, else it falls back to TEMP
views computed live, as above."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pyarrow as pa

SQL_DIR = Path(os.environ.get("G2U_SQL_DIR", Path(__file__).resolve().parents[2] / "sql"))
MODELS_DIR = SQL_DIR / "models"
# dependency order: each model reads only staging views and the models before it
MODELS = (
    "thought_variants", "run_thoughts", "prediction_units", "baseline_units", "paired_units", "paired_items",
    "missing_units", "missing_items", "paired_gains", "thought_gains", "fidelity_cells", "fidelity_ranks",
    "oracle_items", "official_gains", "run_costs", "run_fidelity",
)
PROBE = MODELS[-1]


def model_sql(name: str) -> str:
    return (MODELS_DIR / f"{name}.sql").read_text().strip().rstrip(";")


def staging_sqls(con: duckdb.DuckDBPyConnection, schemas: dict[str, pa.Schema]) -> dict[str, str]:
    """Per table: the SELECT of every schema column; columns (or a whole table) it lacks read as typed NULL.
    One catalog query for every table: a report opens the warehouse with these."""
    have: dict[str, set[str]] = {}
    for table, column in con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE schema_name = 'main' "
            "AND database_name = current_database() AND NOT internal").fetchall():
        have.setdefault(table, set()).add(column)
    out = {}
    for table, schema in schemas.items():
        empty = con.from_arrow(schema.empty_table())
        found = have.get(table, set())
        cols = ", ".join(f'"{c}"' if c in found else f'CAST(NULL AS {t}) AS "{c}"'
                         for c, t in zip(empty.columns, map(str, empty.types)))
        out[table] = f"SELECT {cols} FROM {table}" if found else f"SELECT {cols} WHERE false"
    return out


# persisted per run (derived_<model>); in dependency order, as in MODELS
DERIVED = ("run_thoughts", "paired_items", "missing_items", "paired_gains", "thought_gains", "fidelity_cells",
           "fidelity_ranks", "oracle_items", "run_costs", "run_fidelity")
STATE = "derived_state"
RUN_TABLES = ("predictions", "metrics", "runs", "quarantine")  # the tables keyed by run_id
# thought columns the models read: a reloaded thought whose values here change re-derives the runs using it
THOUGHT_COLUMNS = ("benchmark", "item_id", "family", "prompt_source", "generator", "seed", "status", "error",
                   "plan_status", "chosen_family", "psnr", "ssim", "embed_sim", "gen_seconds", "generator_params")


def definitions(con: duckdb.DuckDBPyConnection, schemas: dict[str, pa.Schema]) -> tuple[dict[str, str], str]:
    """The staging SELECTs of this warehouse and the hash of everything the derived tables depend on."""
    staging = staging_sqls(con, schemas)
    text = "\n".join([*staging.values(), *(model_sql(m) for m in MODELS), *DERIVED])
    return staging, hashlib.sha256(text.encode()).hexdigest()


def state(con: duckdb.DuckDBPyConnection) -> str | None:
    """The definitions hash the derived tables were built with (None: none built)."""
    if not con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = ? AND NOT temporary", [STATE]).fetchall():
        return None
    row = con.execute(f"SELECT digest FROM {STATE}").fetchall()
    return row[0][0] if row else None


def ensure_views(con: duckdb.DuckDBPyConnection, schemas: dict[str, pa.Schema], temporary: bool) -> None:
    """(Re)create the staging views and the models; read-write: (re)build the derived tables when stale."""
    staging, digest = definitions(con, schemas)
    current = state(con) == digest
    if temporary:
        if current:
            return  # the stored views and derived tables are today's: nothing to shadow
        for table, sql in staging.items():
            con.execute(f"CREATE OR REPLACE TEMP VIEW stg_{table} AS {sql}")
        for name in MODELS:
            con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {model_sql(name)}")
        return
    if current:
        return
    con.execute("SET enable_progress_bar = false")  # a rebuild inside `g2u run` must not draw on its output
    con.execute("BEGIN TRANSACTION")
    try:
        for table, sql in staging.items():
            con.execute(f"CREATE OR REPLACE VIEW stg_{table} AS {sql}")
        for name in MODELS:
            if name in DERIVED:  # every run at once; later models read it through its view
                con.execute(f"CREATE OR REPLACE TABLE derived_{name} AS {model_sql(name)}")
                con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM derived_{name}")
            else:
                con.execute(f"CREATE OR REPLACE VIEW {name} AS {model_sql(name)}")
        con.execute(f"CREATE OR REPLACE TABLE {STATE} AS SELECT ?::VARCHAR AS digest", [digest])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def affected_runs(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table],
                  staged_thoughts: str | None = None) -> list[str]:
    """Before a load: the runs whose derived rows it changes (runs it loads, and runs using a thought whose
    columns the models read change); empty when the warehouse has no derived tables. `staged_thoughts`: a
    table of new thoughts already in the warehouse (a load's staging table), besides `tables`' own."""
    if state(con) is None:
        return []
    runs = {r for name in RUN_TABLES if name in tables for r in tables[name].column("run_id").to_pylist()}
    new = tables.get("thoughts")
    if new is not None and new.num_rows:
        cols = [c for c in THOUGHT_COLUMNS if c in new.schema.names]
        con.register("_thoughts_new", new.select(["thought_id", *cols]))
        runs |= _runs_using_changed(con, "_thoughts_new", cols)
        con.unregister("_thoughts_new")
    if staged_thoughts is not None:
        have = set(con.table(staged_thoughts).columns)
        runs |= _runs_using_changed(con, staged_thoughts, [c for c in THOUGHT_COLUMNS if c in have])
    return sorted(r for r in runs if r is not None)


def _runs_using_changed(con: duckdb.DuckDBPyConnection, new: str, cols: list[str]) -> set[str]:
    """The runs using a thought of table `new` that is new or whose `cols` differ from the stored row."""
    differs = " OR ".join(f'n."{c}" IS DISTINCT FROM o."{c}"' for c in cols) or "false"
    return {r[0] for r in con.execute(f"""
        SELECT DISTINCT r.run_id FROM derived_run_thoughts r
        JOIN {new} n ON n.thought_id = r.thought_id
        LEFT JOIN stg_thoughts o ON o.thought_id = n.thought_id
        WHERE o.thought_id IS NULL OR {differs}""").fetchall()}


def refresh_runs(con: duckdb.DuckDBPyConnection, run_ids: Iterable[str]) -> None:
    """Re-derive these runs' rows of every derived table (inside the caller's transaction)."""
    run_ids = list(run_ids)
    if not run_ids or state(con) is None:
        return
    for name in DERIVED:
        con.execute(f"DELETE FROM derived_{name} WHERE run_id IN (SELECT unnest(?::VARCHAR[]))", [run_ids])
        con.execute(f"INSERT INTO derived_{name} SELECT * FROM ({model_sql(name)}) "
                    f"WHERE run_id IN (SELECT unnest(?::VARCHAR[]))", [run_ids])


def have_views(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(con.execute("SELECT 1 FROM duckdb_views() WHERE view_name = ?", [PROBE]).fetchall())
