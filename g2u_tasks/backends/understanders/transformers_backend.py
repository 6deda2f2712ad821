"""Understander backend "transformers": any AutoModelForImageTextToText with a chat-template processor.

Serves LLaVA(-1.5, -OneVision), Qwen2.5-VL, Qwen3-VL, InternVL, Idefics3/SmolVLM, Gemma 3, ...:
several images per prompt, greedy decoding, left-padded chunks bucketed by size, the next chunk's
preprocessing overlapped with the current chunk's generation, and CUDA out-of-memory halving.

`share_prefix` (true / false / auto, the default: on when the model runs on a GPU): prompts of a batch
that begin with the same image (an item's baseline and concat prompts) are chunked together, continue
from one shared prefix and decode in one pass per chunk (prefix_sharing.py); greedy fp32 answers are
the same as without it. On an H200 it runs a 9-prompt item sweep at 1.39x plain batched `generate`;
on CPU with tiny shapes it is overhead-bound (docs/PERFORMANCE.md, "Shared prefix"). With it on, every
chunk (shared or not) decodes greedily from a static cache, and `cuda_graphs` (true / false / auto, the
default: on for CUDA) replays each chunk's one-token decode step as a CUDA graph; `compile_decode`
(default false; its first call compiles for about 40 s) runs that step through `torch.compile`. The
run's notes say which were on.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from g2u_tasks.backends.common import default_device, parse_dtype, split_on_oom
from g2u_tasks.backends.tiny_models import ensure_model, read_model_card
from g2u_tasks.backends.understanders import prefix_sharing
from g2u_tasks.backends.understanders.base import Turn, UnderstandRequest, register_backend
from g2u_tasks.config import ModelSpec

# Fallback when the chat template cannot show images in an assistant turn: the assistant turn keeps
# a text stand-in and its images open the next user turn under this label.
EARLIER_OUTPUT_TEXT = "Here is the edited image."
EARLIER_OUTPUT_LABEL = "The image above is the edited image you produced in your previous turn."
PARAMS = frozenset({"max_new_tokens", "batch_size", "device", "dtype", "attn_implementation", "share_prefix",
                    "cuda_graphs", "compile_decode"})


@register_backend("transformers", PARAMS)
class TransformersUnderstander:
    """Not thread-safe: the registry serialises its calls."""

    def __init__(self, spec: ModelSpec):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        params = dict(spec.params)
        self.model_path = ensure_model(spec)
        self.name = f"transformers:{spec.model}"
        card = read_model_card(self.model_path) if Path(self.model_path).is_dir() else None
        self.notes = "random weights: numbers are not meaningful" if card and card.get("random_weights") else None
        self.max_new_tokens = int(params.get("max_new_tokens", 16))
        self.batch_size = max(1, int(params.get("batch_size", 8)))
        self.device = default_device(params.get("device"))
        on_cuda = str(self.device).startswith("cuda")
        share = _switch(params, "share_prefix", on_cuda)  # auto: on where it pays (on CPU, tiny shapes are overhead-bound)
        self.cuda_graphs = _switch(params, "cuda_graphs", on_cuda)
        if self.cuda_graphs and not on_cuda:
            raise ValueError(f"transformers understander: cuda_graphs needs a CUDA device, not {self.device}")
        self.compile_decode = _switch(params, "compile_decode", False)  # torch.compile of the decode step

        common = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
        self.processor = AutoProcessor.from_pretrained(self.model_path, **common)
        model_kwargs = {"dtype": parse_dtype(params.get("dtype", "auto"), "transformers understander")}
        if params.get("attn_implementation"):
            model_kwargs["attn_implementation"] = params["attn_implementation"]
        self.model = AutoModelForImageTextToText.from_pretrained(self.model_path, **common, **model_kwargs)
        self.model.to(self.device).eval()

        tok = self.processor.tokenizer
        tok.padding_side = "left"  # decoder-only generation needs left padding (also passed per call)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self._proc_lock = threading.Lock()  # the processor/tokenizer is used from two threads
        config = self.model.config
        self.image_token_id = getattr(config, "image_token_id", None)
        self.share_prefix = bool(share and self.image_token_id is not None
                                 and config.model_type in prefix_sharing.SHARED_MODEL_TYPES)
        if self.compile_decode and not self.share_prefix:
            raise ValueError("transformers understander: compile_decode needs the static-cache decoding of "
                             f"share_prefix ({', '.join(sorted(prefix_sharing.SHARED_MODEL_TYPES))} models)")
        if self.share_prefix:
            decoding = ("shared-prefix decoding" + (" with CUDA graphs" if self.cuda_graphs else "")
                        + (", compiled decode step" if self.compile_decode else ""))
            self.notes = "; ".join(filter(None, [self.notes, decoding]))
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

    def _gen_kwargs(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "do_sample": False,
                "pad_token_id": self.processor.tokenizer.pad_token_id}

    def _decode(self, new_tokens) -> list[str]:
        with self._proc_lock:
            decoded = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        return [d.strip() for d in decoded]

    def _generate(self, inputs, batch: list[UnderstandRequest] | None = None) -> list[str]:
        import torch

        if batch is not None and self.share_prefix:
            shared = self._generate_shared(inputs, batch)
            if shared is not None:
                return shared
        # Floats to the model dtype, everything to the device; a new dict so `inputs` stays on the CPU.
        feats = {
            k: v.to(self.device, dtype=self.model.dtype if v.is_floating_point() else None)
            if torch.is_tensor(v) else v
            for k, v in inputs.items()
        }
        if self.share_prefix:
            new = prefix_sharing.generate_static(self.model, feats, self._gen_kwargs(), self.cuda_graphs,
                                                 compiled=self.compile_decode)
            if new is not None:
                return self._decode(new)
        with torch.inference_mode():
            out = self.model.generate(**feats, **self._gen_kwargs())
        return self._decode(out[:, feats["input_ids"].shape[1]:].cpu())

    def _generate_shared(self, inputs, batch: list[UnderstandRequest]) -> list[str] | None:
        """Answers with shared prefixes; None when this chunk has none to share (or a layout the
        sharing does not read): then the plain batch runs."""
        rows = prefix_sharing.rows_from_inputs(inputs, [len(r.images) for r in batch], _share_keys(batch))
        if rows is None:
            return None
        new = prefix_sharing.generate_shared(self.model, rows, self.processor.tokenizer.pad_token_id,
                                             self.image_token_id, self._gen_kwargs(), graphs=self.cuda_graphs,
                                             compiled=self.compile_decode)
        return None if new is None else self._decode(new)

    def _answer_chunk(self, batch: list[UnderstandRequest], inputs) -> list[str]:
        """Generate one chunk from its prefetched inputs; on CUDA OOM, each half is prepared anew."""
        prefetched = [inputs]

        def call(chunk: list[UnderstandRequest]) -> list[str]:
            return self._generate(prefetched.pop() if prefetched else self._prepare(chunk), chunk)

        return split_on_oom(call, batch, self.name)

    def _chunks(self, batch: list[UnderstandRequest]) -> list[list[int]]:
        if self.share_prefix:
            return prefix_sharing.chunks_by_key(_share_keys(batch), self.batch_size)
        # Bucket by size (image count, prompt length) to limit padding.
        order = sorted(range(len(batch)), key=lambda i: (len(batch[i].images), len(batch[i].prompt)))
        return [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]

    def answer(self, batch: list[UnderstandRequest]) -> list[str]:
        chunks = self._chunks(batch)  # answers go back in input order
        answers: list[str | None] = [None] * len(batch)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="g2u-prep") as pool:
            # The worker preprocesses chunk k+1 while this thread generates chunk k.
            pending = pool.submit(self._prepare, [batch[i] for i in chunks[0]]) if chunks else None
            for k, idx in enumerate(chunks):
                inputs = pending.result()
                if k + 1 < len(chunks):
                    pending = pool.submit(self._prepare, [batch[i] for i in chunks[k + 1]])
                for i, text in zip(idx, self._answer_chunk([batch[i] for i in idx], inputs)):
                    answers[i] = text
        return answers  # type: ignore[return-value]


def _switch(params: dict, name: str, auto: bool) -> bool:
    """A true / false / auto param; auto resolves to `auto`."""
    value = params.get(name, "auto")
    if not isinstance(value, bool) and value != "auto":
        raise ValueError(f"transformers understander: {name} must be true, false or auto, got {value!r}")
    return auto if value == "auto" else value


def _share_keys(batch: list[UnderstandRequest]) -> list:
    """Per request the identity of its first image (None without images): requests that may share a
    prefix. The token check in prefix_sharing decides what they really share."""
    return [id(r.images[0]) if r.images else None for r in batch]

