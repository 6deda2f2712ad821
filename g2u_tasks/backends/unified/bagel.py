"""Backend "bagel": BAGEL (github.com/ByteDance-Seed/Bagel), one resident model that edits and answers.

BAGEL conditions generation on the source image (VAE + ViT tokens in context), so generation is true
image editing; understanding is text output with the images in context (ViT tokens only). The model is
the official code's, loaded from a checkout the config names (`code`, kept outside this repository; see
`bagel_official`), and runs in one of two ways:

- `batched: true` (default): `bagel_packed.PackedBagel`, several requests as packed sequences with shared
  contexts (an item's answers share its original image's context; a source's edits share its VAE + ViT
  context), greedy answers;
- `batched: false`: the official `InterleaveInferencer`, one request at a time (also used for sampled
  answers, `answer_kwargs: {do_sample: true}`).

Params: load: code (the checkout), attention ("auto": flash_attn when installed, else the SDPA varlen
implementation; "flash_attn"; "sdpa"), max_memory_gib (80, per GPU), device ("cuda"; "cpu" for small
models), dtype ("bfloat16" under autocast, as app.py; "float32": no autocast, e.g. exact CPU comparisons).
Roles: think (false; the planning text goes to the thought's `gen_text`, the answer's reasoning
stays in its raw output), max_new_tokens (64, answers), max_think_tokens (1000, edit planning), fit
("crop"; BAGEL keeps the source aspect, this only snaps to the exact source size), generate_kwargs /
answer_kwargs (override the app.py defaults below), batched (true), pack_size (32 samples per packed
forward). Seeds: each edit's VAE posterior sample and initial noise come from its request's seed.
Conversations (concat_conversation) are given to BAGEL interleaved, turn by turn: images, then text.
"""
from __future__ import annotations

from typing import Any

from PIL import Image

from g2u_tasks.config import ModelSpec
from g2u_tasks.backends.common import fit_to_size
from g2u_tasks.backends.generators.base import GenerateRequest, with_gen_text
from g2u_tasks.backends.tiny_models import ensure_model
from g2u_tasks.backends.understanders.base import Turn, UnderstandRequest
from g2u_tasks.backends.unified.bagel_official import (
    INSTALL_HINT, autocast, load_official, official_record, seeded,
)
from g2u_tasks.backends.unified.bagel_packed import PackedBagel
from g2u_tasks.backends.unified.base import UnifiedBackend, register_unified

# The official app.py's image-editing and understanding defaults.
EDIT_DEFAULTS = {"cfg_text_scale": 4.0, "cfg_img_scale": 2.0, "cfg_interval": [0.0, 1.0], "timestep_shift": 3.0,
                 "num_timesteps": 50, "cfg_renorm_min": 0.0, "cfg_renorm_type": "text_channel"}
ANSWER_DEFAULTS = {"do_sample": False, "text_temperature": 0.3}

@register_unified("bagel")
class BagelBackend(UnifiedBackend):
    conditioning = "source_pixels"  # VAE + ViT tokens of the source in context (thoughts.conditioning)
    load_params = ("code", "attention", "max_memory_gib", "device", "dtype")
    role_params = ("think", "max_new_tokens", "max_think_tokens", "fit", "generate_kwargs", "answer_kwargs",
                   "batched", "pack_size")

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.official = self.resident
        self.inferencer = self.official.inferencer
        p = self.params
        self.think = bool(p.get("think", False))
        self.max_new_tokens = int(p.get("max_new_tokens", 64))
        self.max_think_tokens = int(p.get("max_think_tokens", 1000))
        self.fit = str(p.get("fit", "crop"))
        self.generate_kwargs = {**EDIT_DEFAULTS, **p.get("generate_kwargs", {})}
        self.answer_kwargs = {**ANSWER_DEFAULTS, "max_think_token_n": self.max_new_tokens,
                              **p.get("answer_kwargs", {})}
        self.packed = PackedBagel(self.official, int(p.get("pack_size", 32))) if p.get("batched", True) else None
        self.notes = run_notes(self.official.record, bool(self.packed))

    @classmethod
    def describe(cls, spec: ModelSpec) -> str:
        """The notes a run records for this spec, without loading the model (the code, its revision,
        the attention and the weights card come from files; see official_record)."""
        p = spec.params
        if not p.get("code"):
            raise ImportError(INSTALL_HINT)
        return run_notes(official_record(str(spec.model), str(p["code"]), str(p.get("attention", "auto"))),
                         bool(p.get("batched", True)))

    @classmethod
    def load(cls, spec: ModelSpec) -> Any:
        p = spec.params
        if not p.get("code"):
            raise ImportError(INSTALL_HINT)
        return load_official(ensure_model(spec), str(p["code"]), str(p.get("attention", "auto")),
                             int(p.get("max_memory_gib", 80)), str(p.get("device", "cuda")),
                             str(p.get("dtype", "bfloat16")))

    def generate(self, batch: list[GenerateRequest]) -> list[Image.Image]:
        if self.packed is not None:
            results = self.packed.edit([r.image for r in batch], [r.prompt for r in batch], [r.seed for r in batch],
                                       self.think, self.max_think_tokens, **self.generate_kwargs)
        else:
            results = [self._edit_one(r) for r in batch]
        out = []
        for req, (image, plan) in zip(batch, results):
            if not isinstance(image, Image.Image):
                raise RuntimeError(f"bagel: no image came back for prompt {req.prompt[:60]!r}")
            out.append(with_gen_text(fit_to_size(image, req.image.size, self.fit), plan))
        return out

    def _edit_one(self, req: GenerateRequest) -> tuple[Image.Image | None, str | None]:
        with seeded(req.seed), autocast(self.official.device, self.official.dtype):
            result = self.inferencer(image=req.image.convert("RGB"), text=req.prompt, think=self.think,
                                     max_think_token_n=self.max_think_tokens, **self.generate_kwargs)
        return result.get("image"), result.get("text")

    def answer(self, batch: list[UnderstandRequest]) -> list[str]:
        inputs = [interleaved(req) for req in batch]
        if self.packed is not None and not self.answer_kwargs.get("do_sample"):
            texts = self.packed.answer(inputs, self.think, int(self.answer_kwargs["max_think_token_n"]))
        else:
            texts = [self._answer_one(x) for x in inputs]
        return [t.strip() for t in texts]

    def _answer_one(self, inputs: list[str | Image.Image]) -> str:
        with autocast(self.official.device, self.official.dtype):
            outputs = self.inferencer.interleave_inference(inputs, understanding_output=True, think=self.think,
                                                           **self.answer_kwargs)
        text = next((o for o in reversed(outputs) if isinstance(o, str)), None)
        if text is None:
            raise RuntimeError("bagel: the inferencer returned no text")
        return text


def run_notes(record: dict, batched: bool) -> str:
    notes = "; ".join([f"official code {record.get('code')} @ {record.get('code_revision') or 'not a git checkout'}",
                       f"attention {record.get('attention')}", f"weights {record.get('weights_card')}",
                       "batched" if batched else "one request at a time"])
    if "random weights" in str(record.get("weights_card")):
        notes += "; random weights: numbers are not meaningful"
    return notes


def interleaved(req: UnderstandRequest) -> list[str | Image.Image]:
    """BAGEL's input list for a request: images then text, turn by turn (roles are not marked)."""
    turns = req.turns or [Turn("user", list(req.images), req.prompt)]
    out: list[str | Image.Image] = []
    for turn in turns:
        out += [im.convert("RGB") for im in turn.images]
        if turn.text:
            out.append(turn.text)
    return out
