"""Materialise visual thoughts: plan keys, reuse what the store has, generate the rest in batches.

Resume: a batch's finished ok rows are journaled once its blobs are stored (ThoughtStore.put_pending,
one file per batch); a run that was killed before its commit leaves them there, and the next run
commits them instead of regenerating (recover_pending). commit_thoughts clears the journal once the
rows are ok.

prompt_source self|planner: each item x seed has a Plan (g2u_tasks.thoughts.planning); an ok plan gives a
thought of the chosen family with the model-written instruction as prompt; a parse-failed plan
gives one failed row (recorded once, never generated); a plan that errored or is missing gives a
placeholder that is never generated (the understanding pass quarantines it).
Generator param `degrade` (g2u_tasks.backends.generators.degrade): one thought per strength.
identity thoughts are the source image itself (no generator call, generator "identity" in the key:
the same thought whatever generator is configured, and never degraded).
gen_seconds: a thought's share of the generator call that made it (see `_generate`).
conditioning: what the generator conditioned on, as its backend declares it (records.CONDITIONINGS;
"none" for identity, null for rows that never reached a generator)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from g2u_tasks.backends.common import isolate_failures
from g2u_tasks.backends.generators import GenerateRequest
from g2u_tasks.backends.generators.base import GEN_TEXT_INFO
from g2u_tasks.backends.generators.degrade import Degrade, generate_degraded, parse_degrade, thought_params
from g2u_tasks.backends.registry import get_generator, get_similarity
from g2u_tasks.config import ModelSpec, RunConfig
from g2u_tasks.images import decode, encode_png
from g2u_tasks.records import CONDITIONINGS, THOUGHTS_SCHEMA, Item, ThoughtSpec, canonical_json
from g2u_tasks.store.thought_store import ThoughtStore
from g2u_tasks.thoughts import planning
from g2u_tasks.thoughts.families import IDENTITY, EditFamily
from g2u_tasks.thoughts.fidelity import fidelity, psnr_padded_square
from g2u_tasks.thoughts.planning import Plan

# The key of an identity thought names this in place of the configured generator.
SOURCE_ONLY = ModelSpec(backend=IDENTITY)


@dataclass(frozen=True)
class PlannedThought:
    item: Item
    family: EditFamily | None  # template: the family; self/planner: the chosen family (None if no plan)
    spec: ThoughtSpec
    plan: Plan | None = None  # self/planner only

    @property
    def generable(self) -> bool:
        return self.plan is None or self.plan.status == planning.OK

    @property
    def recordable(self) -> bool:
        """Generated, or a parse failure written as a failed row."""
        return self.plan is None or self.plan.status in planning.RECORDED


def plan_thoughts(items: list[Item], families: list[EditFamily], cfg: RunConfig,
                  plans: dict[str, Plan] | None = None) -> list[PlannedThought]:
    """Thought keys for the config. Template: item x family x seed (x degrade strength).
    Self/planner: item x seed (x strength) from `plans` (by plan_id); missing plans give placeholders."""
    g = cfg.generator
    base_params, degrades = parse_degrade(g.params)

    def variants(fam: EditFamily | None) -> list[tuple[ModelSpec, dict]]:
        """(generator, its params in the key) per thought of one family: one per degrade strength;
        identity is the source itself, keyed without the configured generator (which never sees it)."""
        if fam is not None and not fam.calls_generator:
            return [(SOURCE_ONLY, {})]
        return [(g, thought_params(base_params, d)) for d in degrades]

    def spec(item, family, version, prompt, seed, gen, params, chosen=None, plan_id=None) -> ThoughtSpec:
        return ThoughtSpec(
            benchmark=item.benchmark, item_id=item.item_id, image_sha256=item.image_sha256,
            family=family, family_version=version, prompt=prompt, prompt_source=cfg.prompt_source,
            generator=gen.backend, generator_model=gen.model, generator_revision=gen.revision,
            generator_params=params, seed=seed, chosen_family=chosen, plan_id=plan_id,
        )

    if cfg.prompt_source == "template":
        return [
            PlannedThought(item, fam, spec(item, fam.name, fam.version, fam.render(item), seed, gen, params))
            for item in items for fam in families for seed in cfg.seeds for gen, params in variants(fam)
        ]
    by_name = {f.name: f for f in families}
    version = planning.plan_version(families)
    out = []
    for job in planning.plan_jobs(items, families, cfg):
        plan = (plans or {}).get(job.plan_id) or Plan(
            job.plan_id, planning.MISSING, reason=f"{job.item.ref} (seed {job.seed}): no plan recorded")
        if plan.status == planning.OK and plan.family not in by_name:  # cannot happen: menu is in plan_id
            plan = Plan(job.plan_id, planning.MISSING, reason=f"chosen family {plan.family!r} not configured")
        fam = by_name.get(plan.family) if plan.status == planning.OK else None
        prompt = plan.instruction if fam else ""
        for gen, params in variants(fam):
            s = spec(job.item, cfg.prompt_source, version, prompt, job.seed, gen, params,
                     fam.name if fam else None, job.plan_id)
            out.append(PlannedThought(job.item, fam, s, plan))
    return out


def split_reused(store: ThoughtStore, planned: list[PlannedThought]) -> tuple[list[PlannedThought], int]:
    """(thoughts still to generate or record, number already ok in the store). Parse failures
    already recorded and plans that errored or are missing are neither."""
    have = set(store.existing_ok([p.spec.thought_id for p in planned])["thought_id"].to_list())
    failed_plans = [p.spec.thought_id for p in planned if p.recordable and not p.generable]
    skip = set(have)
    if failed_plans:
        recorded = store.manifest(columns=["thought_id"]).filter(pl.col("thought_id").is_in(failed_plans))
        skip |= set(recorded["thought_id"].to_list())
    todo = [p for p in planned if p.recordable and p.spec.thought_id not in skip]
    return todo, sum(p.spec.thought_id in have for p in planned)


def recover_pending(store: ThoughtStore, todo: list[PlannedThought]) -> tuple[list[PlannedThought], pa.Table]:
    """(thoughts still to generate, journaled rows of a killed run whose blobs are intact)."""
    rows = store.pending_rows([p.spec.thought_id for p in todo])
    have = {r["thought_id"] for r in rows}
    return [p for p in todo if p.spec.thought_id not in have], pa.Table.from_pylist(rows, schema=THOUGHTS_SCHEMA)


def commit_thoughts(store: ThoughtStore, rows: pq.ParquetFile | None, planned: list[PlannedThought]) -> int | None:
    """One atomic commit of every row (spool.RowSpool.rows), then drop journal entries of planned keys now ok."""
    committed = store.commit(rows) if rows is not None else None
    ok = store.existing_ok([p.spec.thought_id for p in planned])["thought_id"].to_list()
    store.clear_pending(ok)
    return committed


def plan_summary(planned: list[PlannedThought]) -> dict[str, int]:
    """Counts of distinct plans by status (empty for template thoughts)."""
    plans = {p.plan.plan_id: p.plan for p in planned if p.plan is not None}
    return planning.plan_counts(list(plans.values())) if plans else {}


def _row(p: PlannedThought, **fields) -> dict:
    s, plan = p.spec, p.plan
    row = {
        "thought_id": s.thought_id, "benchmark": s.benchmark, "item_id": s.item_id,
        "image_sha256": s.image_sha256, "family": s.family, "family_version": s.family_version,
        "prompt": s.prompt, "prompt_source": s.prompt_source, "generator": s.generator,
        "generator_model": s.generator_model, "generator_revision": s.generator_revision,
        "generator_params": canonical_json(s.generator_params), "seed": s.seed, "key_json": s.key_json(),
        "created_at": datetime.now(timezone.utc),
        "chosen_family": s.chosen_family if plan else s.family,
        "plan_status": plan.status if plan else None, "plan_raw": plan.raw if plan else None,
        "plan_id": s.plan_id, "planner": plan.planner if plan else None,
        "plan_decoding": plan.decoding if plan else None,
    }
    row.update(fields)
    return row


def _degrade_of(p: PlannedThought) -> Degrade | None:
    d = p.spec.generator_params.get("degrade")
    return Degrade(d["kind"], d["strength"]) if d else None


def _generate(gen_spec: ModelSpec, batch: list[PlannedThought], sources: list) -> tuple[list, list[float]]:
    """Each thought's image (an Exception where it failed) and its generation cost in seconds.

    identity thoughts are their source, pixel for pixel: no generator call, cost 0. The rest go to
    the resident generator in one call (degrade applied on top: the backend never sees it); if that
    call fails, one call per thought so a bad one fails alone. A thought's cost is its share of the
    call that made it: the call's seconds, timed inside the model's lock (never the wait for other
    threads' batches), divided over the thoughts that call served."""
    outputs: list = [None if p.family.calls_generator else src for p, src in zip(batch, sources)]
    costs = [0.0] * len(batch)
    todo = [i for i, p in enumerate(batch) if p.family.calls_generator]
    if not todo:
        return outputs, costs
    base_params, _ = parse_degrade(gen_spec.params)
    gen = get_generator(gen_spec.model_copy(update={"params": base_params}))

    def one_call(idx: list[int]) -> list:
        seconds = []

        def timed_generate(requests: list[GenerateRequest]) -> list:
            images, took = gen.timed("generate", requests)
            seconds.append(took)
            return images

        reqs = [GenerateRequest(sources[i], batch[i].spec.prompt, batch[i].spec.seed, batch[i].family) for i in idx]
        degrades = [_degrade_of(batch[i]) for i in idx]
        keys = [(batch[i].item.ref, batch[i].spec.prompt, batch[i].spec.seed, batch[i].family.name)
                for i in idx]  # the same up to degrade: generated once
        images = generate_degraded(timed_generate, reqs, degrades, keys)
        for i in idx:
            costs[i] = sum(seconds) / len(idx)
        return images

    for i, out in zip(todo, isolate_failures(one_call, todo)):
        outputs[i] = out
    return outputs, costs


def _conditioning(gen_spec: ModelSpec) -> str | None:
    """What the (already resident) generator conditions on: its backend's declared `conditioning`."""
    base_params, _ = parse_degrade(gen_spec.params)
    gen = get_generator(gen_spec.model_copy(update={"params": base_params}))
    value = getattr(gen, "conditioning", None)
    if value is not None and value not in CONDITIONINGS:  # undeclared (test fakes): null
        raise ValueError(f"generator backend {gen_spec.backend!r} declares conditioning {value!r}; "
                         f"expected one of {', '.join(CONDITIONINGS)}")
    return value


def _embed_sims(spec: ModelSpec | None, sources: list, outputs: list) -> list[float | None]:
    """Embedding similarity of each ok output to its source (None for failures, or without a spec)."""
    sims: list[float | None] = [None] * len(outputs)
    ok = [i for i, out in enumerate(outputs) if not isinstance(out, Exception)]
    if spec is None or not ok:
        return sims
    values = get_similarity(spec).similarity([sources[i] for i in ok], [outputs[i] for i in ok])
    for i, v in zip(ok, values):
        sims[i] = v
    return sims


def generate_batch(store: ThoughtStore, gen_spec: ModelSpec, batch: list[PlannedThought],
                   similarity_spec: ModelSpec | None = None) -> pa.Table:
    """Generate, store blobs (before any commit references them), journal the batch's finished rows,
    and return manifest rows. similarity_spec: embed_sim of the ok thoughts, in one batched call."""
    rows, ready, sources, journal = [], [], [], []
    decoded: dict[bytes, Any] = {}  # source bytes -> image (or why not): an item's source decoded once a batch
    for p in batch:
        if not p.generable:  # a plan that failed: record a parse failure once, never generate
            if p.recordable:
                rows.append(_row(p, status="failed", error=p.plan.reason))
            continue
        data = p.item.images[-1]  # like the reference, edit the last image
        if data not in decoded:
            try:
                decoded[data] = decode(data)
            except Exception as exc:  # noqa: BLE001
                decoded[data] = exc
        src = decoded[data]
        if isinstance(src, Exception):
            rows.append(_row(p, status="failed", error=f"{p.item.ref}: source image unreadable: {src}"))
            continue
        sources.append(src)
        ready.append(p)
    outputs, costs = _generate(gen_spec, ready, sources) if ready else ([], [])
    cond = _conditioning(gen_spec) if any(p.family.calls_generator for p in ready) else None
    sims = _embed_sims(similarity_spec, sources, outputs)
    for p, src, out, cost, sim in zip(ready, sources, outputs, costs, sims):
        conditioning = cond if p.family.calls_generator else "none"
        if isinstance(out, Exception):
            rows.append(_row(p, status="failed", error=f"{p.item.ref} [{p.spec.family}]: {out}",
                             conditioning=conditioning))
            continue
        png = encode_png(out)
        sha, uri = store.put_blob(png)
        psnr, ssim = fidelity(src, out)
        row = _row(
            p, blob_sha256=sha, blob_uri=uri, blob_bytes=len(png), width=out.width, height=out.height,
            psnr=psnr, ssim=ssim, psnr_gated=psnr_padded_square(src, out), gen_seconds=cost,
            embed_sim=sim, status="ok", error=None, conditioning=conditioning, gen_text=out.info.get(GEN_TEXT_INFO),
        )
        journal.append(row)
        rows.append(row)
    store.put_pending(journal)
    return pa.Table.from_pylist(rows, schema=THOUGHTS_SCHEMA)
