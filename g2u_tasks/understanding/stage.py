"""The understanding stage: items -> tasks (item x condition x mode x seed) pinned to one dataset
version -> answers in batches -> the run's files in the store (items, predictions, quarantine, run).
The Prefect flow and plain callers run this same sequence; only the `Batching` differs."""
from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa

from g2u_tasks import jobs
from g2u_tasks.batching import Batching, in_batches
from g2u_tasks.config import ModelSpec, RunConfig
from g2u_tasks.records import items_table
from g2u_tasks.store.thought_store import ThoughtStore
from g2u_tasks.thoughts.stage import recorded_thoughts
from g2u_tasks.understanding.understand import UnderstandTask, plan_understanding, understand_batch
from g2u_tasks.warehouse.quarantine import quarantine_table


def answer_batch(batch: list[UnderstandTask], store: ThoughtStore, understander_spec: ModelSpec, run_id: str):
    return understand_batch(store, understander_spec, run_id, batch)


def describe_understander(spec: ModelSpec) -> tuple[str, str | None]:
    """Load the understander in this process; its (name, notes)."""
    from g2u_tasks.backends.understanders import get_understander

    u = get_understander(spec)
    return u.name, u.notes


def run_understanding(cfg: RunConfig, dataset_version: int | None, materialised: dict | None = None,
                      batching: Batching = Batching()) -> str:
    """Answer every item under baseline and each thought x mode at `dataset_version` (None: latest);
    returns the run id. `materialised`: the materialise stage's counts, kept in the run record."""
    log = batching.log
    started = datetime.now(timezone.utc)
    store = jobs.open_store(cfg)
    run_id = jobs.run_id_for(cfg, dataset_version)
    items, quarantined = jobs.screen_items(jobs.load_items(cfg), run_id)
    manifest = store.manifest(dataset_version)
    planned = recorded_thoughts(cfg, items, jobs.families_of(cfg), manifest)
    tasks, missing = plan_understanding(items, planned, cfg.modes, manifest, run_id, cfg.gate_psnr_db)
    quarantined += missing
    name, notes = (batching.load_understander or describe_understander)(cfg.understander)
    log.info("run %s: %d items, %d understanding calls with %s", run_id, len(items), len(tasks), name)
    predictions = []
    for table, bad in batching.run("answering", answer_batch, in_batches(tasks, cfg.batch_size),
                                   count_failed=lambda result: len(result[1]), store=store,
                                   understander_spec=cfg.understander, run_id=run_id):
        predictions.append(table)
        quarantined += bad
    store.write_run_table(run_id, "items", items_table(items))
    store.write_run_table(run_id, "predictions", pa.concat_tables(predictions) if predictions
                          else pa.schema([]).empty_table())
    store.write_run_table(run_id, "quarantine", quarantine_table(quarantined))
    m = materialised or {}
    store.write_run_table(run_id, "run", jobs.run_row(
        cfg, run_id, dataset_version, started, name, notes, len(items), m.get("generated", 0), m.get("reused", 0)))
    log.info("run %s: %d quarantined row(s)", run_id, len(quarantined))
    return run_id
