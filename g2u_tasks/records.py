"""The product's records (item, thought key) and the Arrow schemas of every table it writes."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

QUESTION_TYPES = ("mcq", "yes_no", "open", "numeric")
MODES = ("baseline", "concat", "replace", "replace_gated", "concat_conversation")
DEFAULT_MODES = ("baseline", "concat", "replace")  # the paper's three; the feedback formats are opt-in
PROMPT_SOURCES = ("template", "self", "planner")
# What a thought's generator conditioned on (thoughts.conditioning), declared by each generator backend:
# the source image's pixels (an edit), the source only as understanding tokens in the prompt, the
# edit prompt alone (text-to-image), or nothing (identity: the source itself, no generator call).
CONDITIONINGS = ("source_pixels", "source_in_context", "text_only", "none")
BASELINE = "baseline"


def canonical_json(obj: Any) -> str:
    """Stable JSON: sorted keys, no whitespace, UTF-8 kept."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def images_sha256(images: tuple[bytes, ...] | list[bytes]) -> str:
    """One digest for an item's images: the image's own sha256, or a digest over each image's sha256."""
    if len(images) == 1:
        return sha256_hex(images[0])
    return sha256_hex("".join(sha256_hex(b) for b in images))


@dataclass(frozen=True, slots=True)
class Item:
    benchmark: str
    item_id: str
    question: str
    options: dict[str, str]
    answer: str | None
    category: str | None
    question_type: str
    image_sha256: str
    images: tuple[bytes, ...]
    hint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    image_error: str | None = None  # set by the loader when an image cannot be decoded

    @property
    def ref(self) -> str:
        return f"{self.benchmark}/{self.item_id}"


@dataclass(frozen=True, slots=True)
class ThoughtSpec:
    """Everything that changes the generated image: its hash is the thought key."""

    benchmark: str
    item_id: str
    image_sha256: str
    family: str
    family_version: str
    prompt: str
    prompt_source: str
    generator: str
    generator_model: str | None
    generator_revision: str | None
    generator_params: dict[str, Any]
    seed: int
    # Self-directed thoughts only (prompt_source self|planner): the family the model chose and its plan.
    chosen_family: str | None = None
    plan_id: str | None = None

    def key_json(self) -> str:
        key = {
            "benchmark": self.benchmark,
            "item_id": self.item_id,
            "image_sha256": self.image_sha256,
            "family": self.family,
            "family_version": self.family_version,
            "prompt": self.prompt,
            "prompt_source": self.prompt_source,
            "generator": {
                "backend": self.generator,
                "model": self.generator_model,
                "revision": self.generator_revision,
                "params": self.generator_params,
            },
            "seed": self.seed,
        }
        if self.prompt_source != "template":  # template keys stay as they always were
            key["chosen_family"] = self.chosen_family
            key["plan_id"] = self.plan_id
        return canonical_json(key)

    @property
    def thought_id(self) -> str:
        return sha256_hex(self.key_json())


_ts = pa.timestamp("us", tz="UTC")

ITEMS_SCHEMA = pa.schema(
    [
        ("benchmark", pa.string()),
        ("item_id", pa.string()),
        ("question", pa.string()),
        ("options", pa.string()),  # JSON object letter -> text
        ("answer", pa.string()),
        ("category", pa.string()),
        ("question_type", pa.string()),
        ("image_sha256", pa.string()),
        ("n_images", pa.int32()),
        ("hint", pa.string()),
        ("extra", pa.string()),  # JSON of the remaining source columns
        ("image_error", pa.string()),
    ]
)

