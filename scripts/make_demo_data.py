"""Draw the bundled demo benchmarks (VLMEvalKit TSV format) into data/demo/.

    python scripts/make_demo_data.py [--out data/demo]

DemoShapes.tsv: 24 multiple-choice items (shape, colour, counting).
DemoYesNo.tsv: 24 MME-style yes/no items; each pair shares one image and the second row of a pair
stores only the first row's index in its `image` cell.

Deterministic: fixed seeds, integer drawing, and PNGs written with the standard-library zlib
(Pillow's own PNG writer may use zlib-ng, whose bytes depend on its version).
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

SIZE = 96
SEED = 20260515
SHAPES = ("circle", "square", "triangle", "diamond", "star")
COLOURS = {
    "red": (210, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 70, 200),
    "yellow": (230, 200, 30),
    "purple": (140, 50, 170),
    "orange": (240, 130, 20),
}
YES_NO_SUFFIX = " Please answer yes or no."
LETTERS = "ABCD"


# ---------------------------------------------------------------- drawing


png_bytes = stable_png  # byte-stable across Pillow/zlib builds


def background(seed: int) -> Image.Image:
    """Blocky noise, faint diagonal stripes and a few one-pixel specks (small details for crops)."""
    rs = np.random.RandomState(seed)  # legacy generator: stream fixed across numpy versions
    base = np.array([200, 195, 180], dtype=np.int16) + rs.randint(-20, 21, size=3)
    blocks = rs.randint(-14, 15, size=(12, 12, 3)).astype(np.int16)
    pixels = base + np.kron(blocks, np.ones((8, 8, 1), dtype=np.int16))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    pixels[(xx + yy) % 9 == 0] -= 18
    for y, x in rs.randint(0, SIZE, size=(10, 2)):
        pixels[y, x] = (60, 60, 60)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: int, cy: int, r: int, colour: tuple[int, int, int]) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    outline = (30, 30, 30)
    if shape == "circle":
        draw.ellipse(box, fill=colour, outline=outline)
    elif shape == "square":
        draw.rectangle(box, fill=colour, outline=outline)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=colour, outline=outline)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour, outline=outline)
    else:  # star: integer points from a fixed table of unit offsets
        unit = [(0, -10), (3, -3), (10, -3), (4, 2), (6, 9), (0, 5), (-6, 9), (-4, 2), (-10, -3), (-3, -3)]
        draw.polygon([(cx + dx * r // 10, cy + dy * r // 10) for dx, dy in unit], fill=colour, outline=outline)
    draw.rectangle((cx - 1, cy - 1, cx + 1, cy + 1), fill=(250, 250, 250))  # tiny centre mark


def scene(seed: int, shapes: list[tuple[str, str, int]]) -> bytes:
    """PNG of `shapes` = [(shape, colour, radius)], the first one centred-ish, others in free grid cells."""
    rng = random.Random(seed)
    img = background(seed)
    draw = ImageDraw.Draw(img)
    cells = [(16 + 32 * (i % 3), 16 + 32 * (i // 3)) for i in range(9)]
    rng.shuffle(cells)
    for k, (shape, colour, radius) in enumerate(shapes):
        cx, cy = (48, 48) if radius > 16 and k == 0 else cells.pop()
        if radius > 16:  # large shapes claim the centre; keep small ones off it
            cells = [c for c in cells if abs(c[0] - 48) + abs(c[1] - 48) > 32]
        draw_shape(draw, shape, cx + rng.randint(-3, 3), cy + rng.randint(-3, 3), radius, COLOURS[colour])
    return png_bytes(img)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def with_answer_at(correct: str, distractors: list[str], letter: str) -> dict[str, str]:
    """Options A-D with `correct` placed at `letter`."""
    texts = list(distractors[:3])
    texts.insert(LETTERS.index(letter), correct)
    return dict(zip(LETTERS, texts))


# ---------------------------------------------------------------- benchmarks


def shapes_rows() -> list[dict]:
    rng = random.Random(SEED)
    rows = []
    for i in range(24):
        kind, letter, seed = i % 3, LETTERS[(i * 3 + i // 4) % 4], SEED + i
        if kind == 0:
            shape = SHAPES[i % len(SHAPES)]
            png = scene(seed, [(shape, rng.choice(list(COLOURS)), 24)])
            question = "Which shape is shown?"
            options = with_answer_at(shape, rng.sample([s for s in SHAPES if s != shape], 3), letter)
            category, l2 = "shape_recognition", "coarse perception"
        elif kind == 1:
            colour = list(COLOURS)[i % len(COLOURS)]
            others = [c for c in COLOURS if c != colour]
            small = [(rng.choice(SHAPES), c, 8) for c in rng.sample(others, 2)]
            png = scene(seed, [(rng.choice(SHAPES), colour, 22), *small])
            question = "What colour is the large shape?"
            options = with_answer_at(colour, rng.sample(others, 3), letter)
            category, l2 = "colour_recognition", "fine-grained perception"
        else:
            count = 1 + (i // 3) % 4
            circles = [("circle", rng.choice(list(COLOURS)), 9) for _ in range(count)]
            distract = [(rng.choice(["square", "triangle"]), rng.choice(list(COLOURS)), 9) for _ in range(2)]
            png = scene(seed, circles + distract)
            question = "How many circles are there?"
            options = dict(zip(LETTERS, ["1", "2", "3", "4"]))
            letter = LETTERS[count - 1]
            category, l2 = "counting", "fine-grained perception"
        rows.append({"index": i, "image": b64(png), "question": question, **options,
                     "answer": letter, "category": category, "l2-category": l2})
    return rows


def yes_no_pair(k: int, rng: random.Random) -> tuple[str, bytes, str, str]:
    """(category, png, question with answer Yes, question with answer No) for pair k."""
    seed = SEED + 1000 + k
    category = ("existence", "count", "color", "position")[k % 4]
    if category == "existence":
        present = rng.sample(SHAPES, 2)
        absent = rng.choice([s for s in SHAPES if s not in present])
        png = scene(seed, [(s, rng.choice(list(COLOURS)), 12) for s in present])
        return category, png, f"Is there a {present[0]} in the image?", f"Is there a {absent} in the image?"
    if category == "count":
        n = 2 + k % 3
        png = scene(seed, [("circle", rng.choice(list(COLOURS)), 9) for _ in range(n)])
        return category, png, f"Are there {n} circles in the image?", f"Are there {n + 1} circles in the image?"
    if category == "color":
        colour, other = rng.sample(list(COLOURS), 2)
        png = scene(seed, [(rng.choice(SHAPES), colour, 24)])
        return category, png, f"Is the large shape {colour}?", f"Is the large shape {other}?"
    left, right = rng.sample(SHAPES, 2)
    img = background(seed)
    draw = ImageDraw.Draw(img)
    draw_shape(draw, left, 24, 40 + rng.randint(-8, 8), 13, COLOURS[rng.choice(list(COLOURS))])
    draw_shape(draw, right, 72, 56 + rng.randint(-8, 8), 13, COLOURS[rng.choice(list(COLOURS))])
    yes = f"Is the {left} on the left of the {right}?"
    return category, png_bytes(img), yes, f"Is the {left} on the right of the {right}?"


def yes_no_rows() -> list[dict]:
    rng = random.Random(SEED + 1)
    rows = []
    for k in range(12):
        category, png, yes_q, no_q = yes_no_pair(k, rng)
        pair = [(yes_q, "Yes"), (no_q, "No")] if k % 2 == 0 else [(no_q, "No"), (yes_q, "Yes")]
        first = 2 * k
        for j, (question, answer) in enumerate(pair):
            rows.append({"index": first + j, "image": b64(png) if j == 0 else str(first),
                         "question": question + YES_NO_SUFFIX, "answer": answer,
                         "category": category, "image_path": f"{category}/{k:03d}.png"})
    return rows


def write_tsv(rows: list[dict], path: Path) -> None:
    """Like VLMEvalKit's dump: pandas, tab-separated, no index column, '\\n' line ends."""
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False, lineterminator="\n")


def build(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "DemoShapes.tsv", out / "DemoYesNo.tsv"]
    write_tsv(shapes_rows(), paths[0])
    write_tsv(yes_no_rows(), paths[1])
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/demo"))
    for path in build(parser.parse_args(argv).out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
