"""Shared-prefix greedy generation for image-text-to-text models (torch only, no g2u imports, so
perf/ scripts can load this file alone).

An item's baseline and concat prompts begin with the same tokens: template head + the original
image (LLaVA-1.5: `<s>USER: <image>x576`). Rows of a chunk that start with the same image object
form a group. Per chunk:

1. one forward over the groups' prefixes: their vision features and KV cache, once per group;
2. continuation prefill of every row except its last token, rows bucketed by length (a cost model
   cuts a bucket only where the padding saved outweighs one more forward); a bucket continues from
   the prefix cache expanded to its rows by index;
3. the buckets' caches merged (left padded) into one static cache, and one `generate` call over
   all rows: its first step computes only each row's last token, so the chunk decodes in one pass
   (eager: the static cache only saves the dynamic cache's per-step copy; no torch.compile).

Between prefix and continuation a row may be padded (mask 0); position ids come from the mask, so
every token keeps the position it has in the unshared prompt.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import Hashable

import torch

# Model types checked here (one pixel row per image, positions from the mask); Qwen-VL's 3-D
# positions, tiled images (Idefics3, InternVL) and others run unshared.
SHARED_MODEL_TYPES = frozenset({"llava", "gemma3"})
PER_IMAGE_KEYS = ("pixel_values", "image_sizes")
PER_TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")
# One more continuation forward costs about this many prompt tokens (launches, the prefix KV
# copy): a length bucket is cut only where it saves more padded tokens than that.
FORWARD_COST = 192


@dataclass
class Row:
    """One prompt: its real tokens (no padding), per-token extras, its images' tensors in prompt
    order, and `key` (rows with equal keys start with the same image)."""

    ids: torch.Tensor  # (n,) long
    images: list[dict[str, torch.Tensor]]  # per image: {"pixel_values": (1, C, H, W), ...}
    key: Hashable | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # per-token, (n,)


def rows_from_inputs(inputs, image_counts: list[int], keys: list) -> list[Row] | None:
    """Rows from a left-padded processor output; None when its layout is not one pixel row per
    image (tiled images, per-prompt image stacks, unknown extra tensors)."""
    known = set(PER_IMAGE_KEYS) | set(PER_TOKEN_KEYS)
    if any(k not in known for k in inputs.keys()):
        return None
    pv = inputs.get("pixel_values")
    if (pv is None) != (sum(image_counts) == 0) or (pv is not None and pv.shape[0] != sum(image_counts)):
        return None
    rows, at = [], 0
    mask = inputs["attention_mask"].bool()
    for i, n in enumerate(image_counts):
        real = mask[i]
        extras = {k: inputs[k][i][real] for k in PER_TOKEN_KEYS[2:] if k in inputs}
        images = [{k: inputs[k][j:j + 1] for k in PER_IMAGE_KEYS if k in inputs} for j in range(at, at + n)]
        rows.append(Row(inputs["input_ids"][i][real], images, keys[i], extras))
        at += n
    return rows


def _image_runs(ids: torch.Tensor, image_token_id: int) -> list[tuple[int, int]]:
    """(start, end) of each run of image placeholder tokens."""
    is_img = (ids == image_token_id).tolist()
    runs, start = [], None
    for i, v in enumerate(is_img + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            runs.append((start, i))
            start = None
    return runs


def prefix_length(rows: list[Row], image_token_id: int) -> int:
    """Tokens the rows share: up to (not into) the second image, covering the whole first image,
    leaving each row at least one token of its own; 0 when they share less than the first image."""
    first, limit = None, min(len(r.ids) for r in rows) - 1
    for r in rows:
        runs = _image_runs(r.ids, image_token_id)
        per_image = (r.ids == image_token_id).sum().item() // max(1, len(r.images))
        if not runs or runs[0][1] - runs[0][0] != per_image:  # merged or uneven runs: not safe
            return 0
        first = runs[0][1] if first is None else first
        if runs[0][1] != first:
            return 0
        if len(runs) > 1:
            limit = min(limit, runs[1][0])
    ref = rows[0].ids
    for r in rows[1:]:
        n = min(limit, len(r.ids))
        diff = (r.ids[:n] != ref[:n]).nonzero()
        limit = int(diff[0]) if len(diff) else n
    return limit if limit >= first else 0


def _collate(seqs: list[torch.Tensor], pad: int, width: int | None = None) -> torch.Tensor:
    width = width if width is not None else max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), pad, dtype=seqs[0].dtype if seqs else torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, width - len(s):] = s
    return out


def _images(images: list[dict[str, torch.Tensor]], device, dtype) -> dict:
    if not images:
        return {}
    return {k: torch.cat([im[k] for im in images]).to(device, dtype=dtype if images[0][k].is_floating_point()
                                                            else None)
            for k in images[0]}


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def _keep_last_logits(model) -> dict:
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def _cache_name(model) -> str:
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _select(cache, index: torch.Tensor):
    """A new cache holding rows `index` of `cache` (the original stays usable)."""
    new = copy.copy(cache)
    new.layers = []
    for layer in cache.layers:
        lay = copy.copy(layer)
        lay.keys = layer.keys.index_select(0, index)
        lay.values = layer.values.index_select(0, index)
        new.layers.append(lay)
    return new


def plan_groups(rows: list[Row], image_token_id: int) -> tuple[list[int | None], list[int]]:
    """Per row its group index (None: unshared), and per group its prefix length."""
    members: dict = {}
    for i, r in enumerate(rows):
        if r.key is not None and r.images:
            members.setdefault(r.key, []).append(i)
    group_of: list[int | None] = [None] * len(rows)
    lengths: list[int] = []
    for idx in members.values():
        if len(idx) < 2:
            continue
        n = prefix_length([rows[i] for i in idx], image_token_id)
        if n:
            for i in idx:
                group_of[i] = len(lengths)
            lengths.append(n)
    return group_of, lengths


def chunks_by_key(keys: list, size: int) -> list[list[int]]:
    """Chunks of at most `size` rows, each key's rows kept in one chunk where they fit; keys in order
    of first appearance (item-major batches stay item-major). None keys are rows of their own."""
    units: dict = {}
    for i, k in enumerate(keys):
        units.setdefault(("one", i) if k is None else ("key", k), []).append(i)
    chunks: list[list[int]] = [[]]
    for unit in units.values():
        for s in range(0, len(unit), size):
            part = unit[s:s + size]
            if len(chunks[-1]) + len(part) > size:
                chunks.append([])
            chunks[-1].extend(part)
    return [c for c in chunks if c]


def length_buckets(lengths: list[int], forward_cost: int = FORWARD_COST) -> list[list[int]]:
    """Row indices in buckets of similar length, longest first, minimising padded tokens plus
    `forward_cost` tokens per extra forward (exact over the sorted lengths; a bucket of zero-length
    rows costs nothing)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):  # bucket order[i:j], its longest row order[i]
            width = lengths[order[i]]
            cost = best[i] + ((j - i) * width + forward_cost if width else 0)
            if cost < best[j]:
                best[j], cut[j] = cost, i
    out, j = [], n
    while j:
        out.append(order[cut[j]:j])
        j = cut[j]
    return out[::-1]


