"""Self-directed imagination: a model picks the edit family and writes the edit instruction.

prompt_source `self`: the understander (for a unified backend, the one resident model) plans;
`planner`: an external model (`cfg.planner`, e.g. the openai backend). One planning call per
item x seed. The answer is parsed (a JSON object anywhere in the text, else `family: ...
instruction: ...`); a failed parse is recorded as such (plan_status parse_failed, raw text kept),
never guessed. Plans are recorded in the thought manifest (columns plan_id, chosen_family, prompt,
plan_status, plan_raw), so reruns and the understanding pass reuse them without calling the model.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import polars as pl

from g2u_tasks.backends.common import isolate_failures
from g2u_tasks.config import ModelSpec, RunConfig
from g2u_tasks.thoughts.families import EditFamily
from g2u_tasks.images import decode
from g2u_tasks.understanding.prompts import question_text
from g2u_tasks.records import Item, canonical_json, sha256_hex

OK, PARSE_FAILED, ERROR, MISSING = "ok", "parse_failed", "error", "missing"
RECORDED = (OK, PARSE_FAILED)  # statuses written to the manifest; errors are retried next run

PLANNER_TEMPLATE = (
    "Before answering the question below you may edit the image once. Choose the ONE kind of edit that "
    "would help most and write the instruction for the image editor.\n"
    "Kinds of edit:\n{menu}\n"
    "Question:\n{question}\n"
    'Reply with only a JSON object: {{"family": "<one name from the list>", "instruction": "<the edit '
    'instruction>"}}'
)
# Params that change where/how a call is sent, not what the planner answers (left out of plan_id).
_TRANSPORT_PARAMS = {"base_url", "api_key_env", "concurrency", "timeout_s", "max_retries", "backoff_s",
                     "batch_size", "device"}


@dataclass(frozen=True)
class Plan:
    plan_id: str
    status: str  # ok | parse_failed (recorded) | error | missing (not recorded)
    family: str | None = None  # the chosen family's configured name
    instruction: str | None = None
    raw: str | None = None
    reason: str | None = None
    planner: str | None = None
    decoding: str | None = None  # greedy | sampled


@dataclass(frozen=True)
class PlanJob:
    item: Item
    seed: int
    plan_id: str


def planner_spec(cfg: RunConfig) -> ModelSpec:
    """The model that plans: cfg.planner, or (self) the understander with a planning answer budget."""
    if cfg.prompt_source == "planner":
        spec = cfg.planner
        if spec is None:
            raise ValueError("prompt_source planner needs `planner`")
        if "max_new_tokens" in spec.params:
            return spec
        return spec.model_copy(update={"params": {**spec.params, "max_new_tokens": cfg.plan_max_new_tokens}})
    spec = cfg.understander
    return spec.model_copy(update={"params": {**spec.params, "max_new_tokens": cfg.plan_max_new_tokens}})


def decoding_of(spec: ModelSpec, understander=None) -> str:
    """sampled only where the backend declares it samples and a temperature > 0 is set."""
    temp = float(spec.params.get("temperature") or 0)
    return "sampled" if temp > 0 and getattr(understander, "supports_sampling", False) else "greedy"


def plan_version(families: list[EditFamily]) -> str:
    """Short hash of the planner prompt and the family menu it offers."""
    menu = [(f.name, f.description, f.version) for f in families]
    return sha256_hex(canonical_json({"template": PLANNER_TEMPLATE, "menu": menu}))[:8]


def planner_prompt(item: Item, families: list[EditFamily]) -> str:
    menu = "\n".join(f"- {f.name}: {f.description}" for f in families)
    return PLANNER_TEMPLATE.format(menu=menu, question=question_text(item).strip())


def plan_jobs(items: list[Item], families: list[EditFamily], cfg: RunConfig) -> list[PlanJob]:
    """One planning job per item x seed; plan_id hashes everything the plan depends on."""
    spec = planner_spec(cfg)
    planner = {"backend": spec.backend, "model": spec.model, "revision": spec.revision,
               "params": {k: v for k, v in spec.params.items() if k not in _TRANSPORT_PARAMS}}
    version = plan_version(families)
    return [
        PlanJob(item, seed, sha256_hex(canonical_json({
            "benchmark": item.benchmark, "item_id": item.item_id, "image_sha256": item.image_sha256,
            "prompt_source": cfg.prompt_source, "planner": planner, "plan_version": version, "seed": seed,
        })))
        for item in items
        for seed in cfg.seeds
    ]


# ---- parsing -------------------------------------------------------------------
_FALLBACK = re.compile(
    r"family[\s*\"'`]*[:=]\s*(?P<family>.+?)[\s,;.*\"'`]*instruction[\s*\"'`]*[:=]\s*(?P<instruction>.+)",
    re.IGNORECASE | re.DOTALL,
)
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().strip("*\"'`").lower())


def _json_objects(text: str):
    """Every JSON object in the text, outer ones first (nested ones are tried too)."""
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch == "{":
            try:
                obj, _ = decoder.raw_decode(text, i)
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj


def _candidates(text: str):
    """(family, instruction) pairs the text offers: JSON objects first, then the key: value fallback."""
    for obj in _json_objects(text):
        low = {str(k).strip().lower(): v for k, v in obj.items()}
        if "family" in low:
            yield low.get("family"), low.get("instruction")
    for start in re.finditer("family", text, re.IGNORECASE):  # every occurrence, overlapping ones too
        m = _FALLBACK.match(text, start.start())
        if m:
            instruction = m.group("instruction").split("\n\n")[0]
            yield m.group("family"), instruction.strip().strip("*\"'`}").strip()


def parse_plan(text: str, families: list[EditFamily]) -> tuple[str | None, str | None, str | None]:
    """(family name as configured, instruction, None) or (None, None, reason). Never guesses: the
    first candidate naming a configured family with a non-empty instruction wins (so an echoed
    example such as "<one name from the list>" is skipped); none => the first candidate's fault."""
    known = {_norm(f.name): f.name for f in families}
    text = (text or "").translate(_QUOTES)
    reason = None
    for family, instruction in _candidates(text):
        if not isinstance(family, str) or _norm(family) not in known:
            reason = reason or f"family {family!r} is not one of {', '.join(sorted(known.values()))}"
            continue
        if not isinstance(instruction, str) or not instruction.strip():
            reason = reason or f"no edit instruction for family {known[_norm(family)]}"
            continue
        return known[_norm(family)], instruction.strip(), None
    return None, None, reason or "no JSON object with a family and no 'family: ... instruction: ...' found"


