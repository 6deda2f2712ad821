"""BAGEL for many requests at once: packed sequences over the official model's own methods, with shared
contexts.

The official `InterleaveInferencer` builds one sample's KV context step by step (text, ViT image, VAE
image) and decodes one sample. The model's `prepare_*` / `forward_cache_update_*` / `generate_image`
methods already take several samples packed back to back (per-sample `kv_lens` and `ropes`), so here each
request is a sequence of segments, the requests of a batch form a prefix tree, and every tree level runs
as one packed forward per segment kind. Requests that begin alike share that context by construction:
the baseline, concat and conversation answers of an item compute the original image's ViT context once;
the edits of one source image (every family, same seed) compute its VAE + ViT context once, which is also
the text-free CFG context. Decoding runs the batch to the end, dropping samples as they finish.

Outputs follow the official per-item order of operations (same prompts, transforms, think prompts,
CFG contexts, stop rule); the source's VAE posterior sample and the initial noise are drawn per request
from its seed exactly as a seeded one-at-a-time call draws them.
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from PIL import Image

from g2u_tasks.backends.unified.bagel_official import OfficialBagel, autocast, seeded

KINDS = ("vae", "vit", "text")  # a segment's kind; an edit's source image is a vae then a vit segment


@dataclass(frozen=True)
class Segment:
    kind: str
    key: Any  # what makes two segments the same context step (text, or image digest [+ seed])
    payload: Any  # the text or the (already resized) image


@dataclass
class Context:
    """One sample's KV context: per-layer keys and values (len, kv_heads, head_dim), or None if empty."""

    keys: list[torch.Tensor] | None
    values: list[torch.Tensor] | None
    kv_len: int
    rope: int


EMPTY = Context(None, None, 0, 0)


def image_digest(image: Image.Image) -> str:
    return hashlib.blake2b(image.tobytes() + repr((image.size, image.mode)).encode(), digest_size=16).hexdigest()


