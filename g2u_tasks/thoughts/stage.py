"""The materialise stage: items -> (self-directed plans) -> thought keys -> generate what the store
lacks -> one atomic commit. The Prefect flow and plain callers run this same sequence; only the
`Batching` (where the batches run) differs."""
from __future__ import annotations

import tempfile
from typing import Callable

import polars as pl

from g2u_tasks import jobs
from g2u_tasks.backends import registry
from g2u_tasks.batching import Batching, in_batches
from g2u_tasks.config import ModelSpec, RunConfig
from g2u_tasks.records import Item
from g2u_tasks.spool import ImageSpool, RowSpool
from g2u_tasks.store.thought_store import ThoughtStore
from g2u_tasks.thoughts import planning
from g2u_tasks.thoughts.families import EditFamily
from g2u_tasks.thoughts.materialise import (
    PlannedThought, commit_thoughts, generate_batch, plan_summary, plan_thoughts, recover_pending, split_reused,
)
from g2u_tasks.thoughts.planning import Plan, PlanJob


# ---- batch functions (what a mapped task runs) ----------------------------------------------------

def generate_thoughts(batch: list[PlannedThought], store: ThoughtStore, generator_spec: ModelSpec,
                      similarity_spec: ModelSpec | None = None):
    return generate_batch(store, generator_spec, batch, similarity_spec)


def failed_thoughts(table) -> int:
    """How many rows of a generated batch failed."""
    return table.column("status").to_pylist().count("failed")


def ask_planner(batch: list[PlanJob], planner_spec: ModelSpec, families: list[EditFamily]) -> list[Plan]:
    return planning.plan_batch(planner_spec, families, batch)


# ---- the sequence ---------------------------------------------------------------------------------

def self_directed_plans(cfg: RunConfig, store: ThoughtStore, items: list[Item], families: list[EditFamily],
                        batching: Batching = Batching(),
                        with_images: Callable[[Item], Item] | None = None) -> dict[str, Plan] | None:
    """prompt_source self|planner: the plans the store records, plus new ones asked per item x seed.
    None for template thoughts. with_images: see generate_missing."""
    if cfg.prompt_source == "template":
        return None
    log = batching.log
    plans, todo = planning.split_recorded(store.manifest(columns=list(planning.PLAN_COLUMNS)), items, families, cfg)
    spec = planning.planner_spec(cfg)
    log.info("plans (%s, %s): %d recorded, %d to ask", cfg.prompt_source, spec.label(), len(plans), len(todo))
    results = batching.run("planning", ask_planner, in_batches(todo, cfg.batch_size, with_images),
                           count_failed=lambda batch: sum(p.status != planning.OK for p in batch),
                           planner_spec=spec, families=families)
    new = [p for batch in results for p in batch]
    plans.update({p.plan_id: p for p in new})
    for p in [p for p in new if p.status != planning.OK][:5]:
        log.warning("plan %s: %s", p.status, p.reason)
    return plans


def recorded_thoughts(cfg: RunConfig, items: list[Item], families: list[EditFamily],
                      manifest: pl.DataFrame) -> list[PlannedThought]:
    """The config's thought keys with self-directed plans as `manifest` records them (no model call)."""
    plans = None
    if cfg.prompt_source != "template":
        plans, _ = planning.split_recorded(manifest, items, families, cfg)
    return plan_thoughts(items, families, cfg, plans)


def materialise_thoughts(cfg: RunConfig, batching: Batching = Batching()) -> dict:
    """Generate every missing thought for the config's items and families; one atomic commit.
    Returns the dataset version and counts (planned, generated, failed, reused, recovered, plans_*)."""
    log = batching.log
    store = jobs.open_store(cfg)
    with ImageSpool() as spool:  # the items' image bytes wait on disk until a batch needs them
        items, rejected, _ = jobs.screened_items(cfg, "materialise", spool)
        if rejected:
            log.warning("%d item(s) fail the items suite and get no thoughts (quarantined with the run)",
                        len(rejected))
        families = jobs.families_of(cfg)
        plans = self_directed_plans(cfg, store, items, families, batching, spool.with_images)
        planned = plan_thoughts(items, families, cfg, plans)
        if plans is not None:
            log.info("plans: %s", ", ".join(f"{k}={v}" for k, v in plan_summary(planned).items()))
        return generate_missing(store, cfg.generator, planned, cfg.batch_size, cfg.similarity_model, batching,
                                spool.with_images)


def generate_missing(store: ThoughtStore, gen_spec: ModelSpec, planned: list[PlannedThought], batch_size: int,
                     similarity_spec: ModelSpec | None = None, batching: Batching = Batching(),
                     with_images: Callable[[Item], Item] | None = None) -> dict:
    """Reuse what the store has, commit what a killed run journaled, generate the rest in batches;
    one atomic commit. similarity_spec: the config's similarity_model (embed_sim per thought).
    with_images: gives a planned thought's item its image bytes back when its batch is built
    (ImageSpool.with_images), for items that come without them."""
    log = batching.log
    # RunConfig checks this too; plain callers pass specs of their own, and a refused param must
    # fail here, not as failed rows whose keys carry it into the manifest.
    registry.check_spec("generator", gen_spec, "generator")
    todo, reused = split_reused(store, planned)
    todo, recovered = recover_pending(store, todo)  # blobs a killed run wrote but never committed
    log.info("thoughts: %d planned, %d reused from the store, %d recovered from an interrupted run, "
             "%d to generate", len(planned), reused, recovered.num_rows, len(todo))
    failed = 0
    with tempfile.TemporaryDirectory(prefix="g2u-thoughts-") as folder:
        spool = RowSpool(folder)  # the rows wait on local disk for the one commit
        spool.write(recovered)
        for table in batching.each("generating thoughts", generate_thoughts, in_batches(todo, batch_size, with_images),
                                   count_failed=failed_thoughts, store=store, generator_spec=gen_spec,
                                   similarity_spec=similarity_spec):
            failed += failed_thoughts(table)
            spool.write(table)
        committed = commit_thoughts(store, spool.rows(), planned)
    version = committed if committed is not None else store.version()
    log.info("dataset version %s (%s)", version, "new commit" if committed is not None else "unchanged")
    return {"dataset_version": version, "planned": len(planned), "generated": len(todo) - failed,
            "failed": failed, "reused": reused, "recovered": recovered.num_rows, **plan_summary(planned)}
