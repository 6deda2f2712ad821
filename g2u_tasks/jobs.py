"""Run helpers the stage sequences share (store, items, families, run ids, run records), and the
load sequence validate_and_load. Plain functions, no Prefect."""
from __future__ import annotations

import itertools
from datetime import datetime, timezone
from typing import Iterator

import polars as pl
import pyarrow as pa

from g2u_tasks.warehouse import database as warehouse
from g2u_tasks.benchmarks.loaders import iter_benchmark
from g2u_tasks.config import BenchmarkSpec, RunConfig, is_secret_option, redact_secrets
from g2u_tasks.thoughts.families import EditFamily, load_families
from g2u_tasks.benchmarks.adapters import iter_benchmark_spec
from g2u_tasks.benchmarks.table import has_spec
from g2u_tasks.scoring.judge import JudgeSpec
from g2u_tasks.warehouse.quarantine import quarantine_row, quarantine_table
from g2u_tasks.records import RUNS_SCHEMA, Item, canonical_json, items_table
from g2u_tasks.spool import ImageSpool
from g2u_tasks.store.thought_store import ThoughtStore
from g2u_tasks.warehouse.run_predictions import check_predictions
from g2u_tasks.warehouse.run_thoughts import check_thoughts
from g2u_tasks.warehouse.validation import validate


class RunNotLoadedError(RuntimeError):
    """A run whose outputs are in the store but not in the warehouse (locked, disk full): `g2u load
    RUN_ID` finishes it from the stored files, without understanding again."""

    def __init__(self, run_id: str, cause: Exception):
        super().__init__(f"run {run_id} is stored but not loaded: {cause}")
        self.run_id = run_id


def open_store(cfg: RunConfig) -> ThoughtStore:
    return ThoughtStore(cfg.store, storage_options=cfg.storage_options or None)


def families_of(cfg: RunConfig) -> list[EditFamily]:
    return load_families(cfg.families, cfg.families_dir)


SCREEN_CHUNK = 512  # items made (with their images) before they go to the spool


def iter_benchmark_items(cfg: RunConfig, b: BenchmarkSpec) -> Iterator[Item]:
    """Known benchmarks load through their spec's adapter (HF exports, custom TSVs); others
    generically. Items are made as they are iterated to."""
    opts = cfg.storage_options or None
    if has_spec(b.name) and b.question_type is None:
        return iter_benchmark_spec(b.name, b.source, limit=b.limit, storage_options=opts, benchmark=b.name,
                                   images=cfg.images)
    return iter_benchmark(b.name, b.source, question_type=b.question_type, limit=b.limit, storage_options=opts,
                          images=cfg.images)


def load_items(cfg: RunConfig) -> list[Item]:
    return [item for b in cfg.benchmarks for item in iter_benchmark_items(cfg, b)]


def screen_table(table: pa.Table, run_id: str) -> tuple[set[tuple[str, str]], list[dict]]:
    """The (benchmark, item_id) keys of an items table passing the `items` suite, and quarantine
    rows (with reasons) for the rest."""
    good, bad = validate("items", pl.from_arrow(table))
    rows = [
        quarantine_row(run_id, "items", r["benchmark"], r["item_id"], f"{r['benchmark']}/{r['item_id']}: {r['reasons']}",
                       {k: v for k, v in r.items() if k != "reasons"})
        for r in bad.iter_rows(named=True)
    ]
    return set(zip(good["benchmark"], good["item_id"])), rows


def screen_items(items: list[Item], run_id: str) -> tuple[list[Item], list[dict]]:
    """Items passing the `items` suite, and quarantine rows (with reasons) for the rest."""
    keep, rows = screen_table(items_table(items), run_id)
    return [it for it in items if (it.benchmark, it.item_id) in keep], rows


def screened_items(cfg: RunConfig, run_id: str, spool: ImageSpool | None = None) -> tuple[list[Item], list[dict], pa.Table]:
    """The config's items that pass the `items` suite, quarantine rows for the rest, and the items
    table of those kept (the run's items file). Benchmark by benchmark (names are unique, and so
    are item ids within each), the suite over each benchmark's whole items table. With a `spool`,
    the items come without their image bytes, which the spool keeps as the items are made: only
    SCREEN_CHUNK items' images are in memory at once."""
    items, rejected, tables = [], [], []
    for b in cfg.benchmarks:
        made, parts = [], []
        stream = iter_benchmark_items(cfg, b)
        while chunk := list(itertools.islice(stream, SCREEN_CHUNK)):
            parts.append(items_table(chunk))  # before slim: the table counts each item's images
            made += chunk if spool is None else [spool.slim(it) for it in chunk]
        table = pa.concat_tables(parts) if parts else items_table([])
        keep, bad = screen_table(table, run_id)
        rejected += bad
        kept = [(it.benchmark, it.item_id) in keep for it in made]
        tables.append(table.filter(pa.array(kept, pa.bool_())))
        items += [it for it, ok in zip(made, kept) if ok]
    return items, rejected, pa.concat_tables(tables) if tables else items_table([])


