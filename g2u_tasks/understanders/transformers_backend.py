"""Understander backend "transformers": any AutoModelForImageTextToText with a chat-template processor."""
from __future__ import annotations

import threading
from pathlib import Path

from g2u_tasks.config import ModelSpec
from g2u_tasks.tiny_models import ensure_model, read_model_card
from g2u_tasks.understanders.base import UnderstandRequest, register_backend

_DTYPES = {
    "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16", "float32": "float32",
}


def _dtype(name: str):
    import torch

    if name == "auto":
        return "auto"
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use auto, bfloat16, float16 or float32")
    return getattr(torch, _DTYPES[name])


@register_backend("transformers")
class TransformersUnderstander:
    def __init__(self, spec: ModelSpec):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        params = dict(spec.params)
        self.model_path = ensure_model(spec)
        self.name = f"transformers:{spec.model}"
        card = read_model_card(self.model_path) if Path(self.model_path).is_dir() else None
        self.notes = "random weights: numbers are not meaningful" if card and card.get("random_weights") else None
        self.max_new_tokens = int(params.get("max_new_tokens", 16))
        self.batch_size = max(1, int(params.get("batch_size", 8)))
        self.device = params.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")

        common = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
        self.processor = AutoProcessor.from_pretrained(self.model_path, **common)
        model_kwargs = {"dtype": _dtype(params.get("dtype", "auto"))}
        if params.get("attn_implementation"):
            model_kwargs["attn_implementation"] = params["attn_implementation"]
        self.model = AutoModelForImageTextToText.from_pretrained(self.model_path, **common, **model_kwargs)
        self.model.to(self.device).eval()

        tok = self.processor.tokenizer
        tok.padding_side = "left"  # decoder-only generation needs left padding
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self._lock = threading.Lock()

    def _render(self, req: UnderstandRequest) -> str:
        content = [{"type": "image"} for _ in req.images] + [{"type": "text", "text": req.prompt}]
        messages = [{"role": "user", "content": content}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _generate(self, batch: list[UnderstandRequest]) -> list[str]:
        import torch

        texts = [self._render(r) for r in batch]
        images = [im.convert("RGB") for r in batch for im in r.images]
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        inputs = inputs.to(self.device, dtype=self.model.dtype)  # casts only float tensors
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = out[:, inputs["input_ids"].shape[1]:]
        decoded = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        return [d.strip() for d in decoded]

    def answer(self, batch: list[UnderstandRequest]) -> list[str]:
        # Bucket by size (image count, prompt length) to limit padding; restore input order after.
        order = sorted(range(len(batch)), key=lambda i: (len(batch[i].images), len(batch[i].prompt)))
        answers: list[str | None] = [None] * len(batch)
        with self._lock:
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                for i, text in zip(idx, self._generate([batch[i] for i in idx])):
                    answers[i] = text
        return answers  # type: ignore[return-value]
