"""Helpers every backend shares: dtype names, the default device, fitting an image to a size, CUDA
out-of-memory halving, and "the batch, else one by one"."""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence, TypeVar

from PIL import Image, ImageOps

log = logging.getLogger(__name__)
T = TypeVar("T")

DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}


def parse_dtype(name: str | None, owner: str = "backend"):
    """The torch dtype a config names (a `torch.` prefix is allowed); None stays None, "auto" stays "auto"."""
    if name is None:
        return None
    key = str(name).removeprefix("torch.")
    if key == "auto":
        return "auto"
    if key not in DTYPE_NAMES:
        raise ValueError(f"{owner}: unknown dtype {name!r}; known: auto, {', '.join(DTYPE_NAMES)}")
    import torch

    return getattr(torch, DTYPE_NAMES[key])


def default_device(device: str | None = None) -> str:
    """`device` when set, else "cuda" when available, else "cpu"."""
    if device:
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


FIT_MODES = ("crop", "pad", "stretch")


def fit_to_size(img: Image.Image, size: tuple[int, int], mode: str = "crop") -> Image.Image:
    """`img` as RGB at exactly (width, height).

    crop: centre-crop to the target aspect, then resize (no distortion, no bars; the inverse of the
    pad-to-square that square-input processors apply). pad: letterbox the whole image (black bars).
    stretch: plain resize (distorts when aspects differ).
    """
    img = img.convert("RGB")
    if img.size == tuple(size):
        return img
    if mode == "crop":
        return ImageOps.fit(img, size, Image.Resampling.LANCZOS)
    if mode == "pad":
        return ImageOps.pad(img, size, Image.Resampling.LANCZOS, color=(0, 0, 0))
    if mode == "stretch":
        return img.resize(size, Image.Resampling.LANCZOS)
    raise ValueError(f"unknown fit mode {mode!r}; use one of {', '.join(FIT_MODES)}")


def split_on_oom(call: Callable[[list], list[T]], items: list, label: str = "") -> list[T]:
    """`call(items)`; on CUDA out of memory, free the cache and call each half, down to single items."""
    import torch

    try:
        return call(items)
    except torch.cuda.OutOfMemoryError:
        if len(items) == 1:
            raise
    # Outside the except block, so the failed call's tensors can be freed.
    log.warning("%s: CUDA out of memory at batch %d; splitting", label or "backend", len(items))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = len(items) // 2
    return split_on_oom(call, items[:half], label) + split_on_oom(call, items[half:], label)


def isolate_failures(call: Callable[[list], Sequence[T]], items: list) -> list[T | Exception]:
    """`call(items)`; if it raises, call each item alone so a bad item fails alone (its slot holds
    the exception)."""
    try:
        return list(call(items))
    except Exception:  # noqa: BLE001 - isolate the failing item below
        out: list[Any] = []
        for item in items:
            try:
                out.append(call([item])[0])
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out