def run_id_for(cfg: RunConfig, dataset_version: int | None) -> str:
    """Deterministic: the same config on the same dataset version is the same run (idempotent reruns)."""
    return cfg.run_id or f"{cfg.fingerprint()}-v{dataset_version if dataset_version is not None else 'none'}"


def _redact(node):
    if isinstance(node, dict):
        return {k: "<redacted>" if is_secret_option(k) else _redact(v) for k, v in node.items()}
    return [_redact(v) for v in node] if isinstance(node, list) else node


def public_config(cfg: RunConfig) -> dict:
    """The config as records, logs and Prefect keep it. Secret-named storage options are refused by
    RunConfig, yet a secret may sit under an innocent name (headers.Authorization): values are
    masked by shape too, and so is anything that slipped past validation (e.g. model_construct)."""
    dumped = cfg.model_dump()
    dumped["storage_options"] = _redact(dumped.get("storage_options") or {})
    return redact_secrets(dumped)


def public_config_json(cfg: RunConfig) -> str:
    return canonical_json(public_config(cfg))


def run_row(cfg: RunConfig, run_id: str, dataset_version: int | None, started_at: datetime,
            understander_name: str, notes: str | None, n_items: int, generated: int, reused: int) -> pa.Table:
    return pa.Table.from_pylist([{
        "run_id": run_id, "started_at": started_at, "finished_at": datetime.now(timezone.utc),
        "config_json": public_config_json(cfg), "dataset_version": dataset_version,
        "generator": cfg.generator.label(), "understander": understander_name, "notes": notes,
        "n_items": n_items, "n_thoughts_generated": generated, "n_thoughts_reused": reused, "status": "completed",
    }], schema=RUNS_SCHEMA)


def validate_and_load(cfg: RunConfig, run_id: str, dataset_version: int | None, run: pa.Table) -> dict[str, int]:
    """Score the run's predictions, validate its outputs with Great Expectations, compute metrics
    from the same verdicts, load the warehouse. Predictions go part by part (run_predictions).

    Rows failing a suite go to `quarantine` with their reasons; nothing is dropped silently."""
    store = open_store(cfg)
    items = store.read_run_table(run_id, "items")
    judge = JudgeSpec(**cfg.judge.model_dump()) if cfg.judge else None
    # each benchmark's own suite, once per run x benchmark x condition x mode x seed
    predictions = check_predictions(store, run_id, items, judge)
    quarantined = store.read_run_table(run_id, "quarantine")
    # the thoughts this run's items use, at the pinned version, a slice at a time
    thoughts = check_thoughts(store, run_id, dataset_version, items)
    extra = thoughts.quarantine + predictions.quarantine
    metrics, bad_metrics = validate("metrics", pl.from_arrow(predictions.metrics()))
    extra += [quarantine_row(run_id, "metrics", r["benchmark"], None, r["reasons"],
                             {k: v for k, v in r.items() if k != "reasons"}) for r in bad_metrics.iter_rows(named=True)]
    run_ok, run_bad = validate("runs", pl.from_arrow(run))
    if not run_bad.is_empty():
        raise ValueError(f"run {run_id}: run record fails validation: {run_bad['reasons'][0]}")
    all_quarantine = pl.concat([quarantined, pl.from_arrow(quarantine_table(extra))], how="vertical_relaxed")
    try:
        con = warehouse.connect(cfg.warehouse)
    except (warehouse.WarehouseLockedError, warehouse.WarehouseWriteError) as err:
        raise RunNotLoadedError(run_id, err) from err
    try:
        # quarantine rows of earlier loads of this run are replaced as a whole (inside the load's
        # transaction, so a failed load leaves the earlier rows in place)
        return warehouse.load(con, {
            "items": items, "metrics": metrics, "runs": run_ok, "quarantine": all_quarantine,
        }, before=[("DELETE FROM quarantine WHERE run_id = ?", [run_id]),
                   ("DELETE FROM predictions WHERE run_id = ?", [run_id])],
            parts={"predictions": predictions.good_chunks()}, keyed_parts={"thoughts": thoughts.good_slices()})
    except warehouse.WarehouseWriteError as err:
        raise RunNotLoadedError(run_id, err) from err
    finally:
        con.close()
