"""Draw the positive-control benchmarks (VLMEvalKit TSV format) into data/control/.

    python scripts/make_control_data.py [--out data/control]

The answer is the colour of a detail. Each image is 128 px; the control model's processor resizes
it to 32 px (a factor of 4), so what it can read depends on the detail's size at 32 px.

The detail is a "mark": a 2x2 grid of squares holding the four option colours in a random order;
the question asks for the top-left square. The control model's processor downsamples with a box
filter (each encoder pixel is the mean of a 4x4 block), and a mark that fits in one block is drawn
inside exactly one block: the encoder sees the same average colour whatever the order, so the
original holds no information about the answer (chance, 25%, by construction). The reference
generator's detail enhancement crops the central 60% and scales it back up (x1.66); every mark
sits well inside that crop. A small mark's corner is one of `ZOOM_ALIGNED`, where the zoomed top-left
square covers most of one encoder pixel: read by nearest colour, that pixel gives the answer for all 24
orders (elsewhere on the grid the square straddles pixels, and only about half the orders read).
Test marks use the corners among those where context expansion's grid (6-px blocks) also holds the
whole mark in one pixel, so the outpainted small mark stays at chance.
(With a bicubic filter, or a mark off the block grid, the sub-pixel mark stays partly readable:
a small CNN read 2-px marks at 73% in the original.)

ControlSmallDetail.tsv  small_detail: a mark too small to read at 32 px; zoom makes it readable.
ControlColour.tsv       large_detail: the same mark, readable in the original (zoom or outpaint
                        change nothing); colour: the colour of one large shape. The structure map
                        (edges, colour washed out) makes red look pink and blue light blue.
                        Context expansion shrinks the content (x0.67): it cannot help anywhere.

The training split for scripts/train_control_model.py comes from the same drawing code with other
seeds (`training_scene`): half its marks at the small size, the rest over sizes 1-14 px.

Deterministic: fixed seeds, integer drawing, PNGs via g2u_tasks.images.stable_png.
"""
from __future__ import annotations

import argparse
import base64
import random
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from g2u_tasks.images import stable_png

SIZE = 128
BLOCK = 4  # the control model's processor averages 4x4-pixel blocks (box filter, 128 -> 32 px)
SEED = 20260601          # test split
TRAIN_SEED = 91_000_000  # training split: seeds from here on (disjoint from the test split's)
LETTERS = "ABCD"
# Saturated and pale versions of two hues: the structure map (35% of the colour blended into white)
# turns red into a pale red close to pink and blue into a pale blue, so it must hurt colour questions.
COLOURS = {"red": (205, 35, 35), "pink": (240, 160, 165), "blue": (35, 55, 205), "light blue": (160, 180, 240)}
MARK_QUESTION = "What colour is the top-left square of the mark?"
SHAPE_QUESTION = "What colour is the large shape?"
SHAPES = ("circle", "square", "diamond")

# Cell sizes in 128-px pixels (x0.25 at the encoder): small averages away, x1.67 reads.
SMALL_CELLS = (2,)  # a 4x4-px mark: one encoder pixel
# Where a small mark's top-left corner sits (x and y): on the block grid, and where the reference zoom
# (crop 77 px from 25, x128/77) maps the top-left square to 69-100% of one encoder pixel, so it reads.
ZOOM_ALIGNED = (52, 56, 64, 68, 76)  # training split
# Test split: also inside one encoder pixel after context expansion (32-px margins, 192 -> 32 px, 6x6
# blocks), so the outpainted small mark averages away too.
TEST_CORNERS = (52, 64, 76)
LARGE_CELLS = (9, 10, 11)
N_SMALL, N_LARGE, N_COLOUR = 48, 24, 24


# ---------------------------------------------------------------- drawing

def background(rs: np.random.RandomState) -> np.ndarray:
    """Neutral blocky noise (low saturation, so no background patch looks like an option colour)."""
    grey = 150 + rs.randint(-25, 26)
    base = np.array([grey, grey, grey], dtype=np.int16) + rs.randint(-8, 9, size=3)
    blocks = rs.randint(-16, 17, size=(16, 16, 1)).astype(np.int16)
    return base + np.kron(blocks, np.ones((SIZE // 16, SIZE // 16, 1), dtype=np.int16))


def jittered(rs: np.random.RandomState, name: str) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rs.randint(-15, 16), 0, 255)) for c in COLOURS[name])


