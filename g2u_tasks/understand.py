"""Understanding passes: plan (item x condition x mode x seed), answer in batches, score."""
from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from g2u_tasks.config import ModelSpec
from g2u_tasks.families import EditFamily
from g2u_tasks.images import decode
from g2u_tasks.materialise import PlannedThought
from g2u_tasks.prompts import build_prompt
from g2u_tasks.quarantine import quarantine_row
from g2u_tasks.records import BASELINE, PREDICTIONS_SCHEMA, Item
from g2u_tasks.scoring import score
from g2u_tasks.store import ThoughtStore
from g2u_tasks.understanders import UnderstandRequest, get_understander


@dataclass(frozen=True)
class UnderstandTask:
    item: Item
    condition: str  # baseline | family name
    mode: str
    seed: int | None = None
    thought_id: str | None = None
    blob_uri: str | None = None
    family: EditFamily | None = None


def plan_understanding(
    items: list[Item], planned: list[PlannedThought], modes: list[str], manifest: pl.DataFrame, run_id: str
) -> tuple[list[UnderstandTask], list[dict]]:
    """Tasks item-major (an item's conditions sit together in a batch), plus quarantine rows for
    conditions whose thought is missing or failed."""
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
            tid = p.spec.thought_id
            if tid not in ok:
                why = errors.get(tid) or "thought not in this dataset version"
                missing.append(quarantine_row(run_id, "predictions", item.benchmark, item.item_id,
                                              f"no usable {p.family.name} thought (seed {p.spec.seed}): {why}",
                                              {"thought_id": tid, "family": p.family.name}))
                continue
            for mode in edit_modes:
                tasks.append(UnderstandTask(item, p.family.name, mode, p.spec.seed, tid, ok[tid], p.family))
    return tasks, missing


def _request(task: UnderstandTask, store: ThoughtStore, cache: dict) -> tuple[UnderstandRequest, str]:
    if task.item.ref not in cache:
        cache[task.item.ref] = [decode(b) for b in task.item.images]
    thought = None
    if task.blob_uri:
        if task.blob_uri not in cache:
            cache[task.blob_uri] = decode(store.read_blob(task.blob_uri))
        thought = cache[task.blob_uri]
    images, text = build_prompt(task.item, cache[task.item.ref], task.mode, thought, task.family)
    return UnderstandRequest(images=images, prompt=text), text


def _answer_isolated(understander, requests: list[UnderstandRequest]) -> list[str | Exception]:
    """Answer a batch; if it fails, answer one by one so a bad request fails alone."""
    try:
        return list(understander.answer(requests))
    except Exception:  # noqa: BLE001
        out: list[str | Exception] = []
        for r in requests:
            try:
                out.append(understander.answer([r])[0])
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out


def understand_batch(
    store: ThoughtStore, spec: ModelSpec, run_id: str, tasks: list[UnderstandTask]
) -> tuple[pa.Table, list[dict]]:
    """Predictions for one batch, and quarantine rows for tasks that could not be answered."""
    understander = get_understander(spec)
    cache: dict = {}
    ready, requests, texts, quarantined = [], [], [], []
    for t in tasks:
        try:
            req, text = _request(t, store, cache)
        except Exception as exc:  # noqa: BLE001
            quarantined.append(_task_quarantine(run_id, t, f"inputs unreadable: {exc}"))
            continue
        ready.append(t)
        requests.append(req)
        texts.append(text)
    rows = []
    for t, text, out in zip(ready, texts, _answer_isolated(understander, requests) if requests else []):
        if isinstance(out, Exception):
            quarantined.append(_task_quarantine(run_id, t, f"understander failed: {out}"))
            continue
        extracted, correct = score(t.item.question_type, out, t.item.answer, t.item.options)
        rows.append({
            "run_id": run_id, "benchmark": t.item.benchmark, "item_id": t.item.item_id,
            "condition": t.condition, "mode": t.mode, "seed": t.seed, "thought_id": t.thought_id,
            "understander": understander.name, "prompt": text, "raw_output": out,
            "extracted_answer": extracted, "answer": t.item.answer, "correct": correct,
        })
    return pa.Table.from_pylist(rows, schema=PREDICTIONS_SCHEMA), quarantined


def _task_quarantine(run_id: str, t: UnderstandTask, reason: str) -> dict:
    return quarantine_row(run_id, "predictions", t.item.benchmark, t.item.item_id,
                          f"{t.condition}/{t.mode}: {reason}", {"condition": t.condition, "mode": t.mode,
                                                                "thought_id": t.thought_id})