THOUGHTS_SCHEMA = pa.schema(
    [
        ("thought_id", pa.string()),
        ("benchmark", pa.string()),
        ("item_id", pa.string()),
        ("image_sha256", pa.string()),
        ("family", pa.string()),
        ("family_version", pa.string()),
        ("prompt", pa.string()),
        ("prompt_source", pa.string()),
        ("generator", pa.string()),
        ("generator_model", pa.string()),
        ("generator_revision", pa.string()),
        ("generator_params", pa.string()),
        ("seed", pa.int64()),
        ("key_json", pa.string()),
        ("blob_sha256", pa.string()),
        ("blob_uri", pa.string()),  # relative to the store root
        ("blob_bytes", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("psnr", pa.float64()),
        ("ssim", pa.float64()),
        ("gen_seconds", pa.float64()),  # its share of the generator call that made it (0: identity)
        ("status", pa.string()),  # ok | failed
        ("error", pa.string()),
        ("created_at", _ts),
        # added with self-directed imagination and fidelity gating (nullable; older rows read as null)
        ("chosen_family", pa.string()),  # template: = family; self/planner: the family the model chose
        ("plan_status", pa.string()),  # ok | parse_failed; null for template thoughts
        ("plan_raw", pa.string()),  # the planner's raw answer; null for template thoughts
        ("plan_id", pa.string()),  # hash of what the plan depends on (item, planner, menu, seed)
        ("planner", pa.string()),  # the model that planned, e.g. "transformers:<path>"
        ("plan_decoding", pa.string()),  # greedy (choices deterministic across seeds) | sampled
        ("psnr_gated", pa.float64()),  # PSNR vs the source padded to square with black (replace_gated)
        ("embed_sim", pa.float64()),  # cosine of image embeddings vs the source (similarity_model); else null
        ("conditioning", pa.string()),  # one of CONDITIONINGS; null: no generator call was made (older rows too)
        ("gen_text", pa.string()),  # text the generator wrote with the image (BAGEL think-mode plan); else null
    ]
)

PREDICTIONS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("benchmark", pa.string()),
        ("item_id", pa.string()),
        ("condition", pa.string()),  # baseline | family name | self | planner
        ("mode", pa.string()),  # one of MODES
        ("seed", pa.int64()),
        ("thought_id", pa.string()),
        ("understander", pa.string()),
        ("prompt", pa.string()),
        ("raw_output", pa.string()),
        ("extracted_answer", pa.string()),
        ("answer", pa.string()),
        ("correct", pa.bool_()),  # the suite's verdict; null = not scored (see unscored_reason)
        ("gate_passed", pa.bool_()),  # replace_gated: True = thought used, False = original kept; else null
        ("unscored_reason", pa.string()),  # why correct is null (e.g. "needs judge: ..."); null when scored
    ]
)

METRICS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("benchmark", pa.string()),
        ("condition", pa.string()),
        ("mode", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),  # null when status is not_computed
        ("n", pa.int64()),
        ("unit", pa.string()),  # fraction | x100 | sum
        ("status", pa.string()),  # ok | not_computed
        ("note", pa.string()),
    ]
)

RUNS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("started_at", _ts),
        ("finished_at", _ts),
        ("config_json", pa.string()),
        ("dataset_version", pa.int64()),
        ("generator", pa.string()),
        ("understander", pa.string()),
        ("notes", pa.string()),
        ("n_items", pa.int64()),
        ("n_thoughts_generated", pa.int64()),
        ("n_thoughts_reused", pa.int64()),
        ("status", pa.string()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("stage", pa.string()),  # the table the row was meant for
        ("benchmark", pa.string()),
        ("item_id", pa.string()),
        ("reason", pa.string()),
        ("record", pa.string()),  # the offending row as JSON (images left out)
        ("recorded_at", _ts),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "items": ITEMS_SCHEMA,
    "thoughts": THOUGHTS_SCHEMA,
    "predictions": PREDICTIONS_SCHEMA,
    "metrics": METRICS_SCHEMA,
    "runs": RUNS_SCHEMA,
    "quarantine": QUARANTINE_SCHEMA,
}


def items_table(items: list[Item]) -> pa.Table:
    """Arrow rows of items (images left out; their digest and count stay)."""
    return pa.Table.from_pylist(
        [
            {
                "benchmark": it.benchmark,
                "item_id": it.item_id,
                "question": it.question,
                "options": canonical_json(it.options),
                "answer": it.answer,
                "category": it.category,
                "question_type": it.question_type,
                "image_sha256": it.image_sha256,
                "n_images": len(it.images),
                "hint": it.hint,
                "extra": canonical_json(it.extra),
                "image_error": it.image_error,
            }
            for it in items
        ],
        schema=ITEMS_SCHEMA,
    )
