"""What a stage keeps on local disk instead of in memory: its items' images, its thought rows.

A stage holds its items for the whole run, but a batch needs an item's image bytes only while it
runs. `ImageSpool.slim` writes an item's images to an unnamed temporary file (gone when the spool
closes, or when the process dies) and returns the item without them; `with_images` reads them back
when a batch is built (batching.in_batches), so only the batches in flight hold image bytes.
`RowSpool` holds the thought rows of a materialisation until its one commit reads them back."""
from __future__ import annotations

import dataclasses
import os
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq

from g2u_tasks.records import THOUGHTS_SCHEMA, Item


class ImageSpool:
    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()
        self._end = 0
        self._where: dict[str, tuple[tuple[int, int], ...]] = {}  # item ref -> (offset, length) per image

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ImageSpool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def slim(self, item: Item) -> Item:
        """The item without its image bytes, which the spool keeps."""
        spans = []
        for data in item.images:
            os.pwrite(self._file.fileno(), data, self._end)
            spans.append((self._end, len(data)))
            self._end += len(data)
        self._where[item.ref] = tuple(spans)
        return dataclasses.replace(item, images=())

    def with_images(self, item: Item) -> Item:
        """The item with its image bytes back (items the spool never saw are returned as they are)."""
        spans = self._where.get(item.ref)
        if not spans:
            return item
        images = tuple(os.pread(self._file.fileno(), length, offset) for offset, length in spans)
        return dataclasses.replace(item, images=images)


class RowSpool:
    """Thought rows of one materialisation in a Parquet file in `folder` (a temporary one), not in
    memory, until the one commit reads them back batch by batch. Rows reach the file ROW_GROUP_ROWS
    at a time: a row group per generated batch would make the file's metadata grow with the run."""

    ROW_GROUP_ROWS = 4096

    def __init__(self, folder: str):
        self.path = os.path.join(folder, "thoughts.parquet")
        self._writer: pq.ParquetWriter | None = None
        self._held: list[pa.Table] = []

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._held.append(table.select(THOUGHTS_SCHEMA.names).cast(THOUGHTS_SCHEMA))
            if sum(t.num_rows for t in self._held) >= self.ROW_GROUP_ROWS:
                self._flush()

    def _flush(self) -> None:
        if self._held:
            self._writer = self._writer or pq.ParquetWriter(self.path, THOUGHTS_SCHEMA)
            self._writer.write_table(pa.concat_tables(self._held), row_group_size=self.ROW_GROUP_ROWS)
            self._held = []

    def rows(self) -> pq.ParquetFile | None:
        """Every row written (None when there is none); no more can be written."""
        self._flush()
        if self._writer is None:
            return None
        self._writer.close()
        return pq.ParquetFile(self.path)
