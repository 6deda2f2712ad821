"""The thoughts a run's items use, at the run's dataset version, validated and loaded slice by
slice straight from the manifest's files (ThoughtStore.manifest_slices), never all held: a first
pass validates each slice with the `thoughts` suite (without the wide prompt and key columns) and
keeps only the ids that failed and their quarantine rows; the load reads the slices again, whole,
without those rows. Every row of one thought_id is in one slice, so the suite's uniqueness check
sees all of them at once."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import polars as pl

from g2u_tasks.records import THOUGHTS_SCHEMA
from g2u_tasks.store.thought_store import ThoughtStore
from g2u_tasks.warehouse.quarantine import quarantine_row
from g2u_tasks.warehouse.validation import validate


# what validation reads of a thought (and a quarantine row keeps): all but the two widest columns, the
# prompt and the key (60% of a row; both stay in the manifest under the thought_id), which only the load reads
VALIDATED_COLUMNS = [c for c in THOUGHTS_SCHEMA.names if c not in ("prompt", "key_json")]


@dataclass
class CheckedThoughts:
    store: ThoughtStore
    dataset_version: int | None  # None: the latest version
    items: pl.DataFrame  # the run's (benchmark, item_id)
    failed: set[str] = field(default_factory=set)  # thought ids with a row failing the suite
    quarantine: list[dict] = field(default_factory=list)  # their quarantine rows

    def slices(self, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        """The run's thoughts (the manifest rows of its items), a slice at a time, with the
        dataset_version column the warehouse keeps; `columns`: only those."""
        used = pl.struct("benchmark", "item_id").is_in(self.items.select(pl.struct("benchmark", "item_id")).to_series().implode())
        for part in self.store.manifest_slices(self.dataset_version, where=used, columns=columns):
            yield part.with_columns(pl.lit(self.dataset_version, pl.Int64).alias("dataset_version"))

    def good_slices(self) -> Iterator[pl.DataFrame]:
        """The slices without the rows that failed validation (those are in `quarantine`)."""
        for part in self.slices():
            yield part.filter(pl.col("thought_id").is_not_null() & ~pl.col("thought_id").is_in(list(self.failed)))


def check_thoughts(store: ThoughtStore, run_id: str, dataset_version: int | None,
                   items: pl.DataFrame) -> CheckedThoughts:
    """Validate the run's thoughts slice by slice, keeping only which failed and their quarantine rows."""
    checked = CheckedThoughts(store, dataset_version, items.select("benchmark", "item_id"))
    for part in checked.slices(VALIDATED_COLUMNS):
        _, bad = validate("thoughts", part)
        checked.failed.update(t for t in bad["thought_id"].to_list() if t is not None)
        checked.quarantine += [quarantine_row(run_id, "thoughts", r.get("benchmark"), r.get("item_id"), r["reasons"],
                                              {k: v for k, v in r.items() if k != "reasons"})
                               for r in bad.iter_rows(named=True)]
    return checked