def _prefix_forward(model, heads: list[Row], lengths: list[int], pad_id: int):
    """One forward over the groups' prefixes (left padded): (ids, mask, extras, cache)."""
    device, dtype = model.device, model.dtype
    ids = _collate([h.ids[:n] for h, n in zip(heads, lengths)], pad_id)
    mask = _collate([torch.ones(n, dtype=torch.long) for n in lengths], 0, ids.shape[1])
    extras = {k: _collate([h.extras[k][:n] for h, n in zip(heads, lengths)], 0, ids.shape[1]) for k in heads[0].extras}
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=_positions(mask).to(device),
                **{k: v.to(device) for k, v in extras.items()}, **_keep_last_logits(model),
                **_images([h.images[0] for h in heads], device, dtype), use_cache=True)
    return ids, mask, extras, getattr(out, "cache", None) or out.past_key_values


def _continue(model, prefix, rows: list[Row], part: list[int], group_of, starts, pad_id: int) -> dict:
    """Prefill of rows `part` up to (not including) their last token, continuing grouped rows from
    the prefix cache (ungrouped rows in the bucket see its columns masked out). Returns the bucket's
    ids, mask, extras (CPU, cache width) and cache."""
    device, dtype = model.device, model.dtype
    tails = [rows[i].ids[starts[i]:-1] for i in part]
    new_ids = _collate(tails, pad_id)
    new_mask = _collate([torch.ones(len(t), dtype=torch.long) for t in tails], 0, new_ids.shape[1])
    new_extras = {k: _collate([rows[i].extras[k][starts[i]:-1] for i in part], 0, new_ids.shape[1])
                  for k in rows[part[0]].extras}
    grouped = [group_of[i] for i in part]
    cache = None
    if any(g is not None for g in grouped):
        p_ids, p_mask, p_extras, p_cache = prefix
        sel = torch.tensor([g if g is not None else 0 for g in grouped])
        keep = torch.tensor([g is not None for g in grouped]).unsqueeze(1)
        new_ids, new_mask = torch.cat([p_ids[sel], new_ids], 1), torch.cat([p_mask[sel] * keep, new_mask], 1)
        new_extras = {k: torch.cat([p_extras[k][sel] * keep, v], 1) for k, v in new_extras.items()}
        cache = _select(p_cache, sel.to(device))
    width = max(len(t) for t in tails)
    if width:
        images = [im for i in part for im in rows[i].images[(1 if group_of[i] is not None else 0):]]
        kw = {_cache_name(model): cache} if cache is not None else {}
        out = model(input_ids=new_ids[:, -width:].to(device), attention_mask=new_mask.to(device),
                    position_ids=_positions(new_mask)[:, -width:].to(device),
                    **{k: v.to(device) for k, v in new_extras.items()}, **_keep_last_logits(model),
                    **_images(images, device, dtype), use_cache=True, **kw)
        cache = getattr(out, "cache", None) or out.past_key_values
    return {"part": part, "ids": new_ids, "mask": new_mask, "extras": new_extras, "cache": cache}


