"""`flash_attn_varlen_func` written on PyTorch SDPA, for code that imports flash-attn where it is missing.

Same contract as flash-attn 2's varlen call: q (total_q, H, D), k/v (total_k, Hk, D), sequences packed
back to back and delimited by `cu_seqlens_q` / `cu_seqlens_k`; `causal=True` aligns the mask to the
bottom right (query i of a sequence sees keys up to i + len_k - len_q), grouped-query heads allowed.
On GPU the sequences are padded into one batch with a boolean mask, so one SDPA call serves the whole pack.
On CPU the sequences of each (len_q, len_k) shape go through one SDPA call, unpadded: padding changes the
kernel's summation order, and unpadded a sequence's result does not depend on what else is in the pack
(bit for bit), so a packed CPU run reproduces the one-at-a-time one exactly.
"""
from __future__ import annotations

import importlib.machinery
import sys
import types
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F

NAME = "sdpa-varlen"  # what run records name when this implementation is the one in use


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, **unsupported):
    if dropout_p:
        raise ValueError("sdpa-varlen: dropout is not supported (inference only)")
    if unsupported.get("window_size", (-1, -1)) != (-1, -1) or unsupported.get("alibi_slopes") is not None:
        raise ValueError(f"sdpa-varlen: unsupported options {sorted(unsupported)}")
    cu_q, cu_k = cu_seqlens_q.to(q.device, torch.long), cu_seqlens_k.to(q.device, torch.long)
    if q.device.type == "cpu":
        return attention_by_shape(q, k, v, cu_q, cu_k, softmax_scale, causal)
    return padded_attention(q, k, v, cu_q, cu_k, int(max_seqlen_q), int(max_seqlen_k), softmax_scale, causal)


def _heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """(B, H, L, D) query, key, value; grouped-query attention: each key/value head repeated."""
    qb, kb, vb = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if kb.shape[1] != qb.shape[1]:
        rep = qb.shape[1] // kb.shape[1]
        kb, vb = kb.repeat_interleave(rep, dim=1), vb.repeat_interleave(rep, dim=1)
    return qb, kb, vb


def attention_by_shape(q, k, v, cu_q, cu_k, softmax_scale, causal):
    len_q, len_k = (cu_q[1:] - cu_q[:-1]).tolist(), (cu_k[1:] - cu_k[:-1]).tolist()
    shapes: dict[tuple[int, int], list[int]] = {}
    for i, shape in enumerate(zip(len_q, len_k)):
        shapes.setdefault(shape, []).append(i)
    out = q.new_empty(q.shape[0], q.shape[1], v.shape[2])
    for (lq, lk), members in shapes.items():
        rows_q = cu_q[members][:, None] + torch.arange(lq, device=q.device)  # (B, lq)
        rows_k = cu_k[members][:, None] + torch.arange(lk, device=q.device)
        mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq) if causal else None
        o = F.scaled_dot_product_attention(*_heads(q[rows_q], k[rows_k], v[rows_k]), attn_mask=mask,
                                           scale=softmax_scale)
        out[rows_q] = o.transpose(1, 2)
    return out


def padded_attention(q, k, v, cu_q, cu_k, max_q, max_k, softmax_scale, causal):
    len_q, len_k = cu_q[1:] - cu_q[:-1], cu_k[1:] - cu_k[:-1]
    pos_q = torch.arange(max_q, device=q.device)
    pos_k = torch.arange(max_k, device=q.device)
    valid_q = pos_q[None, :] < len_q[:, None]  # (B, max_q)
    valid_k = pos_k[None, :] < len_k[:, None]  # (B, max_k)
    # Padded rows/cols read some in-range row; the mask (keys) and valid_q (queries) discard them.
    idx_q = (cu_q[:-1, None] + pos_q[None, :]).clamp(max=q.shape[0] - 1)
    idx_k = (cu_k[:-1, None] + pos_k[None, :]).clamp(max=k.shape[0] - 1)
    qb, kb, vb = _heads(q[idx_q], k[idx_k], v[idx_k])
    mask = valid_k[:, None, :].expand(-1, max_q, -1)  # (B, max_q, max_k)
    if causal:
        shift = (len_k - len_q)[:, None, None]
        mask = mask & (pos_k[None, None, :] <= pos_q[None, :, None] + shift)
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask[:, None], scale=softmax_scale)
    return out.transpose(1, 2)[valid_q]  # (total_q, H, D), packed order


def real_flash_attn_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def provide_flash_attn(use_sdpa: bool) -> Iterator[str]:
    """While the block imports code that does `from flash_attn import flash_attn_varlen_func`, make
    that name resolve: to the real flash-attn unless `use_sdpa`, else to the SDPA version above. The
    stand-in module is removed again afterwards, so nothing else sees a fake `flash_attn` package.
    Yields the implementation's name for the run record."""
    if not use_sdpa:
        yield "flash_attn"
        return
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "flash_attn"}
    stand_in = types.ModuleType("flash_attn")
    # a spec, so importlib.util.find_spec works; no distribution metadata, so transformers still reports
    # flash-attn as not installed and never routes its own attention through the stand-in
    stand_in.__spec__ = importlib.machinery.ModuleSpec("flash_attn", None)
    stand_in.flash_attn_varlen_func = flash_attn_varlen_func
    sys.modules["flash_attn"] = stand_in
    try:
        yield NAME
    finally:
        sys.modules.pop("flash_attn", None)
        sys.modules.update(saved)
