"""Materialise visual thoughts: plan keys, reuse what the store has, generate the rest in batches.

Resume: every finished ok row is journaled next to its blob (ThoughtStore.put_pending); a run that
was killed before its commit leaves them there, and the next run commits them instead of
regenerating (recover_pending). commit_thoughts clears the journal once the rows are ok."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa

from g2u_tasks.config import ModelSpec, RunConfig
from g2u_tasks.families import EditFamily
from g2u_tasks.fidelity import fidelity
from g2u_tasks.generators import GenerateRequest, get_generator
from g2u_tasks.images import decode, encode_png
from g2u_tasks.records import THOUGHTS_SCHEMA, Item, ThoughtSpec, canonical_json
from g2u_tasks.store import ThoughtStore


@dataclass(frozen=True)
class PlannedThought:
    item: Item
    family: EditFamily
    spec: ThoughtSpec


def plan_thoughts(items: list[Item], families: list[EditFamily], cfg: RunConfig) -> list[PlannedThought]:
    g = cfg.generator
    return [
        PlannedThought(
            item,
            fam,
            ThoughtSpec(
                benchmark=item.benchmark,
                item_id=item.item_id,
                image_sha256=item.image_sha256,
                family=fam.name,
                family_version=fam.version,
                prompt=fam.render(item),
                prompt_source=cfg.prompt_source,
                generator=g.backend,
                generator_model=g.model,
                generator_revision=g.revision,
                generator_params=g.params,
                seed=seed,
            ),
        )
        for item in items
        for fam in families
        for seed in cfg.seeds
    ]


def split_reused(store: ThoughtStore, planned: list[PlannedThought]) -> tuple[list[PlannedThought], int]:
    """(thoughts still to generate, number already in the store)."""
    have = set(store.existing_ok([p.spec.thought_id for p in planned])["thought_id"].to_list())
    todo = [p for p in planned if p.spec.thought_id not in have]
    return todo, len(planned) - len(todo)


def recover_pending(store: ThoughtStore, todo: list[PlannedThought]) -> tuple[list[PlannedThought], pa.Table]:
    """(thoughts still to generate, journaled rows of a killed run whose blobs are intact)."""
    rows = store.pending_rows([p.spec.thought_id for p in todo])
    have = {r["thought_id"] for r in rows}
    return [p for p in todo if p.spec.thought_id not in have], pa.Table.from_pylist(rows, schema=THOUGHTS_SCHEMA)


def commit_thoughts(store: ThoughtStore, tables: list[pa.Table], planned: list[PlannedThought]) -> int | None:
    """One atomic commit of every row, then drop journal entries of planned keys now ok."""
    tables = [t for t in tables if t is not None and t.num_rows]
    committed = store.commit(pa.concat_tables(tables)) if tables else None
    ok = store.existing_ok([p.spec.thought_id for p in planned])["thought_id"].to_list()
    store.clear_pending(ok)
    return committed


def materialise(store: ThoughtStore, gen_spec: ModelSpec, planned: list[PlannedThought], batch_size: int) -> dict:
    """The whole materialisation as one plain, sequential call (flows/ maps the batches instead)."""
    todo, reused = split_reused(store, planned)
    todo, recovered = recover_pending(store, todo)
    tables = [generate_batch(store, gen_spec, todo[i : i + batch_size]) for i in range(0, len(todo), batch_size)]
    committed = commit_thoughts(store, [recovered, *tables], planned)
    failed = sum(t.column("status").to_pylist().count("failed") for t in tables)
    return {"dataset_version": committed if committed is not None else store.version(), "planned": len(planned),
            "generated": len(todo) - failed, "failed": failed, "reused": reused, "recovered": recovered.num_rows}


def _row(p: PlannedThought, **fields) -> dict:
    s = p.spec
    row = {
        "thought_id": s.thought_id, "benchmark": s.benchmark, "item_id": s.item_id,
        "image_sha256": s.image_sha256, "family": s.family, "family_version": s.family_version,
        "prompt": s.prompt, "prompt_source": s.prompt_source, "generator": s.generator,
        "generator_model": s.generator_model, "generator_revision": s.generator_revision,
        "generator_params": canonical_json(s.generator_params), "seed": s.seed, "key_json": s.key_json(),
        "created_at": datetime.now(timezone.utc),
    }
    row.update(fields)
    return row


def _generate(gen_spec: ModelSpec, batch: list[PlannedThought], sources) -> list:
    """Generate a batch; if the batch fails, retry item by item so one bad item fails alone."""
    gen = get_generator(gen_spec)
    reqs = [GenerateRequest(src, p.spec.prompt, p.spec.seed, p.family) for p, src in zip(batch, sources)]
    try:
        return gen.generate(reqs)
    except Exception:  # noqa: BLE001 - isolate the failing item below
        out = []
        for r in reqs:
            try:
                out.append(gen.generate([r])[0])
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out


def generate_batch(store: ThoughtStore, gen_spec: ModelSpec, batch: list[PlannedThought]) -> pa.Table:
    """Generate, store blobs (before any commit references them), journal each finished row,
    and return manifest rows."""
    rows, ready, sources = [], [], []
    for p in batch:
        try:
            sources.append(decode(p.item.images[-1]))  # like the reference, edit the last image
            ready.append(p)
        except Exception as exc:  # noqa: BLE001
            rows.append(_row(p, status="failed", error=f"{p.item.ref}: source image unreadable: {exc}"))
    t0 = time.perf_counter()
    outputs = _generate(gen_spec, ready, sources) if ready else []
    per_item = (time.perf_counter() - t0) / max(len(ready), 1)
    for p, src, out in zip(ready, sources, outputs):
        if isinstance(out, Exception):
            rows.append(_row(p, status="failed", error=f"{p.item.ref} [{p.family.name}]: {out}"))
            continue
        png = encode_png(out)
        sha, uri = store.put_blob(png)
        psnr, ssim = fidelity(src, out)
        row = _row(
            p, blob_sha256=sha, blob_uri=uri, blob_bytes=len(png), width=out.width,
            height=out.height, psnr=psnr, ssim=ssim, gen_seconds=per_item, status="ok", error=None,
        )
        store.put_pending(row)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=THOUGHTS_SCHEMA)