def _merge(model, pieces: list[dict], pad_id: int, room: int, static: bool):
    """The buckets' rows as one batch (bucket after bucket), left padded to the widest: ids, mask,
    extras and one cache holding all their caches, static (`room` free columns for the decode,
    grown in place) or dynamic (grown by concatenation: a copy of the whole cache per step). Each
    bucket's cache is released layer by layer as it is copied."""
    from transformers import DynamicCache, StaticCache

    width = max(p["ids"].shape[1] for p in pieces)
    ids = _collate([r for p in pieces for r in p["ids"]], pad_id, width)
    mask = _collate([r for p in pieces for r in p["mask"]], 0, width)
    extras = {k: _collate([r for p in pieces for r in p["extras"][k]], 0, width) for k in pieces[0]["extras"]}
    spans, at = [], 0  # per bucket with a cache: (its first row, its cache)
    for p in pieces:
        if p["cache"] is not None:  # the rest have no columns
            spans.append((at, p["cache"]))
        at += len(p["part"])
    config = model.config
    cache = StaticCache(config=config, max_cache_len=width + room) if static else DynamicCache(config=config)
    for li, layer in enumerate(cache.layers):
        k0, v0 = spans[0][1].layers[li].keys, spans[0][1].layers[li].values
        shape_k, shape_v = (at, k0.shape[1], width, k0.shape[-1]), (at, v0.shape[1], width, v0.shape[-1])
        layer.lazy_initialization(k0.new_empty(shape_k[:2] + (0,) + shape_k[3:]),
                                  v0.new_empty(shape_v[:2] + (0,) + shape_v[3:]))
        if not static:
            layer.keys, layer.values = k0.new_zeros(shape_k), v0.new_zeros(shape_v)
        for first, bucket in spans:
            src = bucket.layers[li]
            n, cols = src.keys.shape[0], src.keys.shape[-2]
            layer.keys[first:first + n, :, width - cols:width].copy_(src.keys)
            layer.values[first:first + n, :, width - cols:width].copy_(src.values)
            src.keys = src.values = None  # memory: the bucket's copy of this layer is no longer needed
        if static:
            layer.cumulative_length.fill_(width)
        counter = "cumulative_length_int" if static else "cumulative_length"  # sliding layers count in Python
        if hasattr(layer, counter):
            setattr(layer, counter, width)
    return ids, mask, extras, cache


def generate_shared(model, rows: list[Row], pad_id: int, image_token_id: int, gen_kwargs: dict,
                    forward_cost: int = FORWARD_COST, static_decode: bool = True) -> list[torch.Tensor] | None:
    """New token ids per row, sharing each group's prefix; None when no two rows share one (or a
    row ends in an image token, or a sliding window would not cover the padded rows).
    `static_decode=False` (perf/shared_prefix.py's comparison only) decodes from a dynamic cache."""
    group_of, lengths = plan_groups(rows, image_token_id)
    if not lengths or any(int(r.ids[-1]) == image_token_id for r in rows):
        return None
    # Mid-row padding shifts cache indices: a sliding window (indices, not positions) must cover all.
    window = getattr(model.config.get_text_config(), "sliding_window", None)
    if window and max(lengths) + max(len(r.ids) for r in rows) + gen_kwargs.get("max_new_tokens", 0) > window:
        return None
    reps = {g: i for i, g in reversed(list(enumerate(group_of))) if g is not None}
    starts = [lengths[g] if g is not None else 0 for g in group_of]
    with torch.inference_mode():
        prefix = _prefix_forward(model, [rows[reps[g]] for g in range(len(lengths))], lengths, pad_id)
        tails = [len(r.ids) - s - 1 for r, s in zip(rows, starts)]
        pieces = [_continue(model, prefix, rows, part, group_of, starts, pad_id)
                  for part in length_buckets(tails, forward_cost)]
        del prefix
        order = [i for p in pieces for i in p["part"]]  # the batch's rows, bucket after bucket
        ids, mask, extras, cache = _merge(model, pieces, pad_id, 1 + gen_kwargs["max_new_tokens"], static_decode)
        del pieces
        last = torch.stack([rows[i].ids[-1] for i in order]).unsqueeze(1)
        ids, mask = torch.cat([ids, last], 1), torch.cat([mask, torch.ones_like(last)], 1)
        extras = {k: torch.cat([v, torch.stack([rows[i].extras[k][-1] for i in order]).unsqueeze(1)], 1)
                  for k, v in extras.items()}
        device = model.device
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             **{k: v.to(device) for k, v in extras.items()},
                             **{_cache_name(model): cache}, **gen_kwargs,
                             **({"disable_compile": True} if static_decode else {}))
    new = gen[:, ids.shape[1]:].cpu()
    results: list[torch.Tensor | None] = [None] * len(rows)
    for j, i in enumerate(order):
        results[i] = new[j]
    return results  # type: ignore[return-value]
