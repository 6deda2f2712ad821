"""Understanding passes: plan (item x condition x mode x seed), answer in batches; raw outputs only
(the scoring stage, g2u_tasks.scoring.stage, fills extracted_answer / correct).

Condition = baseline, a family name (template thoughts) or self / planner (self-directed ones)."""
from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from g2u_tasks.config import ModelSpec
from g2u_tasks.thoughts.families import EditFamily
from g2u_tasks.images import decode
from g2u_tasks.thoughts.materialise import PlannedThought
from g2u_tasks.thoughts.planning import answer_isolated
from g2u_tasks.understanding.prompts import build_request
from g2u_tasks.warehouse.quarantine import quarantine_row
from g2u_tasks.records import BASELINE, PREDICTIONS_SCHEMA, Item
from g2u_tasks.store.thought_store import ThoughtStore
from g2u_tasks.backends.understanders import UnderstandRequest, get_understander


@dataclass(frozen=True)
class UnderstandTask:
    item: Item
    condition: str  # baseline | family name | self | planner
    mode: str
    seed: int | None = None
    thought_id: str | None = None
    blob_uri: str | None = None
    family: EditFamily | None = None  # self/planner: the chosen family
    instruction: str | None = None  # self/planner: the model-written edit instruction
    gate_psnr_db: float = 25.0  # replace_gated only


def plan_understanding(
    items: list[Item], planned: list[PlannedThought], modes: list[str], manifest: pl.DataFrame, run_id: str,
    gate_psnr_db: float = 25.0,
) -> tuple[list[UnderstandTask], list[dict]]:
    """Tasks item-major (an item's conditions sit together in a batch), plus quarantine rows for
    conditions whose thought is missing or failed (a parse-failed plan gives its reason)."""
    manifest = manifest.filter(pl.col("thought_id").is_in([p.spec.thought_id for p in planned]))
    ok = {r["thought_id"]: r["blob_uri"] for r in manifest.filter(pl.col("status") == "ok").iter_rows(named=True)}
    errors = {r["thought_id"]: r["error"] for r in manifest.filter(pl.col("status") != "ok").iter_rows(named=True)}
    by_item: dict[str, list[PlannedThought]] = {}
    for p in planned:
        by_item.setdefault(p.item.ref, []).append(p)
    tasks, missing = [], []
    edit_modes = [m for m in modes if m != BASELINE]
    for item in items:
        if BASELINE in modes:
            tasks.append(UnderstandTask(item, BASELINE, BASELINE))
        for p in by_item.get(item.ref, []):
            tid, condition = p.spec.thought_id, p.spec.family
            if tid not in ok:
                why = errors.get(tid) or (p.plan.reason if p.plan and p.plan.reason else
                                          "thought not in this dataset version")
                missing.append(quarantine_row(run_id, "predictions", item.benchmark, item.item_id,
                                              f"no usable {condition} thought (seed {p.spec.seed}): {why}",
                                              {"thought_id": tid, "family": condition,
                                               "plan_status": p.plan.status if p.plan else None}))
                continue
            instruction = p.spec.prompt if p.plan else None
            for mode in edit_modes:
                tasks.append(UnderstandTask(item, condition, mode, p.spec.seed, tid, ok[tid], p.family,
                                            instruction, gate_psnr_db))
    return tasks, missing


def _request(task: UnderstandTask, store: ThoughtStore, cache: dict) -> tuple[UnderstandRequest, str, bool | None]:
    if task.item.ref not in cache:
        cache[task.item.ref] = [decode(b) for b in task.item.images]
    thought = None
    if task.blob_uri:
        if task.blob_uri not in cache:
            cache[task.blob_uri] = decode(store.read_blob(task.blob_uri))
        thought = cache[task.blob_uri]
    return build_request(task.item, cache[task.item.ref], task.mode, thought, task.family, task.instruction,
                         task.gate_psnr_db)


def understand_batch(
    store: ThoughtStore, spec: ModelSpec, run_id: str, tasks: list[UnderstandTask]
) -> tuple[pa.Table, list[dict]]:
    """Predictions for one batch, and quarantine rows for tasks that could not be answered."""
    understander = get_understander(spec)
    cache: dict = {}
    ready, requests, texts, gates, quarantined = [], [], [], [], []
    for t in tasks:
        try:
            req, text, gate = _request(t, store, cache)
        except Exception as exc:  # noqa: BLE001
            quarantined.append(_task_quarantine(run_id, t, f"inputs unreadable: {exc}"))
            continue
        ready.append(t)
        requests.append(req)
        texts.append(text)
        gates.append(gate)
    rows = []
    answers = answer_isolated(understander, requests) if requests else []
    for t, text, gate, out in zip(ready, texts, gates, answers):
        if isinstance(out, Exception):
            quarantined.append(_task_quarantine(run_id, t, f"understander failed: {out}"))
            continue
        rows.append({
            "run_id": run_id, "benchmark": t.item.benchmark, "item_id": t.item.item_id,
            "condition": t.condition, "mode": t.mode, "seed": t.seed, "thought_id": t.thought_id,
            "understander": understander.name, "prompt": text, "raw_output": out,
            "extracted_answer": None, "answer": t.item.answer, "correct": None, "gate_passed": gate,
        })
    return pa.Table.from_pylist(rows, schema=PREDICTIONS_SCHEMA), quarantined


def _task_quarantine(run_id: str, t: UnderstandTask, reason: str) -> dict:
    return quarantine_row(run_id, "predictions", t.item.benchmark, t.item.item_id,
                          f"{t.condition}/{t.mode}: {reason}", {"condition": t.condition, "mode": t.mode,
                                                                "thought_id": t.thought_id})
