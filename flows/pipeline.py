"""Prefect 3 flows: materialise -> understand -> validate & load -> report, and the parent job.

Logic lives in g2u_tasks (plain functions over batches); this module adds orchestration: tasks per
batch, mapping, logging, progress and artifacts. Task results are never persisted (no pickling)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import polars as pl
import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from g2u_tasks import jobs

from g2u_tasks.thoughts import planning

from g2u_tasks.analysis import reports

from g2u_tasks.warehouse import database as warehouse
from g2u_tasks.config import RunConfig
from g2u_tasks.thoughts.materialise import (
    commit_thoughts, generate_batch, plan_summary, plan_thoughts, recover_pending, split_reused,
)
from g2u_tasks.warehouse.quarantine import quarantine_table
from g2u_tasks.records import items_table
from g2u_tasks.understanding.understand import plan_understanding, understand_batch
from flows import executor
from flows.progress import progress

TASK_OPTS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}


def _batches(seq: list, size: int) -> list[list]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]


@task(name="generate-thoughts", retries=1, retry_delay_seconds=2, **TASK_OPTS)
def generate_thoughts_task(store, generator_spec, batch, similarity_spec=None):
    return generate_batch(store, generator_spec, batch, similarity_spec)


@task(name="plan-thoughts", **TASK_OPTS)
def plan_batch_task(planner_spec, families, batch):
    return planning.plan_batch(planner_spec, families, batch)


def _self_directed_plans(cfg: RunConfig, store, items, families, runner, log) -> dict | None:
    """prompt_source self|planner: plans recorded in the store, plus new ones asked per item x seed
    (batches mapped where the models run)."""
    if cfg.prompt_source == "template":
        return None
    plans, todo = planning.split_recorded(store.manifest(), items, families, cfg)
    spec = planning.planner_spec(cfg)
    log.info("plans (%s, %s): %d recorded, %d to ask", cfg.prompt_source, spec.label(), len(plans), len(todo))
    futures = runner.map(plan_batch_task, _batches(todo, cfg.batch_size), planner_spec=spec, families=families)
    new = [p for f in progress(futures, "planning", log) for p in f.result()]
    plans.update({p.plan_id: p for p in new})
    for p in [p for p in new if p.status != planning.OK][:5]:
        log.warning("plan %s: %s", p.status, p.reason)
    return plans


@task(name="answer-batch", **TASK_OPTS)
def answer_batch_task(store, understander_spec, run_id, batch):
    return understand_batch(store, understander_spec, run_id, batch)


@flow(name="materialise_thoughts", log_prints=True)
def materialise_thoughts(config: dict) -> dict:
    """Generate every missing thought for the config's items and families; one atomic commit."""
    cfg, log = RunConfig.model_validate(config), get_run_logger()
    store = jobs.open_store(cfg)
    items, rejected = jobs.screen_items(jobs.load_items(cfg), run_id="materialise")
    if rejected:
        log.warning("%d item(s) fail the items suite and get no thoughts (quarantined with the run)", len(rejected))
    families = jobs.families_of(cfg)
    with executor.batch_runner(cfg) as runner:  # the flow's task runner, or Dask workers (executor:)
        plans = _self_directed_plans(cfg, store, items, families, runner, log)
        planned = plan_thoughts(items, families, cfg, plans)
        if plans is not None:
            log.info("plans: %s", ", ".join(f"{k}={v}" for k, v in plan_summary(planned).items()))
        todo, reused = split_reused(store, planned)
        todo, recovered = recover_pending(store, todo)  # blobs a killed run wrote but never committed
        log.info("thoughts: %d planned, %d reused from the store, %d recovered from an interrupted run, "
                 "%d to generate", len(planned), reused, recovered.num_rows, len(todo))
        futures = runner.map(generate_thoughts_task, _batches(todo, cfg.batch_size), store=store,
                             generator_spec=cfg.generator, similarity_spec=cfg.similarity_model)
        tables = [f.result() for f in progress(futures, "generating thoughts", log)]
    failed = sum(t.column("status").to_pylist().count("failed") for t in tables)
    committed = commit_thoughts(store, [recovered, *tables], planned)
    version = committed if committed is not None else store.version()
    log.info("dataset version %s (%s)", version, "new commit" if committed is not None else "unchanged")
    return {"dataset_version": version, "planned": len(planned), "generated": len(todo) - failed,
            "failed": failed, "reused": reused, "recovered": recovered.num_rows, **plan_summary(planned)}


