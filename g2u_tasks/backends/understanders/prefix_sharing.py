"""Shared-prefix greedy generation for image-text-to-text models (torch only, no g2u imports, so
perf/ scripts can load this file alone).

An item's baseline and concat prompts begin with the same tokens: template head + the original
image (LLaVA-1.5: `<s>USER: <image>x576`). Rows of a chunk that start with the same image object
form a group; the group's prefix (vision features and KV cache) is computed once, the cache is
expanded per row, and `generate` continues each row from it, computing only the row's suffix.
Between prefix and suffix a row is padded (mask 0); `generate` takes position ids from the mask,
so every token keeps the position it has in the unshared prompt.
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


def sub_batches(lengths: list[int], ratio: float = 0.5) -> list[list[int]]:
    """Row indices by suffix length, longest first; a new sub-batch starts where a row is shorter
    than `ratio` x the sub-batch's longest (padding it would cost more than a decode pass)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[int]] = []
    for i in order:
        if out and lengths[i] >= ratio * lengths[out[-1][0]]:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def generate_shared(model, rows: list[Row], pad_id: int, image_token_id: int, gen_kwargs: dict,
                    ratio: float = 0.5) -> list[torch.Tensor] | None:
    """New token ids per row, sharing each group's prefix; None when no two rows share one."""
    group_of, lengths = plan_groups(rows, image_token_id)
    if not lengths:
        return None
    # Mid-row padding shifts cache indices: a sliding window (indices, not positions) must cover all.
    window = getattr(model.config.get_text_config(), "sliding_window", None)
    if window and max(lengths) + max(len(r.ids) for r in rows) + gen_kwargs.get("max_new_tokens", 0) > window:
        return None
    device, dtype = model.device, model.dtype
    cache_kw = _cache_name(model)
    reps = {g: i for i, g in reversed(list(enumerate(group_of))) if g is not None}
    heads = [rows[reps[g]] for g in range(len(lengths))]
    # One forward over the groups' prefixes (left padded): their vision features and KV cache.
    p_ids = _collate([h.ids[:n] for h, n in zip(heads, lengths)], pad_id)
    p_mask = _collate([torch.ones(n, dtype=torch.long) for n in lengths], 0, p_ids.shape[1])
    extras = {k: _collate([h.extras[k][:n] for h, n in zip(heads, lengths)], 0, p_ids.shape[1])
              for k in heads[0].extras}
    pos = (p_mask.cumsum(-1) - 1).masked_fill(p_mask == 0, 0)
    keep_logits = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    with torch.inference_mode():
        out = model(input_ids=p_ids.to(device), attention_mask=p_mask.to(device), position_ids=pos.to(device),
                    **{k: v.to(device) for k, v in extras.items()}, **keep_logits,
                    **_images([h.images[0] for h in heads], device, dtype), use_cache=True)
    prefix_cache = getattr(out, "cache", None) or out.past_key_values
    del out
    starts = [lengths[g] if g is not None else 0 for g in group_of]
    suffix_len = [len(r.ids) - s for r, s in zip(rows, starts)]
    results: list[torch.Tensor | None] = [None] * len(rows)
    for part in sub_batches(suffix_len, ratio):
        grouped = [group_of[i] for i in part]
        suf_ids = _collate([rows[i].ids[starts[i]:] for i in part], pad_id)
        suf_mask = _collate([torch.ones(suffix_len[i], dtype=torch.long) for i in part], 0, suf_ids.shape[1])
        images = [im for i in part for im in rows[i].images[(1 if group_of[i] is not None else 0):]]
        suf_extras = {k: _collate([rows[i].extras[k][starts[i]:] for i in part], 0, suf_ids.shape[1])
                      for k in rows[part[0]].extras}
        kw = dict(gen_kwargs)
        if all(g is None for g in grouped):  # nothing shared here: a plain batch
            ids, mask = suf_ids, suf_mask
        else:
            sel = torch.tensor([g if g is not None else 0 for g in grouped])
            keep = torch.tensor([g is not None for g in grouped]).unsqueeze(1)
            ids = torch.cat([p_ids[sel], suf_ids], 1)
            mask = torch.cat([p_mask[sel] * keep, suf_mask], 1)  # unshared rows: prefix masked out
            kw[cache_kw] = _select(prefix_cache, sel.to(device))
            suf_extras = {k: torch.cat([extras[k][sel] * keep, v], 1) for k, v in suf_extras.items()}
        with torch.inference_mode():
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 **{k: v.to(device) for k, v in suf_extras.items()},
                                 **_images(images, device, dtype), **kw)
        new = gen[:, ids.shape[1]:].cpu()
        for j, i in enumerate(part):
            results[i] = new[j]
    del prefix_cache
    return results  # type: ignore[return-value]
