"""Backend "janus": Janus-Pro through transformers (JanusForConditionalGeneration + JanusProcessor).

Understanding: the processor's chat template with the request's images + question, greedy decoding,
`max_new_tokens`, left-padded batches (images go through the SigLIP understanding encoder).

Generation is text-to-image; what Janus can and cannot condition on:
- It CANNOT take the source image as a pixel-level condition: image tokens come only from sampling
  its generation head; the VQ encoder is never used to seed or constrain them (no editing/inpainting).
  transformers' own `generate(generation_mode="image")` also ignores `pixel_values` (it embeds the
  prompt ids directly), so through that API the source image cannot even be in context.
- It CAN condition on the rendered edit prompt (default, the regime Janus-Pro was trained for).
  Its thought rows say so: `conditioning` "text_only" (never "source_pixels").
- With `params.source_in_context: true` the source image is also put in the prompt as understanding
  (SigLIP) tokens. This needs the model's own sampling loop, which this module implements (same CFG
  recipe as transformers/official Janus). Janus-Pro was not trained on image-conditioned generation,
  so this is out of distribution: measure it, don't assume it helps. Rows: "source_in_context".
The sampling loop: CFG with an unconditional branch that keeps only the first token (BOS) and the
final <begin_of_image> (everything else, including source-image tokens, becomes pad), per-request
`torch.Generator` seeded with the request's seed (outputs don't depend on batch composition), then
the VQ decoder maps the tokens to a square image (384² for Janus-Pro).

Output size policy: the square is fitted to the source's exact (width, height) with `params.fit`:
"crop" (default: centre-crop to the source aspect, then resize; undoes the processor's pad-to-square,
no distortion), "pad" (letterbox) or "stretch".

Params: load: dtype (default bfloat16 on CUDA, float32 on CPU), device, attn_implementation.
Understanding: max_new_tokens (16), batch_size (8). Generation: cfg_weight (generation_config's
guidance_scale, else 5), temperature (generation_config's, else 1; 0 = greedy), batch_size (4),
source_in_context (false), fit ("crop").
The image processor has a PIL backend: no torchvision needed (torchvision, if installed, is used).
"""
from __future__ import annotations

import inspect
from pathlib import Path

from PIL import Image

from g2u_tasks.config import ModelSpec
from g2u_tasks.backends.generators.base import GenerateRequest
from g2u_tasks.backends.tiny_models import ensure_model, read_model_card
from g2u_tasks.backends.understanders.base import UnderstandRequest
from g2u_tasks.backends.common import default_device, fit_to_size, parse_dtype
from g2u_tasks.backends.unified.base import UnifiedBackend, register_unified


class JanusResident:
    """The loaded model + processor shared by both roles."""

    def __init__(self, spec: ModelSpec):
        from transformers import AutoProcessor, JanusForConditionalGeneration

        params = spec.params
        self.path = ensure_model(spec)
        self.device = default_device(params.get("device"))
        dtype_name = params.get("dtype") or ("bfloat16" if self.device.startswith("cuda") else "float32")
        dtype = parse_dtype(dtype_name, "janus")
        common = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
        self.processor = AutoProcessor.from_pretrained(self.path, **common)
        kwargs = {"dtype": dtype}
        if params.get("attn_implementation"):
            kwargs["attn_implementation"] = params["attn_implementation"]
        self.model = JanusForConditionalGeneration.from_pretrained(self.path, **common, **kwargs)
        self.model.to(self.device).eval()
        tok = self.processor.tokenizer
        tok.padding_side = "left"  # decoder-only batches
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        card = read_model_card(self.path) if Path(self.path).is_dir() else None
        self.random_weights = bool(card and card.get("random_weights"))


