"""Image bytes <-> PIL, with deterministic PNG encoding (same pixels => same bytes => same blob).

Every decode goes through a pixel budget checked on the header size, before any pixel is decoded:
a small file can declare a huge canvas (a 17 KB 1-bit PNG of 12000x12000 decodes to 432 MB of RGB),
so the file size bounds nothing and only the declared size bounds memory."""
from __future__ import annotations

import io
import math
import struct
import zlib

from PIL import Image

# 64 MP: above every image of the research benchmarks we load (HR-Bench 8K: 7680x4320 = 33 MP;
# MME, MMBench, MathVista, MMMU: a few MP at most), below Pillow's own warning at 89 MP and far below
# the 144 MP of the 12000x12000 bomb. Decoded to RGB it is at most 192 MB per image.
DEFAULT_MAX_PIXELS = 64_000_000
# Downscaling decodes the image first: at most this many times the budget (JPEG drafts at 1/2..1/8
# scale keep most large photos under it); bigger images are refused even when downscaling is on.
DOWNSCALE_DECODE_FACTOR = 4
_JPEG_DRAFT_SHRINK = 64  # a JPEG draft decodes at down to 1/8 x 1/8 of the declared size


class ImageTooLarge(ValueError):
    """An image whose declared size is over the pixel budget; the message gives both sizes."""


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Header only (no pixels decoded yet), with the declared size checked against the budget."""
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # Pillow's hard limit, far above ours
        raise ImageTooLarge(f"image over the pixel budget of {_mp(max_pixels)} ({exc})") from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise ImageTooLarge(
            f"image {width}x{height} ({_mp(width * height)}) is over the pixel budget of {_mp(max_pixels)}"
        )
    return img


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


def check_pixels(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """The declared (width, height); ImageTooLarge over the budget. Reads the header only."""
    with _open(data, max_pixels) as img:
        return img.size


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """RGB pixels of an image within the pixel budget; ImageTooLarge (before decoding) otherwise.
    When `data` is a plain 8-bit RGB PNG, the image keeps it for `png_bytes`."""
    img = _open(data, max_pixels)
    plain_png = (img.format == "PNG" and img.mode == "RGB" and "transparency" not in img.info
                 and all(tile.args == "RGB" for tile in img.tile))  # not 16-bit, no colour key
    img.load()
    out = img.convert("RGB")  # a new object, even when already RGB
    if plain_png:
        setattr(out, _SOURCE_PNG, data)
    return out


# Attribute `decode` sets on the one image object it returns: the PNG bytes of exactly its pixels.
# Images the pipeline derives (copy, resize, ...) are new objects without it; decoded images are
# never changed in place.
_SOURCE_PNG = "_g2u_source_png"


def png_bytes(img: Image.Image) -> bytes:
    """PNG bytes of the image's pixels: the bytes `decode` read it from, where those are a plain RGB
    PNG (sent as they are: no second encode), else `encode_png`."""
    data = getattr(img, _SOURCE_PNG, None)
    return data if data is not None else encode_png(img)


def downscale(data: bytes, max_pixels: int) -> tuple[bytes, str]:
    """PNG bytes of the image shrunk to fit the budget, and a note saying from what to what.

    Memory stays bounded: the decode is at most DOWNSCALE_DECODE_FACTOR x the budget, else
    ImageTooLarge."""
    img = _open(data, DOWNSCALE_DECODE_FACTOR * max_pixels * _JPEG_DRAFT_SHRINK)  # header only
    width, height = img.size
    scale = math.sqrt(max_pixels / (width * height))
    target = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
    img.draft("RGB", target)  # JPEG: decode at a reduced scale; no-op for other formats
    decoded = img.size[0] * img.size[1]
    if decoded > DOWNSCALE_DECODE_FACTOR * max_pixels:
        img.close()
        raise ImageTooLarge(
            f"image {width}x{height} ({_mp(width * height)}) is over the pixel budget of {_mp(max_pixels)} "
            f"and too large to downscale within {DOWNSCALE_DECODE_FACTOR}x the budget"
        )
    img.load()
    small = img.resize(target, Image.Resampling.LANCZOS) if img.mode not in ("1", "P") else img.resize(target)
    note = f"downscaled from {width}x{height} to {target[0]}x{target[1]} (pixel budget {_mp(max_pixels)})"
    return encode_png(small), note


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
