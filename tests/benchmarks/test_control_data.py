"""Tests of scripts/make_control_data.py (the positive-control benchmarks in data/control/)."""
from pathlib import Path

import numpy as np
from PIL import Image

from g2u_tasks.backends.generators.reference import crop_zoom
from g2u_tasks.benchmarks.loaders import load_benchmark
from g2u_tasks.images import decode
from tests.benchmarks.fixture_files import assert_script_reproduces

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" / "control"


def test_control_script_reproduces_committed_tsvs(tmp_path):
    assert_script_reproduces(REPO / "scripts" / "make_control_data.py", DATA, tmp_path)


def _mark_box(img: Image.Image) -> tuple[int, int, int, int]:
    """Bounding box of the saturated (option-coloured) pixels; background and distractors are grey."""
    arr = np.asarray(img).astype(int)
    ys, xs = np.nonzero(arr.max(-1) - arr.min(-1) > 60)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_small_marks_sit_in_one_encoder_block_and_the_zoom_spreads_them():
    items = load_benchmark("ControlSmallDetail", str(DATA / "ControlSmallDetail.tsv"))
    assert len(items) == 48 and {it.category for it in items} == {"small_detail"}
    for it in items:
        img = decode(it.images[0])
        x0, y0, x1, y1 = _mark_box(img)
        assert (x1 - x0, y1 - y0) == (4, 4) and x0 % 4 == 0 and y0 % 4 == 0, it.item_id  # one 4x4 block
        zx0, zy0, zx1, zy1 = _mark_box(crop_zoom(img))
        assert zx1 // 4 - zx0 // 4 >= 1 and zy1 // 4 - zy0 // 4 >= 1, it.item_id  # several blocks


def test_committed_control_model_measures_as_its_card_says():
    """models/control-llava's accuracy.json (and its README table) is what the weights give today,
    through the pipeline's transformers understander: original at chance, zoomed small marks read."""
    import json
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import train_control_model as train
    finally:
        sys.path.remove(str(REPO / "scripts"))
    model = REPO / "models" / "control-llava"
    rows = train.accuracy_table(model, DATA)
    assert rows == json.loads((model / "accuracy.json").read_text())
    assert train.table_markdown(rows) in (model / "README.md").read_text()
    acc = {(r["category"], r["variant"]): r["accuracy_pct"] for r in rows}
    assert acc[("small_detail", "original")] < 40 and acc[("small_detail", "zoomed")] > 90
    assert min(acc[(c, v)] for c in ("colour", "large_detail") for v in ("original", "zoomed")) > 90
