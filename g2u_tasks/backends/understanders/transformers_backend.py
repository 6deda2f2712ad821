"""Understander backend "transformers": any AutoModelForImageTextToText with a chat-template processor.

Serves LLaVA(-1.5, -OneVision), Qwen2.5-VL, Qwen3-VL, InternVL, Idefics3/SmolVLM, Gemma 3, ...:
several images per prompt, greedy decoding, left-padded chunks bucketed by size, the next chunk's
preprocessing overlapped with the current chunk's generation, and CUDA out-of-memory halving.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from g2u_tasks.config import ModelSpec
from g2u_tasks.backends.tiny_models import ensure_model, read_model_card
from g2u_tasks.backends.understanders.base import Turn, UnderstandRequest, register_backend

# Fallback when the chat template cannot show images in an assistant turn: the assistant turn keeps
# a text stand-in and its images open the next user turn under this label.
EARLIER_OUTPUT_TEXT = "Here is the edited image."
EARLIER_OUTPUT_LABEL = "The image above is the edited image you produced in your previous turn."

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
        tok.padding_side = "left"  # decoder-only generation needs left padding (also passed per call)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self._lock = threading.Lock()  # one answer() at a time per instance
        self._proc_lock = threading.Lock()  # the processor/tokenizer is used from two threads
        self.assistant_images = self._template_shows_assistant_images()

    # ---- message building ------------------------------------------------------
    def _apply_template(self, messages: list[dict]) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    @staticmethod
    def _content(n_images: int, text: str) -> list[dict]:
        return [{"type": "image"} for _ in range(n_images)] + ([{"type": "text", "text": text}] if text else [])

    def _template_shows_assistant_images(self) -> bool:
        """Probe once: does the chat template render an image placed in an assistant turn?
        (It may raise, or silently drop it: then the rendering equals the text-only one.)"""
        def probe(n: int) -> str:
            return self._apply_template([
                {"role": "user", "content": self._content(0, "q")},
                {"role": "assistant", "content": self._content(n, "a")},
                {"role": "user", "content": self._content(0, "q")},
            ])
        try:
            return probe(1) != probe(0)
        except Exception:  # noqa: BLE001 - any template error means "not supported"
            return False

    def _messages(self, turns: list[Turn]) -> list[dict]:
        """Chat messages of a conversation, images in order; assistant images moved to the next user
        turn (labelled as the model's own earlier output) when the template cannot show them."""
        messages, carried = [], 0
        for t in turns:
            if t.role == "assistant" and t.images and not self.assistant_images:
                messages.append({"role": "assistant", "content": self._content(0, t.text or EARLIER_OUTPUT_TEXT)})
                carried += len(t.images)
                continue
            content = self._content(len(t.images), t.text)
            if carried:
                content = self._content(carried, EARLIER_OUTPUT_LABEL) + content
                carried = 0
            messages.append({"role": t.role, "content": content})
        return messages

    def _render(self, req: UnderstandRequest) -> str:
        if req.turns:
            return self._apply_template(self._messages(req.turns))
        content = [{"type": "image"} for _ in req.images] + [{"type": "text", "text": req.prompt}]
        return self._apply_template([{"role": "user", "content": content}])

    def _prepare(self, batch: list[UnderstandRequest]):
        """Processor outputs (CPU tensors) for one chunk; images nested per prompt."""
        texts = [self._render(r) for r in batch]
        images = [[im.convert("RGB") for im in r.images] for r in batch]
        bos = self.processor.tokenizer.bos_token
        # A template that already writes BOS must not get a second one (as processor.apply_chat_template does).
        add_special_tokens = not (bos and all(t.startswith(bos) for t in texts))
        with self._proc_lock:
            return self.processor(
                text=texts, images=images if any(images) else None, padding=True, padding_side="left",
                add_special_tokens=add_special_tokens, return_tensors="pt",
            )

    def _generate(self, inputs) -> list[str]:
        import torch

        # Floats to the model dtype, everything to the device; a new dict so `inputs` stays on the CPU.
        feats = {
            k: v.to(self.device, dtype=self.model.dtype if v.is_floating_point() else None)
            if torch.is_tensor(v) else v
            for k, v in inputs.items()
        }
        with torch.inference_mode():
            out = self.model.generate(
                **feats, max_new_tokens=self.max_new_tokens, do_sample=False,
                pad_token_id=self.processor.tokenizer.pad_token_id,
            )
        new_tokens = out[:, feats["input_ids"].shape[1]:].cpu()
        with self._proc_lock:
            decoded = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        return [d.strip() for d in decoded]

    def _answer_chunk(self, batch: list[UnderstandRequest], inputs=None) -> list[str]:
        """Generate one chunk; on CUDA OOM free the cache and retry each half, down to one item."""
        import torch

        try:
            return self._generate(inputs if inputs is not None else self._prepare(batch))
        except torch.cuda.OutOfMemoryError:
            if len(batch) == 1:
                raise
        # Outside the except block: the failed attempt's GPU tensors are released by now.
        inputs = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = len(batch) // 2
        return self._answer_chunk(batch[:half]) + self._answer_chunk(batch[half:])

    def answer(self, batch: list[UnderstandRequest]) -> list[str]:
        # Bucket by size (image count, prompt length) to limit padding; restore input order after.
        order = sorted(range(len(batch)), key=lambda i: (len(batch[i].images), len(batch[i].prompt)))
        chunks = [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        answers: list[str | None] = [None] * len(batch)
        with self._lock, ThreadPoolExecutor(max_workers=1, thread_name_prefix="g2u-prep") as pool:
            # The worker preprocesses chunk k+1 while this thread generates chunk k.
            pending = pool.submit(self._prepare, [batch[i] for i in chunks[0]]) if chunks else None
            for k, idx in enumerate(chunks):
                inputs = pending.result()
                if k + 1 < len(chunks):
                    pending = pool.submit(self._prepare, [batch[i] for i in chunks[k + 1]])
                for i, text in zip(idx, self._answer_chunk([batch[i] for i in idx], inputs)):
                    answers[i] = text
        return answers  # type: ignore[return-value]