@flow(name="run_understanding", log_prints=True)
def run_understanding(config: dict, dataset_version: int | None, materialised: dict | None = None) -> str:
    """Answer every item under baseline and each thought x mode, pinned to one dataset version."""
    cfg, log = RunConfig.model_validate(config), get_run_logger()
    started = datetime.now(timezone.utc)
    store = jobs.open_store(cfg)
    run_id = jobs.run_id_for(cfg, dataset_version)
    items, quarantined = jobs.screen_items(jobs.load_items(cfg), run_id)
    manifest = store.manifest(dataset_version) if dataset_version is not None else store.manifest()
    families = jobs.families_of(cfg)
    plans = None  # self/planner: the plans this dataset version recorded (no model calls here)
    if cfg.prompt_source != "template":
        plans, _ = planning.split_recorded(manifest, items, families, cfg)
    planned = plan_thoughts(items, families, cfg, plans)
    tasks, missing = plan_understanding(items, planned, cfg.modes, manifest, run_id, cfg.gate_psnr_db)
    quarantined += missing
    predictions = []
    with executor.batch_runner(cfg) as runner:  # batches mapped over the workers, results in batch order
        name, notes = runner.load_understander(cfg.understander)
        log.info("run %s: %d items, %d understanding calls with %s", run_id, len(items), len(tasks), name)
        futures = runner.map(answer_batch_task, _batches(tasks, cfg.batch_size), store=store,
                             understander_spec=cfg.understander, run_id=run_id)
        for table, bad in (f.result() for f in progress(futures, "answering", log)):
            predictions.append(table)
            quarantined += bad
    store.write_run_table(run_id, "items", items_table(items))
    store.write_run_table(run_id, "predictions", pa.concat_tables(predictions) if predictions
                          else pa.schema([]).empty_table())
    store.write_run_table(run_id, "quarantine", quarantine_table(quarantined))
    m = materialised or {}
    store.write_run_table(run_id, "run", jobs.run_row(
        cfg, run_id, dataset_version, started, name, notes, len(items),
        m.get("generated", 0), m.get("reused", 0)))
    log.info("run %s: %d quarantined row(s)", run_id, len(quarantined))
    return run_id


@flow(name="validate_and_load", log_prints=True)
def validate_and_load(config: dict, run_id: str, dataset_version: int | None) -> dict:
    """Great Expectations over the run's outputs, then an idempotent load into DuckDB."""
    cfg, log = RunConfig.model_validate(config), get_run_logger()
    run = jobs.open_store(cfg).read_run_table(run_id, "run").to_arrow()
    written = jobs.validate_and_load(cfg, run_id, dataset_version, run)
    log.info("warehouse %s: %s", cfg.warehouse, ", ".join(f"{k}={v}" for k, v in written.items()))
    return written


@flow(name="report", log_prints=True)
def report(warehouse_path: str, name: str = reports.DEFAULT_REPORT, run_id: str | None = None) -> str:
    """Render one SQL report as Markdown, publish it as a Prefect artifact, return the text."""
    con = warehouse.connect(warehouse_path, read_only=True)
    try:
        header = reports.run_header(con, run_id)
        frame = reports.run_report(con, name, run_id)
    finally:
        con.close()
    text = f"## {name}\n\n{header}\n\n{reports.render(frame, 'md')}\n"
    create_markdown_artifact(markdown=text, key=name.replace("_", "-"), description=f"G2U report {name}")
    return text


@flow(name="g2u_pipeline", log_prints=True)
def g2u_pipeline(config: dict, report_name: str = reports.DEFAULT_REPORT) -> dict:
    """The main job: materialise -> understand -> validate -> load -> report."""
    cfg = RunConfig.model_validate(config)
    m = materialise_thoughts(config)
    run_id = run_understanding(config, m["dataset_version"], m)
    written = validate_and_load(config, run_id, m["dataset_version"])
    text = report(cfg.warehouse, report_name, run_id)
    return {"run_id": run_id, **m, "loaded": written, "report": text}


def frame_of(table: pa.Table) -> pl.DataFrame:
    return pl.from_arrow(table)
