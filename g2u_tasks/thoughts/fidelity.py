"""Fidelity of a thought against its source image: PSNR and SSIM (scikit-image).

`fidelity`: the thought is resized to the source's size first (bicubic) when they differ.
`psnr_padded_square`: the paper's replace-mode gate (reference code): the source is padded to a
square with black (centred), the thought resized to that square when sizes differ, then PSNR.
Identical images have infinite PSNR; we report the cap PSNR_CAP instead so the value stays a
finite float in every table and JSON export.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

PSNR_CAP = 100.0


def fidelity(source: Image.Image, thought: Image.Image) -> tuple[float, float]:
    """(psnr in dB, ssim in [-1, 1]) of the thought against the source, both RGB uint8."""
    src = np.asarray(source.convert("RGB"))
    th = thought.convert("RGB")
    if th.size != source.size:
        th = th.resize(source.size, Image.Resampling.BICUBIC)
    tha = np.asarray(th)
    if np.array_equal(src, tha):
        return PSNR_CAP, 1.0
    psnr = min(float(peak_signal_noise_ratio(src, tha, data_range=255)), PSNR_CAP)
    win = min(7, *src.shape[:2])
    win -= (win + 1) % 2  # odd window no larger than the image
    ssim = float(structural_similarity(src, tha, data_range=255, channel_axis=2, win_size=max(win, 3)))
    return psnr, ssim


def pad_to_square(img: Image.Image) -> Image.Image:
    """The image centred on a black square whose side is its longer side (as the reference code)."""
    img = img.convert("RGB")
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new("RGB", (side, side), (0, 0, 0))
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def psnr_padded_square(source: Image.Image, thought: Image.Image) -> float:
    """PSNR (dB, capped) of the thought against the source padded to square; the replace_gated gate."""
    src = pad_to_square(source)
    th = thought.convert("RGB")
    if th.size != src.size:
        th = th.resize(src.size, Image.Resampling.BICUBIC)  # PIL's default filter, as the reference
    a, b = np.asarray(src), np.asarray(th)
    if np.array_equal(a, b):
        return PSNR_CAP
    return min(float(peak_signal_noise_ratio(a, b, data_range=255)), PSNR_CAP)
