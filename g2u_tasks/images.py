"""Image bytes <-> PIL, with deterministic PNG encoding (same pixels => same bytes => same blob)."""
from __future__ import annotations

import io

from PIL import Image


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img.convert("RGB")


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()
