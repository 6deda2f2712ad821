"""Greedy generation from a static cache for image-text-to-text models: shared prefixes and a
decode loop replayed as a CUDA graph (torch only, no g2u imports, so perf/ scripts can load this
file alone).

An item's baseline and concat prompts begin with the same tokens: template head + the original
image (LLaVA-1.5: `<s>USER: <image>x576`). Rows of a chunk that start with the same image object
form a group. Per chunk:

1. one forward over the groups' prefixes: their vision features and KV cache, once per group;
2. continuation prefill of every row except its last token, rows bucketed by length (a cost model
   cuts a bucket only where the padding saved outweighs one more forward); a bucket continues from
   the prefix cache expanded to its rows by index;
3. the buckets' caches merged (left padded) into one static cache, and one decode pass over all
   rows (`decode_greedy`): its first step computes only each row's last token.

`decode_greedy` is `generate`'s greedy loop over a static cache, for the shared path and for plain
batches (`generate_static`): a 4-D mask and the position ids live in fixed buffers, so on CUDA the
one-token step is captured once per chunk as a CUDA graph and replayed (one launch per step instead
of several hundred); it stops as soon as every row has ended. It runs only where the generation
config asks for plain greedy decoding (`greedy_plan`); anything else goes through `generate`.

Between prefix and continuation a row may be padded (mask 0); position ids come from the mask, so
every token keeps the position it has in the unshared prompt.
"""
from __future__ import annotations

import copy
import inspect
import logging
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
# Generation-config fields that add a logits processor or another search when not at these values:
# then `generate` decodes (`greedy_plan`).
PLAIN_GREEDY = {
    "do_sample": False, "num_beams": 1, "penalty_alpha": None, "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None, "force_words_ids": None, "constraints": None, "min_length": 0,
    "exponential_decay_length_penalty": None, "forced_bos_token_id": None, "forced_eos_token_id": None, "sequence_bias": None,
    "renormalize_logits": False, "guidance_scale": None, "watermarking_config": None, "stop_strings": None,
    "max_time": None, "dola_layers": None, "prompt_lookup_num_tokens": None, "output_scores": False,
    "output_logits": False, "return_dict_in_generate": False,
}
# Static caches hold a multiple of this many columns: an aligned mask row keeps SDPA's
# memory-efficient kernel from padding the mask in every layer of every decode step.
CACHE_ALIGN = 64

log = logging.getLogger(__name__)


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
    cache = StaticCache(config=config, max_cache_len=_aligned(width + room)) if static else DynamicCache(config=config)
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


@dataclass(frozen=True)
class GreedyPlan:
    max_new: int
    min_new: int
    eos: tuple[int, ...]
    pad: int
    suppress: tuple[int, ...] = ()  # never chosen
    begin_suppress: tuple[int, ...] = ()  # not chosen as the first new token


def greedy_plan(model, gen_kwargs: dict) -> GreedyPlan | None:
    """What `generate(**gen_kwargs)` would do, when it is plain greedy decoding with at most a
    minimum length and suppressed tokens; None for anything else (sampling, beams, penalties, other
    processors)."""
    config = copy.deepcopy(model.generation_config)
    if config.update(**gen_kwargs) or config.max_new_tokens is None:
        return None  # kwargs the config does not know: generate decides
    if any(getattr(config, k, None) not in (None, v) for k, v in PLAIN_GREEDY.items()):
        return None
    eos = config.eos_token_id
    eos = () if eos is None else tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)
    pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else 0)
    return GreedyPlan(int(config.max_new_tokens), int(config.min_new_tokens or 0), eos, int(pad),
                      tuple(config.suppress_tokens or ()), tuple(config.begin_suppress_tokens or ()))


def _pick(logits: torch.Tensor, emitted: int, plan: GreedyPlan, finished) -> torch.Tensor:
    """generate's greedy choice: float32 argmax, suppressed tokens and EOS before `min_new` barred,
    pad once ended."""
    scores = logits.to(torch.float32, copy=True)
    barred = (plan.suppress + (plan.eos if emitted < plan.min_new else ())
              + (plan.begin_suppress if not emitted else ()))
    if barred:
        scores[:, list(barred)] = float("-inf")
    token = scores.argmax(-1)
    return token if finished is None else token.masked_fill(finished, plan.pad)


def _graph_safe(cache) -> bool:
    """Full-attention static layers only: their write position is a device tensor (sliding layers
    also count in Python, which a replayed graph would not advance)."""
    from transformers.cache_utils import StaticLayer

    return all(type(layer) is StaticLayer for layer in cache.layers)


def _compiled_forward(model):
    """`model.forward` through `torch.compile` (default mode, no CUDA graphs of its own), kept on the
    model (it goes with it): the decode step's norms, RoPE and activations fused into a few kernels."""
    forward = model.__dict__.get("_g2u_compiled_forward")
    if forward is None:
        forward = model._g2u_compiled_forward = torch.compile(model.forward)
    return forward