@register_unified("janus")
class JanusBackend(UnifiedBackend):
    # thoughts.conditioning: text-to-image from the edit prompt; "source_in_context" with that param
    conditioning = "text_only"
    load_params = ("dtype", "device", "attn_implementation")
    role_params = ("max_new_tokens", "batch_size", "cfg_weight", "temperature", "source_in_context", "fit")

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        r: JanusResident = self.resident
        self.model, self.processor, self.device = r.model, r.processor, r.device
        self.notes = "random weights: numbers are not meaningful" if r.random_weights else None
        gc = self.model.generation_config
        p = self.params
        self.max_new_tokens = int(p.get("max_new_tokens", 16))
        self.answer_batch_size = max(1, int(p.get("batch_size", 8)))
        self.generate_batch_size = max(1, int(p.get("batch_size", 4)))
        self.cfg_weight = float(p.get("cfg_weight", getattr(gc, "guidance_scale", None) or 5.0))
        self.temperature = float(p.get("temperature", getattr(gc, "temperature", None) or 1.0))
        self.source_in_context = bool(p.get("source_in_context", False))
        if self.source_in_context:
            self.conditioning = "source_in_context"
        self.fit = str(p.get("fit", "crop"))

    @classmethod
    def load(cls, spec: ModelSpec) -> JanusResident:
        return JanusResident(spec)

    def _chat(self, n_images: int, text: str) -> str:
        content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]
        messages = [{"role": "user", "content": content}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    # ---- understanding ----
    def answer(self, batch: list[UnderstandRequest]) -> list[str]:
        out: list[str] = []
        for start in range(0, len(batch), self.answer_batch_size):
            out.extend(self._answer_chunk(batch[start:start + self.answer_batch_size]))
        return out

    def _answer_chunk(self, batch: list[UnderstandRequest]) -> list[str]:
        import torch

        texts = [self._chat(len(r.images), r.prompt) for r in batch]
        images = [im.convert("RGB") for r in batch for im in r.images]
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        inputs = inputs.to(self.device, dtype=self.model.dtype)  # casts only float tensors
        with torch.inference_mode():
            seqs = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                       generation_mode="text")
        new = seqs[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]

    # ---- generation ----
    def generate(self, batch: list[GenerateRequest]) -> list[Image.Image]:
        out: list[Image.Image] = []
        for start in range(0, len(batch), self.generate_batch_size):
            out.extend(self._generate_chunk(batch[start:start + self.generate_batch_size]))
        return out

    def _generate_chunk(self, batch: list[GenerateRequest]) -> list[Image.Image]:
        import torch

        n_img = 1 if self.source_in_context else 0
        texts = [self._chat(n_img, r.prompt) for r in batch]
        images = [r.image.convert("RGB") for r in batch] if n_img else None
        inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt",
                                generation_mode="image")  # appends <begin_of_image>
        inputs = inputs.to(self.device, dtype=self.model.dtype)
        with torch.inference_mode():
            tokens = self._sample_image_tokens(inputs, [r.seed for r in batch])
            pixels = self.model.model.vqmodel.decode(tokens)  # (B, C, H, W), normalised like inputs
        squares = self._to_pil(pixels)
        return [fit_to_size(sq, r.image.size, self.fit) for sq, r in zip(squares, batch)]

    def _sample_image_tokens(self, inputs, seeds: list[int]):
        """CFG autoregressive sampling of image tokens (see module docstring)."""
        import torch
        from transformers import DynamicCache

        m = self.model
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        n, length = ids.shape
        embed = m.get_input_embeddings()
        cond = embed(ids)
        if "pixel_values" in inputs:  # source image as understanding tokens (conditional branch only)
            feats = m.model.get_image_features(inputs["pixel_values"]).pooler_output
            slots = (ids == m.config.image_token_id).unsqueeze(-1)
            cond = cond.masked_scatter(slots, feats.reshape(-1, cond.shape[-1]).to(cond.dtype))
        pad_id = m.generation_config.pad_token_id
        pad_id = self.processor.tokenizer.pad_token_id if pad_id is None else pad_id
        uncond_ids = torch.full_like(ids, pad_id)
        first = mask.argmax(dim=1)  # first real token (left padding)
        rows = torch.arange(n, device=ids.device)
        uncond_ids[rows, first] = ids[rows, first]
        uncond_ids[:, -1] = ids[:, -1]  # <begin_of_image>
        embeds = torch.cat([cond, embed(uncond_ids)])
        attn = torch.cat([mask, mask])
        gens = [torch.Generator(device=ids.device).manual_seed(int(s)) for s in seeds]
        lm = m.model.language_model
        cache_kw = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
        cache = DynamicCache(config=m.config.text_config)
        n_tokens = m.model.vision_model.config.num_image_tokens
        tokens = torch.zeros((n, n_tokens), dtype=torch.long, device=ids.device)
        for i in range(n_tokens):
            pos = (attn.cumsum(-1) - 1).clamp(min=0)[:, -embeds.shape[1]:]
            out = lm(inputs_embeds=embeds, attention_mask=attn, position_ids=pos, use_cache=True,
                     **{cache_kw: cache})
            logits = m.model.generation_head(out.last_hidden_state[:, -1]).float()
            c, u = logits.chunk(2)
            nxt = self._pick(u + self.cfg_weight * (c - u), gens)
            tokens[:, i] = nxt
            embeds = m.prepare_embeddings_for_image_generation(torch.cat([nxt, nxt]).unsqueeze(-1))
            attn = torch.cat([attn, attn.new_ones((2 * n, 1))], dim=1)
        return tokens

    def _pick(self, logits, gens):
        import torch

        if self.temperature <= 0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits / self.temperature, dim=-1)
        return torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, gens)])

    def _to_pil(self, pixels) -> list[Image.Image]:
        """Undo the processor's normalisation (its own postprocess is channel-layout fragile in 5.24)."""
        import numpy as np
        import torch

        ip = self.processor.image_processor
        mean = torch.tensor(ip.image_mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(ip.image_std, dtype=torch.float32).view(1, -1, 1, 1)
        x = (pixels.float().cpu() * std + mean).clamp(0, 1) * 255
        arr = x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return [Image.fromarray(np.ascontiguousarray(a), "RGB") for a in arr]
