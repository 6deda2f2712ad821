"""The understanding stage: items -> tasks (item x condition x mode x seed) pinned to one dataset
version -> answers in batches -> the run's files in the store (items, predictions part by part,
quarantine, run).
The Prefect flow and plain callers run this same sequence; only the `Batching` differs."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterator

import polars as pl
import pyarrow as pa

from g2u_tasks import jobs
from g2u_tasks.backends import registry
from g2u_tasks.batching import Batching, in_batches
from g2u_tasks.config import ModelSpec, RunConfig
from g2u_tasks.records import Item
from g2u_tasks.spool import ImageSpool
from g2u_tasks.store.thought_store import ThoughtStore
from g2u_tasks.thoughts import planning
from g2u_tasks.thoughts.families import EditFamily
from g2u_tasks.thoughts.stage import recorded_thoughts
from g2u_tasks.understanding.understand import UnderstandTask, plan_understanding, understand_batch
from g2u_tasks.warehouse.quarantine import quarantine_table

PLAN_CHUNK = 512  # items whose thought keys and tasks are planned at once
MANIFEST_COLUMNS = ("thought_id", "status", "blob_uri", "error")  # what planning tasks reads


def answer_batch(batch: list[UnderstandTask], store: ThoughtStore, understander_spec: ModelSpec, run_id: str):
    return understand_batch(store, understander_spec, run_id, batch)


def describe_understander(spec: ModelSpec) -> tuple[str, str | None]:
    """Load the understander in this process; its (name, notes)."""
    from g2u_tasks.backends.understanders import get_understander

    u = get_understander(spec)
    return u.name, u.notes


def run_notes(cfg: RunConfig, understander_notes: str | None) -> str | None:
    """The run record's notes: the understander's, and the generator's where it describes itself without
    a load (BAGEL: its code revision, attention and weights card) and says something they do not."""
    gen_notes = registry.describe("generator", cfg.generator)
    if gen_notes and gen_notes in (understander_notes or ""):  # one resident model serving both roles
        gen_notes = None
    return "; ".join(n for n in (understander_notes, gen_notes and f"generator: {gen_notes}") if n) or None


def planned_tasks(cfg: RunConfig, items: list[Item], families: list[EditFamily], manifest: pl.DataFrame,
                  run_id: str) -> Iterator[tuple[list[UnderstandTask], list[dict]]]:
    """(tasks, quarantine rows for conditions without a usable thought) per chunk of PLAN_CHUNK
    items, in item order: a run's thought keys and tasks are never all held at once."""
    for chunk in in_batches(items, PLAN_CHUNK):
        planned = recorded_thoughts(cfg, chunk, families, manifest)
        yield plan_understanding(chunk, planned, cfg.modes, manifest, run_id, cfg.gate_psnr_db)


PART_ROWS = 4096  # predictions per part file: a run of thousands of batches writes a few dozen files


class PartWriter:
    """Batches' predictions written as parts of PART_ROWS rows or more, in the order they finish."""

    def __init__(self, store: ThoughtStore, run_id: str):
        self.store, self.run_id, self.held, self.index = store, run_id, [], 0

    def add(self, table: pa.Table) -> None:
        if table.num_rows:
            self.held.append(table)
        if sum(t.num_rows for t in self.held) >= PART_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.held:
            self.store.write_run_part(self.run_id, "predictions", self.index, pa.concat_tables(self.held))
            self.index, self.held = self.index + 1, []


def run_understanding(cfg: RunConfig, dataset_version: int | None, materialised: dict | None = None,
                      batching: Batching = Batching()) -> str:
    """Answer every item under baseline and each thought x mode at `dataset_version` (None: latest);
    returns the run id. `materialised`: the materialise stage's counts, kept in the run record.

    Predictions are written part by part as batches finish; the run record, written last, marks a
    finished run (a rerun of the run id removes it first, then the old parts)."""
    log = batching.log
    started = datetime.now(timezone.utc)
    store = jobs.open_store(cfg)
    run_id = jobs.run_id_for(cfg, dataset_version)
    store.remove_run_file(run_id, "run")
    store.clear_run_parts(run_id, "predictions")
    with ImageSpool() as spool:  # the items' image bytes wait on disk until a batch needs them
        items, quarantined, items_file = jobs.screened_items(cfg, run_id, spool)
        columns = MANIFEST_COLUMNS + (planning.PLAN_COLUMNS if cfg.prompt_source != "template" else ())
        manifest = store.manifest(dataset_version, columns=list(columns))
        families = jobs.families_of(cfg)
        n_tasks = 0
        for tasks, missing in planned_tasks(cfg, items, families, manifest, run_id):  # counted, then streamed
            n_tasks += len(tasks)
            quarantined += missing
        stream = (t for tasks, _ in planned_tasks(cfg, items, families, manifest, run_id) for t in tasks)
        batches = in_batches(stream, cfg.batch_size, spool.with_images, count=n_tasks)
        name, notes = (batching.load_understander or describe_understander)(cfg.understander)
        notes = run_notes(cfg, notes)
        log.info("run %s: %d items, %d understanding calls with %s", run_id, len(items), n_tasks, name)
        parts = PartWriter(store, run_id)
        for table, bad in batching.each(
                "answering", answer_batch, batches, count_failed=lambda result: len(result[1]), store=store,
                understander_spec=cfg.understander, run_id=run_id):
            parts.add(table)
            quarantined += bad
        parts.flush()
    store.write_run_table(run_id, "items", items_file)
    store.write_run_table(run_id, "quarantine", quarantine_table(quarantined))
    m = materialised or {}
    store.write_run_table(run_id, "run", jobs.run_row(
        cfg, run_id, dataset_version, started, name, notes, len(items), m.get("generated", 0), m.get("reused", 0)))
    log.info("run %s: %d quarantined row(s)", run_id, len(quarantined))
    return run_id