def distractors(draw: ImageDraw.ImageDraw, rs: np.random.RandomState, n: int) -> None:
    """Grey blobs in the outer ring (outside the central crop), dark or light."""
    for _ in range(n):
        while True:
            x, y = rs.randint(4, SIZE - 4, size=2)
            if max(abs(x - SIZE // 2), abs(y - SIZE // 2)) > 0.35 * SIZE:
                break
        r, g = rs.randint(3, 7), int(rs.choice([50, 230]))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(g, g, g))


def mark_scene(rs: np.random.RandomState, cell: int, corners: tuple[int, ...] = ZOOM_ALIGNED
               ) -> tuple[Image.Image, list[str]]:
    """A 2x2 mark of `cell`-px squares near the centre; returns the image and the colours in
    reading order (top-left first)."""
    img = Image.fromarray(np.clip(background(rs), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    distractors(draw, rs, rs.randint(2, 6))
    order = list(rs.permutation(list(COLOURS)))
    shift = max(2, 14 - cell)  # the mark's centre stays within +-14 px of the image centre
    cx, cy = SIZE // 2 + rs.randint(-shift, shift + 1), SIZE // 2 + rs.randint(-shift, shift + 1)
    if 2 * cell <= BLOCK:  # a mark that fits in one encoder pixel sits in exactly one: it averages away
        cx, cy = (int(rs.choice(corners)) + cell for _ in range(2))
    for k, name in enumerate(order):
        x0, y0 = cx - cell + (k % 2) * cell, cy - cell + (k // 2) * cell
        draw.rectangle((x0, y0, x0 + cell - 1, y0 + cell - 1), fill=jittered(rs, name))
    return img, [str(c) for c in order]


def shape_scene(rs: np.random.RandomState) -> tuple[Image.Image, str]:
    img = Image.fromarray(np.clip(background(rs), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    distractors(draw, rs, rs.randint(2, 6))
    colour = str(rs.choice(list(COLOURS)))
    shape, r = SHAPES[rs.randint(len(SHAPES))], rs.randint(16, 30)
    cx, cy = SIZE // 2 + rs.randint(-10, 11), SIZE // 2 + rs.randint(-10, 11)
    box = (cx - r, cy - r, cx + r, cy + r)
    fill = jittered(rs, colour)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    return img, colour


def scene(seed: int, kind: str, cell: int | None = None, corners: tuple[int, ...] = ZOOM_ALIGNED
          ) -> tuple[Image.Image, str, str]:
    """(image, question, correct colour) for kind "mark" (with `cell`) or "shape"."""
    rs = np.random.RandomState(seed)  # legacy generator: stream fixed across numpy versions
    if kind == "mark":
        img, order = mark_scene(rs, cell, corners)
        return img, MARK_QUESTION, order[0]
    img, colour = shape_scene(rs)
    return img, SHAPE_QUESTION, colour


def options_for(rng: random.Random) -> dict[str, str]:
    """The four colours as options A-D, always in the same order (the answer letter still varies
    uniformly: the mark's order and the shape's colour are random)."""
    return dict(zip(LETTERS, COLOURS))


def training_scene(index: int) -> tuple[Image.Image, str, dict[str, str], str, str]:
    """Training item `index`: (image, question, options, answer letter, kind). Marks of every cell
    size from 1 to 14 px, and shapes; seeds disjoint from the test split."""
    seed = TRAIN_SEED + index
    rng = random.Random(seed)
    if rng.random() < 0.2:
        img, question, colour = scene(seed, "shape")
        kind = "shape"
    else:
        # half the marks at the test split's small size, so the zoomed small mark is well learnt
        img, question, colour = scene(seed, "mark", SMALL_CELLS[0] if rng.random() < 0.5 else rng.randint(1, 14))
        kind = "mark"
    options = options_for(rng)
    answer = next(k for k, v in options.items() if v == colour)
    return img, question, options, answer, kind


# ---------------------------------------------------------------- benchmarks

def b64(img: Image.Image) -> str:
    return base64.b64encode(stable_png(img)).decode("ascii")


def item_rows(plan: list[tuple[str, str, int | None]], seed: int) -> list[dict]:
    """One row per (category, kind, cell) in `plan`."""
    rows = []
    for i, (category, kind, cell) in enumerate(plan):
        rng = random.Random(seed + i)
        img, question, colour = scene(seed + i, kind, cell, TEST_CORNERS)
        options = options_for(rng)
        answer = next(k for k, v in options.items() if v == colour)
        rows.append({"index": i, "image": b64(img), "question": question, **options, "answer": answer,
                     "category": category, "l2-category": "fine-grained perception"})
    return rows


def small_rows() -> list[dict]:
    plan = [("small_detail", "mark", SMALL_CELLS[i % len(SMALL_CELLS)]) for i in range(N_SMALL)]
    return item_rows(plan, SEED)


def colour_rows() -> list[dict]:
    plan = [("large_detail", "mark", LARGE_CELLS[i % len(LARGE_CELLS)]) for i in range(N_LARGE)]
    plan += [("colour", "shape", None)] * N_COLOUR
    return item_rows(plan, SEED + 10_000)


def write_tsv(rows: list[dict], path: Path) -> None:
    """Like VLMEvalKit's dump: pandas, tab-separated, no index column, '\\n' line ends."""
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False, lineterminator="\n")


def build(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "ControlSmallDetail.tsv", out / "ControlColour.tsv"]
    write_tsv(small_rows(), paths[0])
    write_tsv(colour_rows(), paths[1])
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/control"))
    for path in build(parser.parse_args(argv).out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
