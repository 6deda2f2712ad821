"""Prefect 3 flows: materialise -> understand -> validate & load -> report, and the parent job.

Logic lives in g2u_tasks (plain functions over batches); this module adds orchestration: tasks per
batch, mapping, logging, progress and artifacts. Task results are never persisted (no pickling)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import polars as pl
import pyarrow as pa
from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from g2u_tasks import jobs, reports, warehouse
from g2u_tasks.config import RunConfig
from g2u_tasks.materialise import commit_thoughts, generate_batch, plan_thoughts, recover_pending, split_reused
from g2u_tasks.quarantine import quarantine_table
from g2u_tasks.records import items_table
from g2u_tasks.understand import plan_understanding, understand_batch
from g2u_tasks.understanders import get_understander
from flows.progress import progress

TASK_OPTS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}


def _batches(seq: list, size: int) -> list[list]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]


@task(name="generate-thoughts", retries=1, retry_delay_seconds=2, **TASK_OPTS)
def generate_thoughts_task(store, generator_spec, batch):
    return generate_batch(store, generator_spec, batch)


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
    planned = plan_thoughts(items, jobs.families_of(cfg), cfg)
    todo, reused = split_reused(store, planned)
    todo, recovered = recover_pending(store, todo)  # blobs a killed run wrote but never committed
    log.info("thoughts: %d planned, %d reused from the store, %d recovered from an interrupted run, %d to generate",
             len(planned), reused, recovered.num_rows, len(todo))
    futures = generate_thoughts_task.map(unmapped(store), unmapped(cfg.generator), _batches(todo, cfg.batch_size))
    tables = [f.result() for f in progress(futures, "generating thoughts", log)]
    failed = sum(t.column("status").to_pylist().count("failed") for t in tables)
    committed = commit_thoughts(store, [recovered, *tables], planned)
    version = committed if committed is not None else store.version()
    log.info("dataset version %s (%s)", version, "new commit" if committed is not None else "unchanged")
    return {"dataset_version": version, "planned": len(planned), "generated": len(todo) - failed,
            "failed": failed, "reused": reused, "recovered": recovered.num_rows}


@flow(name="run_understanding", log_prints=True)
def run_understanding(config: dict, dataset_version: int | None, materialised: dict | None = None) -> str:
    """Answer every item under baseline and each thought x mode, pinned to one dataset version."""
    cfg, log = RunConfig.model_validate(config), get_run_logger()
    started = datetime.now(timezone.utc)
    store = jobs.open_store(cfg)
    run_id = jobs.run_id_for(cfg, dataset_version)
    items, quarantined = jobs.screen_items(jobs.load_items(cfg), run_id)
    manifest = store.manifest(dataset_version) if dataset_version is not None else store.manifest()
    planned = plan_thoughts(items, jobs.families_of(cfg), cfg)
    tasks, missing = plan_understanding(items, planned, cfg.modes, manifest, run_id)
    quarantined += missing
    understander = get_understander(cfg.understander)
    log.info("run %s: %d items, %d understanding calls with %s", run_id, len(items), len(tasks), understander.name)
    predictions = []
    for batch in progress(_batches(tasks, cfg.batch_size), "answering", log):
        table, bad = answer_batch_task(store, cfg.understander, run_id, batch)
        predictions.append(table)
        quarantined += bad
    store.write_run_table(run_id, "items", items_table(items))
    store.write_run_table(run_id, "predictions", pa.concat_tables(predictions) if predictions
                          else pa.schema([]).empty_table())
    store.write_run_table(run_id, "quarantine", quarantine_table(quarantined))
    m = materialised or {}
    store.write_run_table(run_id, "run", jobs.run_row(
        cfg, run_id, dataset_version, started, understander.name, understander.notes, len(items),
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
