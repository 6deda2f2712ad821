"""images.png_bytes: a decoded plain RGB PNG is sent as its own bytes; everything else is encoded."""
from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from g2u_tasks.backends.openai_client import data_url
from g2u_tasks.images import decode, encode_png, png_bytes


def _pixels(seed: int = 0, size=(13, 9)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _saved(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_decoded_rgb_png_keeps_its_bytes_and_a_stored_blob_goes_out_unchanged():
    data = _saved(_pixels(), compress_level=1)  # not our encoder's settings: returned as they are
    img = decode(data)
    assert png_bytes(img) is data and png_bytes(img) != encode_png(img)
    assert np.array_equal(np.asarray(decode(png_bytes(img))), np.asarray(img))
    blob = encode_png(_pixels(1))  # a thought blob: what data_url sent before, byte for byte
    assert data_url(decode(blob)) == "data:image/png;base64," + base64.b64encode(blob).decode()


def test_derived_images_are_encoded_from_their_own_pixels():
    img = decode(_saved(_pixels()))
    for derived in (img.copy(), img.resize((5, 5)), img.convert("RGB"), img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)):
        assert png_bytes(derived) == encode_png(derived)
    assert png_bytes(_pixels()) == encode_png(_pixels())  # never decoded


@pytest.mark.parametrize("data", [
    _saved(_pixels().convert("RGBA")),
    _saved(_pixels().convert("P")),
    _saved(_pixels().convert("L")),
    _saved(_pixels(), transparency=(0, 0, 0)),  # colour key: a server may see transparency
    _saved(_pixels(), "JPEG", quality=90),
], ids=["rgba", "palette", "grey", "colour-key", "jpeg"])
def test_other_sources_are_encoded_from_the_decoded_rgb_pixels(data):
    img = decode(data)
    assert png_bytes(img) == encode_png(img) and png_bytes(img) is not data  # encoded, not passed through
    assert np.array_equal(np.asarray(decode(png_bytes(img))), np.asarray(img))


def test_sixteen_bit_png_is_encoded_not_passed_through():
    rgb16 = (  # a 16-bit RGB PNG written by hand: IHDR bit depth 16, colour type 2
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", (2).to_bytes(4, "big") * 2 + bytes([16, 2, 0, 0, 0]))
        + _chunk(b"IDAT", zlib.compress(b"".join(b"\x00" + b"\x12\x34" * 6 for _ in range(2))))
        + _chunk(b"IEND", b""))
    img = decode(rgb16)
    assert png_bytes(img) == encode_png(img) and png_bytes(img) != rgb16


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
