"""A Delta commit whose memory does not grow with its rows: the rows are written as Parquet parts
(batch by batch, PART_ROWS rows per file at most) into the table's folder, then the parts are
added to the table in ONE transaction, so a commit is still one Delta version. delta-rs's own
writers (write_deltalake, MERGE) hold about the committed rows' size while they write.

A commit never retries inside delta-rs (max_commit_retries=0): when another writer took the next
version, the caller re-reads the table and writes again (ThoughtStore.commit), so each key keeps
at most one ok row. The parts of a commit that did not land are removed; a killed writer's parts
are never referenced by the log, so readers never see them."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from contextlib import suppress
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Schema, write_deltalake
from deltalake.transaction import AddAction, create_table_with_add_actions

PART_ROWS = 65536  # rows per data file
ROW_GROUP_ROWS = 4096  # at most, per row group: a batch reaches the file as it comes


def write_parts(fs: Any, folder: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> list[AddAction]:
    """`batches` as Parquet files in `folder` (an fsspec path on `fs`); their add actions."""
    actions: list[AddAction] = []
    writer, handle, name, rows = None, None, "", 0

    def close() -> None:
        writer.close()
        handle.close()
        stats = json.dumps({"numRecords": rows})
        actions.append(AddAction(name, fs.size(f"{folder}/{name}"), {}, int(time.time() * 1000), True, stats))

    try:
        for batch in batches:
            while batch.num_rows:
                if writer is not None and rows == PART_ROWS:
                    close()
                    writer = None
                if writer is None:
                    name, rows = f"part-{uuid.uuid4().hex}.snappy.parquet", 0
                    handle = fs.open(f"{folder}/{name}", "wb")
                    writer = pq.ParquetWriter(handle, schema, compression="snappy")
                piece, batch = batch.slice(0, PART_ROWS - rows), batch.slice(PART_ROWS - rows)
                writer.write_batch(piece, row_group_size=ROW_GROUP_ROWS)
                rows += piece.num_rows
        if writer is not None:
            close()
    except BaseException:
        for open_one in (writer, handle):
            if open_one is not None:
                with suppress(Exception):
                    open_one.close()
        remove_parts(fs, folder, [*(a.path for a in actions), *([name] if name else [])])
        raise
    return actions


def commit_parts(uri: str, dt: DeltaTable | None, schema: pa.Schema, actions: list[AddAction],
                 storage_options: dict[str, str] | None, custom: dict[str, str]) -> int:
    """Add the parts to the table in one transaction (creating the table when `dt` is None); the
    version committed. Fails (CommitFailedError or "already exists") when another writer committed
    first."""
    props = CommitProperties(custom_metadata=custom, max_commit_retries=0)
    if dt is None:
        create_table_with_add_actions(uri, Schema.from_arrow(schema), actions, mode="error",
                                      storage_options=storage_options, commit_properties=props)
        return 0
    base = dt.version()
    dt.create_write_transaction(actions, mode="append", schema=schema, commit_properties=props)
    return base + 1  # no retry inside delta-rs: the version after the one it built on


def lacks_columns(dt: DeltaTable, schema: pa.Schema) -> bool:
    """The table was written before some of `schema`'s columns existed."""
    return not set(schema.names) <= set(dt.schema().to_arrow().names)


def append_evolving(dt: DeltaTable, rows: pa.RecordBatchReader, custom: dict[str, str]) -> int:
    """Append `rows` to a table that lacks some of their columns, adding them (older rows read them
    as null) in the same one version. delta-rs holds the rows while it writes: once per table,
    the first commit after the schema grew. Fails like commit_parts on a lost race."""
    base = dt.version()
    write_deltalake(dt, rows, mode="append", schema_mode="merge",
                    commit_properties=CommitProperties(custom_metadata=custom, max_commit_retries=0))
    return base + 1  # no retry inside delta-rs: the version after the one it built on


def remove_parts(fs: Any, folder: str, names: Iterable[str]) -> None:
    for name in names:
        with suppress(FileNotFoundError, OSError):
            fs.rm_file(f"{folder}/{name}")
