"""Image bytes <-> PIL, with deterministic PNG encoding (same pixels => same bytes => same blob)."""
from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img.convert("RGB")


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def stable_png(img: Image.Image) -> bytes:
    """RGB PNG with filter 0 on every row and zlib level 9, written by hand: the bytes depend only on
    the pixels, not on the Pillow/zlib-ng build (fixtures compared byte for byte rely on it)."""
    img = img.convert("RGB")
    width, height = img.size
    raw, stride = img.tobytes(), width * 3
    scanlines = b"".join(b"\x00" + raw[y * stride : (y + 1) * stride] for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines, 9)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body