def decode_greedy(model, cache, mask: torch.Tensor, pos: torch.Tensor, feed: torch.Tensor, plan: GreedyPlan,
                  graphs: bool = False, first: torch.Tensor | None = None, compiled: bool = False) -> torch.Tensor:
    """New tokens (rows x steps) from a static `cache` holding `mask.shape[1]` columns (`mask`: 1 on
    real ones) with room for the rest: feeds `feed` (per row, at position `pos`) and then each chosen
    token, as `generate` does, until every row has ended or `plan.max_new` tokens are out (`first`:
    a token already chosen from the prefill). With `graphs` on CUDA the one-token step is captured
    after one eager step and replayed; `compiled`: the step runs `_compiled_forward`."""
    rows, cols = mask.shape
    width = cache.layers[0].max_cache_len
    device = feed.device
    mask4 = torch.zeros(rows, 1, 1, width, dtype=torch.bool, device=device)
    mask4[:, 0, 0, :cols] = mask.to(device).bool()
    ids, positions = feed.view(rows, 1).clone(), pos.to(device).view(rows, 1).clone()
    kwargs = {_cache_name(model): cache, "use_cache": True, **_keep_last_logits(model)}
    forward = _compiled_forward(model) if compiled else model

    def step() -> torch.Tensor:
        return forward(input_ids=ids, attention_mask=mask4, position_ids=positions, **kwargs).logits[:, -1]

    eos = torch.tensor(plan.eos, device=device, dtype=torch.long)
    out = [first] if first is not None else []
    finished = torch.isin(first, eos) if first is not None else None
    graphs = graphs and device.type == "cuda" and _graph_safe(cache)
    graph = static = None
    while len(out) < plan.max_new and not (finished is not None and bool(finished.all())):
        mask4[:, 0, 0, cols] = True
        if graph is not None:
            graph.replay()
            logits = static
        elif graphs:  # the eager step on a side stream (warm-up), then capture the next one
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                logits = step()
            torch.cuda.current_stream(device).wait_stream(side)
            graph = _capture(step, device)
            if graph is None:
                graphs = False
            else:
                graph, static = graph
        else:
            logits = step()
        token = _pick(logits, len(out), plan, finished)
        out.append(token)
        ended = torch.isin(token, eos)
        finished = ended if finished is None else finished | ended
        ids.copy_(token.view(rows, 1))
        positions.add_(1)
        cols += 1
    return torch.stack(out, 1)


def _capture(step, device):
    """(graph, its output) of one decode step, or None (logged) where capture fails. Captured on a
    side stream with `capture_begin`/`capture_end` rather than `torch.cuda.graph`, which would
    synchronise and empty the allocator's cache first (every later chunk would then allocate anew)."""
    graph, side = torch.cuda.CUDAGraph(), torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    try:
        with torch.cuda.stream(side):
            graph.capture_begin()
            try:
                static = step()
            finally:
                graph.capture_end()
    except RuntimeError as err:  # an op that syncs or allocates per call: decode eagerly
        log.warning("CUDA graph capture of the decode step failed (%s); decoding eagerly", err)
        return None
    torch.cuda.current_stream(device).wait_stream(side)
    return graph, static


def _aligned(columns: int) -> int:
    return -(-columns // CACHE_ALIGN) * CACHE_ALIGN


def _window_ok(model, length: int) -> bool:
    """A sliding window (cache indices, not positions, under left padding) must cover every row."""
    window = getattr(model.config.get_text_config(), "sliding_window", None)
    return not window or length <= window


def generate_static(model, inputs: dict, gen_kwargs: dict, graphs: bool = False,
                    compiled: bool = False) -> torch.Tensor | None:
    """New token ids of a left-padded batch (processor outputs on the model's device): one prefill
    into a static cache, then `decode_greedy`. None where `generate` must decode instead."""
    from transformers import StaticCache

    plan = greedy_plan(model, gen_kwargs)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    if plan is None or not _window_ok(model, _aligned(ids.shape[1] + plan.max_new)):
        return None
    cache = StaticCache(config=model.config, max_cache_len=_aligned(ids.shape[1] + plan.max_new))
    with torch.inference_mode():
        out = model(**inputs, position_ids=_positions(mask), **{_cache_name(model): cache}, use_cache=True,
                    **_keep_last_logits(model))
        first = _pick(out.logits[:, -1], 0, plan, None)
        del out
        return decode_greedy(model, cache, mask, mask.sum(-1), first, plan, graphs, first=first,
                             compiled=compiled).cpu()


def generate_shared(model, rows: list[Row], pad_id: int, image_token_id: int, gen_kwargs: dict,
                    forward_cost: int = FORWARD_COST, static_decode: bool = True,
                    graphs: bool = False, compiled: bool = False) -> list[torch.Tensor] | None:
    """New token ids per row, sharing each group's prefix; None when no two rows share one (or a
    row ends in an image token, or a sliding window would not cover the padded rows).
    `static_decode=False` (perf/shared_prefix.py's comparison only) decodes with `generate` from a
    dynamic cache; so does a generation config that is not plain greedy."""
    group_of, lengths = plan_groups(rows, image_token_id)
    if not lengths or any(int(r.ids[-1]) == image_token_id for r in rows):
        return None
    # Mid-row padding shifts cache indices: a sliding window (indices, not positions) must cover all.
    if not _window_ok(model, _aligned(max(lengths) + max(len(r.ids) for r in rows) + 1
                                      + gen_kwargs.get("max_new_tokens", 0))):
        return None
    plan = greedy_plan(model, gen_kwargs) if static_decode else None
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
        last = torch.stack([rows[i].ids[-1] for i in order])
        device = model.device
        if plan is not None:
            new = decode_greedy(model, cache, mask, mask.sum(-1), last.to(device), plan, graphs,
                                compiled=compiled).cpu()
        else:
            last = last.unsqueeze(1)
            ids, mask = torch.cat([ids, last], 1), torch.cat([mask, torch.ones_like(last)], 1)
            extras = {k: torch.cat([v, torch.stack([rows[i].extras[k][-1] for i in order]).unsqueeze(1)], 1)
                      for k, v in extras.items()}
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 **{k: v.to(device) for k, v in extras.items()},
                                 **{_cache_name(model): cache}, **gen_kwargs,
                                 **({"disable_compile": True} if static_decode else {}))
            new = gen[:, ids.shape[1]:].cpu()
    results: list[torch.Tensor | None] = [None] * len(rows)
    for j, i in enumerate(order):
        results[i] = new[j]
    return results  # type: ignore[return-value]