# ---- calling the planner -----------------------------------------------------------
def answer_isolated(understander, requests: list) -> list:
    """Answer a batch; if it fails, answer one by one so a bad request fails alone."""
    return isolate_failures(understander.answer, requests)


def plan_batch(spec: ModelSpec, families: list[EditFamily], jobs: list[PlanJob]) -> list[Plan]:
    """Ask the planner once per job (item x seed) and parse each answer."""
    from g2u_tasks.backends.understanders import UnderstandRequest, get_understander

    understander = get_understander(spec)
    decoding = decoding_of(spec, understander)
    temperature = float(spec.params.get("temperature") or 0) if decoding == "sampled" else None
    plans: dict[int, Plan] = {}
    ready, requests = [], []
    for i, job in enumerate(jobs):
        try:
            images = [decode(b) for b in job.item.images]
        except Exception as exc:  # noqa: BLE001
            plans[i] = Plan(job.plan_id, ERROR, reason=f"{job.item.ref}: image unreadable: {exc}")
            continue
        ready.append(i)
        requests.append(UnderstandRequest(images, planner_prompt(job.item, families), seed=job.seed,
                                          temperature=temperature))
    for i, out in zip(ready, answer_isolated(understander, requests) if requests else []):
        job = jobs[i]
        if isinstance(out, Exception):
            plans[i] = Plan(job.plan_id, ERROR, reason=f"{job.item.ref}: planner call failed: {out}",
                            planner=understander.name, decoding=decoding)
            continue
        family, instruction, reason = parse_plan(out, families)
        plans[i] = Plan(job.plan_id, OK if family else PARSE_FAILED, family, instruction, out,
                        None if family else f"{job.item.ref} (seed {job.seed}): plan parse failed: {reason}",
                        understander.name, decoding)
    return [plans[i] for i in range(len(jobs))]


# the manifest columns recorded_plans reads
PLAN_COLUMNS = ("plan_id", "plan_status", "chosen_family", "prompt", "plan_raw", "error", "planner", "plan_decoding")


def recorded_plans(manifest: pl.DataFrame, jobs: list[PlanJob]) -> dict[str, Plan]:
    """Plans already in the manifest (any generator), by plan_id."""
    ids = [j.plan_id for j in jobs]
    rows = (manifest.filter(pl.col("plan_id").is_in(ids) & pl.col("plan_status").is_in(list(RECORDED)))
            .unique(subset="plan_id", keep="first", maintain_order=True))
    return {
        r["plan_id"]: Plan(r["plan_id"], r["plan_status"], r["chosen_family"] if r["plan_status"] == OK else None,
                           r["prompt"] if r["plan_status"] == OK else None, r["plan_raw"],
                           None if r["plan_status"] == OK else r["error"], r["planner"], r["plan_decoding"])
        for r in rows.iter_rows(named=True)
    }


def split_recorded(manifest: pl.DataFrame, items: list[Item], families: list[EditFamily],
                   cfg: RunConfig) -> tuple[dict[str, Plan], list[PlanJob]]:
    """(plans the manifest already records, jobs still to ask the planner)."""
    jobs = plan_jobs(items, families, cfg)
    plans = recorded_plans(manifest, jobs)
    return plans, [j for j in jobs if j.plan_id not in plans]


def plan_counts(plans: list[Plan]) -> dict[str, int]:
    return {f"plans_{s}": sum(p.status == s for p in plans) for s in (OK, PARSE_FAILED, ERROR)}