class PackedBagel:
    def __init__(self, ob: OfficialBagel, pack_size: int = 32):
        self.ob, self.m, self.pack_size = ob, ob.model, max(1, int(pack_size))
        self.ids = ob.new_token_ids
        self.cache_cls = ob.modules["modeling.bagel.qwen2_navit"].NaiveCache
        self.to_rgb = ob.modules["data.data_utils"].pil_img2rgb
        self.vlm_think = ob.modules["inferencer"].VLM_THINK_SYSTEM_PROMPT
        self.gen_think = ob.modules["inferencer"].GEN_THINK_SYSTEM_PROMPT
        self.n_layers = self.m.config.llm_config.num_hidden_layers
        self.device = torch.device(ob.device)

    # ---- public: the two roles ----

    def answer(self, inputs: Sequence[Sequence[str | Image.Image]], think: bool, max_length: int) -> list[str]:
        """Greedy answers for interleaved inputs (images in context through the ViT only)."""
        seqs = []
        for items in inputs:
            seq = [Segment("text", self.vlm_think, self.vlm_think)] if think else []
            for x in items:
                if isinstance(x, str):
                    seq.append(Segment("text", x, x))
                else:
                    img = self.resize(x)
                    seq.append(Segment("vit", image_digest(img), img))
            seqs.append(seq)
        with self._autocast():
            return self.gen_text(self.build(seqs), max_length)

    def edit(self, sources: Sequence[Image.Image], prompts: Sequence[str], seeds: Sequence[int], think: bool,
             max_think: int, **cfg) -> list[tuple[Image.Image, str | None]]:
        """Edited images (and think-mode planning text) for (source, prompt, seed) requests."""
        sys_seg = [Segment("text", self.gen_think, self.gen_think)] if think else []
        heads, gens, cfg_imgs, shapes, vae_seeds = [], [], [], [], {}
        for src, prompt, seed in zip(sources, prompts, seeds, strict=True):
            img = self.resize(src)
            key = (image_digest(img), int(seed))  # the VAE sample depends on the seed: shared per seed only
            head = [*sys_seg, Segment("vae", key, img), Segment("vit", key, img)]
            vae_seeds[key] = int(seed)
            heads.append(head)
            gens.append([*head, Segment("text", prompt, prompt)])
            cfg_imgs.append([*sys_seg, Segment("text", prompt, prompt)])
            shapes.append(img.size[::-1])
        with self._autocast():
            built = self.build(heads + gens + cfg_imgs, vae_seeds)
            n = len(heads)
            cfg_text, gen, cfg_img = built[:n], built[n:2 * n], built[2 * n:]
            plans: list[str | None] = [None] * n
            if think:
                plans = self.gen_text(gen, max_think)
                gen = self.extend("text", gen, plans)
            step = 1 if cfg.get("cfg_renorm_type", "global") == "global" else self.pack_size  # global: per sample
            images = []
            for i in range(0, n, step):
                sl = slice(i, i + step)
                images += self.gen_images(gen[sl], cfg_text[sl], cfg_img[sl], shapes[sl], list(seeds[sl]), cfg)
        return list(zip(images, plans))

    def resize(self, image: Image.Image) -> Image.Image:
        """What the official inferencer does to every input image first."""
        return self.ob.vae_transform.resize_transform(self.to_rgb(image))

    # ---- contexts ----

    def build(self, seqs: list[list[Segment]], vae_seeds: dict | None = None) -> list[Context]:
        """The context after each sequence: a prefix tree, one packed forward per level and kind."""
        nodes: dict[tuple, Context] = {(): EMPTY}
        wanted = {tuple((s.kind, s.key) for s in seq) for seq in seqs}
        for depth in range(max((len(s) for s in seqs), default=0)):
            todo: dict[tuple, Segment] = {}
            for seq in seqs:
                if len(seq) > depth:
                    path = tuple((s.kind, s.key) for s in seq[:depth + 1])
                    todo.setdefault(path, seq[depth])
            for kind in KINDS:
                for chunk in self._packs(kind, [(path, seg) for path, seg in todo.items() if seg.kind == kind]):
                    parents = [nodes[path[:-1]] for path, _ in chunk]
                    seeds = [vae_seeds[seg.key] for _, seg in chunk] if kind == "vae" else None
                    for (path, _), ctx in zip(chunk, self.extend(kind, parents, [s.payload for _, s in chunk], seeds)):
                        nodes[path] = ctx
            for path in [p for p in nodes if len(p) == depth and p not in wanted]:  # parents no longer needed
                del nodes[path]
        return [nodes[tuple((s.kind, s.key) for s in seq)] for seq in seqs]

    def _packs(self, kind: str, group: list[tuple[tuple, Segment]]) -> Iterator[list[tuple[tuple, Segment]]]:
        """The segments of one kind in packs of pack_size; VAE images one size per pack: the VAE encodes the
        pack as one zero-padded batch, and padding would change both the encoder's activations at the
        borders and the shape (so the RNG draws) of the posterior sample."""
        by_size: dict[Any, list] = {}
        for entry in group:
            by_size.setdefault(entry[1].payload.size if kind == "vae" else None, []).append(entry)
        for entries in by_size.values():
            for i in range(0, len(entries), self.pack_size):
                yield entries[i:i + self.pack_size]

    def pack(self, ctxs: Sequence[Context]) -> tuple[Any, list[int], list[int]]:
        cache = self.cache_cls(self.n_layers)
        ref = next((c for c in ctxs if c.keys is not None), None)
        if ref is not None:
            for layer in range(self.n_layers):
                cache.key_cache[layer] = torch.cat([c.keys[layer] if c.keys is not None else ref.keys[layer][:0]
                                                    for c in ctxs])
                cache.value_cache[layer] = torch.cat([c.values[layer] if c.values is not None
                                                      else ref.values[layer][:0] for c in ctxs])
        return cache, [c.kv_len for c in ctxs], [c.rope for c in ctxs]

    def unpack(self, cache: Any, kv_lens: list[int], ropes: list[int]) -> list[Context]:
        keys = [cache.key_cache[layer].split(kv_lens) for layer in range(self.n_layers)]
        values = [cache.value_cache[layer].split(kv_lens) for layer in range(self.n_layers)]
        return [Context([k[i] for k in keys], [v[i] for v in values], kv_lens[i], ropes[i])
                for i in range(len(kv_lens))]

    def extend(self, kind: str, ctxs: Sequence[Context], payloads: Sequence[Any],
               seeds: list[int] | None = None) -> list[Context]:
        """Each context extended by its payload, all in one packed forward (the official update_context_*)."""
        m, ob = self.m, self.ob
        cache, lens, ropes = self.pack(ctxs)
        if kind == "text":
            inp, lens, ropes = m.prepare_prompts(curr_kvlens=lens, curr_rope=ropes, prompts=list(payloads),
                                                 tokenizer=ob.tokenizer, new_token_ids=self.ids)
            cache = m.forward_cache_update_text(cache, **inp)
        elif kind == "vit":
            inp, lens, ropes = m.prepare_vit_images(curr_kvlens=lens, curr_rope=ropes, images=list(payloads),
                                                    transforms=ob.vit_transform, new_token_ids=self.ids)
            cache = m.forward_cache_update_vit(cache, **inp)
        elif kind == "vae":
            inp, lens, ropes = m.prepare_vae_images(curr_kvlens=lens, curr_rope=ropes, images=list(payloads),
                                                    transforms=ob.vae_transform, new_token_ids=self.ids)
            ob.vae_model.seeds = seeds
            try:
                cache = m.forward_cache_update_vae(ob.vae_model, cache, **inp)
            finally:
                ob.vae_model.seeds = None
        else:
            raise ValueError(f"unknown segment kind {kind!r}")
        return self.unpack(cache, lens, ropes)

    # ---- decoding ----

    def gen_text(self, ctxs: Sequence[Context], max_length: int) -> list[str]:
        """Greedy decoding of every context at once; the official stop rule and text clean-up per sample."""
        m, dev = self.m, self.device
        lm = m.language_model
        extra = {"mode": "und"} if m.use_moe else {}
        cache, lens, ropes = self.pack(ctxs)
        active = torch.arange(len(ctxs), device=dev)
        kv_lens = torch.tensor(lens, dtype=torch.int, device=dev)
        pos = torch.tensor(ropes, dtype=torch.long, device=dev)
        tokens = torch.full((len(ctxs),), self.ids["bos_token_id"], dtype=torch.long, device=dev)
        kept: list[list[int]] = [[] for _ in ctxs]
        for _ in range(max(0, max_length - 1)):  # the official loop keeps at most max_length - 1 tokens
            n = len(active)
            ones = torch.ones(n, dtype=torch.int, device=dev)
            query_idx = torch.cumsum(kv_lens, 0) + torch.arange(n, device=dev, dtype=kv_lens.dtype)
            kv_idx = self._ranges(kv_lens, kv_lens + 1)
            out = lm.forward_inference(packed_query_sequence=lm.model.embed_tokens(tokens), query_lens=ones,
                                       packed_query_position_ids=pos, packed_query_indexes=query_idx.long(),
                                       past_key_values=cache, key_values_lens=kv_lens, packed_key_value_indexes=kv_idx,
                                       update_past_key_values=True, is_causal=True, **extra)
            cache = out.past_key_values
            nxt = torch.argmax(lm.lm_head(out.packed_query_sequence), dim=-1)
            kv_lens, pos = kv_lens + 1, pos + 1
            done = nxt == self.ids["eos_token_id"]
            for j, tok in zip(active.tolist(), nxt.tolist()):
                if tok != self.ids["eos_token_id"]:
                    kept[j].append(tok)
            if bool(done.any()):
                keep = (~done).nonzero().flatten()
                if len(keep) == 0:
                    break
                idx = self._ranges(kv_lens[keep], kv_lens, starts=torch.cumsum(kv_lens, 0) - kv_lens, rows=keep)
                for layer in range(self.n_layers):
                    cache.key_cache[layer] = cache.key_cache[layer][idx]
                    cache.value_cache[layer] = cache.value_cache[layer][idx]
                active, kv_lens, pos, nxt = active[keep], kv_lens[keep], pos[keep], nxt[keep]
            tokens = nxt
        bos = self.ids["bos_token_id"]
        texts = [self.ob.tokenizer.decode([bos, *toks]) for toks in kept]
        return [t.split("<|im_end|>")[0].split("<|im_start|>")[1] for t in texts]

    @staticmethod
    def _ranges(lengths: torch.Tensor, strides: torch.Tensor, starts: torch.Tensor | None = None,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        """Concatenated aranges: for each sample i, start_i + [0, lengths_i). Without `starts`, sample i
        starts after the previous samples' `strides` (a context followed by its new token)."""
        if starts is None:
            starts = torch.cumsum(strides, 0) - strides
        else:
            starts = starts[rows]
        lengths = lengths.long()
        offsets = torch.repeat_interleave(starts.long() - torch.cumsum(lengths, 0) + lengths, lengths)
        return torch.arange(int(lengths.sum()), device=lengths.device) + offsets

    def gen_images(self, gen: list[Context], cfg_text: list[Context], cfg_img: list[Context],
                   shapes: list[tuple[int, int]], seeds: list[int], cfg: dict) -> list[Image.Image]:
        """The official gen_image for a pack of samples; each sample's initial noise from its own seed."""
        m = self.m
        cache, lens, ropes = self.pack(gen)
        inp = m.prepare_vae_latent(curr_kvlens=lens, curr_rope=ropes, image_sizes=shapes, new_token_ids=self.ids)
        noises = []
        vae_on_cpu = self.ob.vae_model.device.type == "cpu"
        for (h, w), seed in zip(shapes, seeds):
            n_tok = (h // m.latent_downsample) * (w // m.latent_downsample)
            with seeded(seed):
                if vae_on_cpu:  # one-at-a-time, the VAE's posterior sample came first on this same CPU stream
                    torch.randn(1, m.latent_channel, h // (m.latent_downsample // m.latent_patch_size),
                                w // (m.latent_downsample // m.latent_patch_size))
                noises.append(torch.randn(n_tok, m.latent_channel * m.latent_patch_size ** 2))
        inp["packed_init_noises"] = torch.cat(noises)
        t_cache, t_lens, t_ropes = self.pack(cfg_text)
        i_cache, i_lens, i_ropes = self.pack(cfg_img)
        t_inp = m.prepare_vae_latent_cfg(curr_kvlens=t_lens, curr_rope=t_ropes, image_sizes=shapes)
        i_inp = m.prepare_vae_latent_cfg(curr_kvlens=i_lens, curr_rope=i_ropes, image_sizes=shapes)
        latents = m.generate_image(
            past_key_values=cache, cfg_text_past_key_values=t_cache, cfg_img_past_key_values=i_cache, **cfg, **inp,
            **{f"cfg_text_{k[4:]}": v for k, v in t_inp.items()}, **{f"cfg_img_{k[4:]}": v for k, v in i_inp.items()})
        return [self.ob.inferencer.decode_image(lat, shape) for lat, shape in zip(latents, shapes)]

    @contextmanager
    def _autocast(self) -> Iterator[None]:
        with torch.no_grad(), autocast(self.ob.device, self.ob.dtype):
            yield
