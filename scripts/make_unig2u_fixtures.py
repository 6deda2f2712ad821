"""Fixtures of three lmms-eval UniG2U sub-tasks in their real Parquet layout, with lmms-eval sample logs.

    python scripts/make_unig2u_fixtures.py [--out tests/fixtures/benchmarks/unig2u]

Writes, under the sub-task paths of the UniG2U dataset:
- chartqa100/chartqa100.parquet: type, question, answer (strings), image (Image feature: {bytes, path});
- mmsi_bench/attribute_appr.parquet: id (int64), images (list of Image), question_type, question,
  answer, thought;
- visualpuzzles/algorithmic.parquet: id (int64), category, image (Image), question, options
  (list of strings, or null when the options are drawn in the image), answer.
Each file carries the Hugging Face `datasets` feature metadata, so `datasets` decodes the images to
PIL as lmms-eval's doc_to_visual expects.

samples/<date>_samples_<task>.jsonl: what lmms-eval writes with --log_samples for the standard task
(one record per doc: doc_id, target, filtered_resps, input, doc_hash, token_counts, and the
sub-task's per-metric fields). The per-metric values are hand-derived from the sub-task's rules
(`SCORES` below, the reason beside each) and are what the tests compare against.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from g2u_tasks.benchmarks.adapters import load_benchmark_spec
from g2u_tasks.images import stable_png

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "benchmarks" / "unig2u"
DATE_ID = "20260101_000000"  # lmms-eval prefixes sample logs with the run's date id
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
IMAGE_FEATURE = {"_type": "Image"}


def picture(seed: int, size: int = 48) -> bytes:
    rng = random.Random(seed)
    img = Image.new("RGB", (size, size), tuple(200 + rng.randrange(50) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for k in range(1 + rng.randrange(4)):  # bars: a chart-like picture
        h = 8 + rng.randrange(size - 12)
        draw.rectangle((4 + 10 * k, size - h, 11 + 10 * k, size - 2), fill=(40 * k + 40, 90, 200 - 30 * k))
    return stable_png(img)


def image(seed: int) -> dict:
    return {"bytes": picture(seed), "path": f"{seed}.png"}


def write(table: pa.Table, features: dict, path: Path) -> None:
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(meta), path, compression="none")


# ---------------------------------------------------------------- the three sub-tasks
# (row fields, reply, hand-derived score, why)

CHARTQA = [
    ({"type": "human_test", "question": "What is the value of the tallest bar?", "answer": "42"},
     "42", 1.0, "numbers equal"),
    ({"type": "human_test", "question": "What share does A have?", "answer": "25%"},
     "0.26", 1.0, "25% reads 0.25; |0.26-0.25|/0.25 = 0.04 <= 0.05"),
    ({"type": "human_test", "question": "Is the line increasing?", "answer": "Yes"},
     "yes", 1.0, "not numbers: case-insensitive equality"),
    ({"type": "augmented_test", "question": "What is the minimum value?", "answer": "0"},
     "0.0", 0.0, "gold 0 is falsy: text equality, '0.0' != '0'"),
    ({"type": "augmented_test", "question": "Which year had the peak?", "answer": "2019"},
     "2020", 1.0, "years are numbers too: 1/2019 <= 0.05"),
    ({"type": "augmented_test", "question": "Which colour is the largest segment?", "answer": "Blue"},
     "Blue.", 0.0, "texts differ by the period (no stripping)"),
    ({"type": "augmented_test", "question": "How many bars exceed 10?", "answer": "3"},
     "3 ", 1.0, "float() ignores the trailing space"),
]

MMSI_TYPE = "Attribute (Appr.)"
MMSI = [
    ({"question_type": MMSI_TYPE, "answer": "A"}, "The answer is ``A``.", 1.0, "double backticks narrow to A"),
    ({"question_type": MMSI_TYPE, "answer": "B"}, "`C`", 0.0, "single backticks narrow to C"),
    ({"question_type": MMSI_TYPE, "answer": "C"}, "A lot of red cubes, so C", 1.0,
     "A is followed by a space and a letter, so the first letter is C"),
    ({"question_type": MMSI_TYPE, "answer": "D"}, "I cannot tell.", 0.0, "no standalone A-D: score 0"),
    ({"question_type": MMSI_TYPE, "answer": "B"}, "{B} is right", 1.0, "braces narrow to B"),
    ({"question_type": "Motion (Cam.)", "answer": "A"}, "A", 1.0,
     "right, but another question_type: not in the Attribute (Appr.) metric"),
]

PUZZLES = [
    ({"options": ["3", "5", "7", "9"], "answer": "C"}, "Answer: (C)", 1.0, "'Answer: (X)' marker"),
    ({"options": ["2", "4", "6", "8"], "answer": "A"}, "I think the answer is b)", 0.0,
     "'b)' read as b; b != a"),
    ({"options": None, "answer": "D"}, "D", 1.0, "options in the image; a short reply ' D'"),
    ({"options": ["12", "14", "16", "18"], "answer": "B"}, "It must be 14", 1.0,
     "no letter: the option text found last is 14 = B"),
    ({"options": ["red", "blue", "green", "cyan"], "answer": "A"}, "Final Answer: B", 0.0,
     "'Final Answer:' is skipped by the 2nd pattern, the 3rd reads B"),
]


def chartqa_table() -> tuple[pa.Table, dict]:
    rows = [fields for fields, *_ in CHARTQA]
    table = pa.table({
        "type": pa.array([r["type"] for r in rows], pa.string()),
        "question": pa.array([r["question"] for r in rows], pa.string()),
        "answer": pa.array([r["answer"] for r in rows], pa.string()),
        "image": pa.array([image(100 + i) for i in range(len(rows))], IMAGE),
    })
    features = {"type": {"dtype": "string", "_type": "Value"}, "question": {"dtype": "string", "_type": "Value"},
                "answer": {"dtype": "string", "_type": "Value"}, "image": IMAGE_FEATURE}
    return table, features


def mmsi_table() -> tuple[pa.Table, dict]:
    rows = [fields for fields, *_ in MMSI]
    questions = [f"Which object matches description {i}? Options: A: cube, B: ball, C: cone, D: ring"
                 for i in range(len(rows))]
    table = pa.table({
        "id": pa.array([500 + i for i in range(len(rows))], pa.int64()),
        "images": pa.array([[image(200 + 2 * i), image(201 + 2 * i)] for i in range(len(rows))], pa.list_(IMAGE)),
        "question_type": pa.array([r["question_type"] for r in rows], pa.string()),
        "question": pa.array(questions, pa.string()),
        "answer": pa.array([r["answer"] for r in rows], pa.string()),
        "thought": pa.array([f"Compare the objects in both views ({i})." for i in range(len(rows))], pa.string()),
    })
    text = {"dtype": "string", "_type": "Value"}
    features = {"id": {"dtype": "int64", "_type": "Value"}, "images": {"feature": IMAGE_FEATURE, "_type": "Sequence"},
                "question_type": text, "question": text, "answer": text, "thought": text}
    return table, features


def puzzles_table() -> tuple[pa.Table, dict]:
    rows = [fields for fields, *_ in PUZZLES]
    table = pa.table({
        "id": pa.array([30 + i for i in range(len(rows))], pa.int64()),
        "category": pa.array(["algorithmic"] * len(rows), pa.string()),
        "image": pa.array([image(300 + i) for i in range(len(rows))], IMAGE),
        "question": pa.array([f"What comes next in sequence {i}? " for i in range(len(rows))], pa.string()),
        "options": pa.array([r["options"] for r in rows], pa.list_(pa.string())),
        "answer": pa.array([r["answer"] for r in rows], pa.string()),
    })
    text = {"dtype": "string", "_type": "Value"}
    features = {"id": {"dtype": "int64", "_type": "Value"}, "category": text, "image": IMAGE_FEATURE,
                "question": text, "options": {"feature": text, "_type": "Sequence"}, "answer": text}
    return table, features


def chartqa_fields(fields: dict, score: float, source_id: int) -> dict:
    split = "relaxed_human_split" if fields["type"] == "human_test" else "relaxed_augmented_split"
    return {"relaxed_overall": score, split: score}


def mmsi_fields(fields: dict, score: float, source_id: int) -> dict:
    entry = {"question_id": source_id, "l2_category": fields["question_type"], "score": score}
    return {fields["question_type"]: entry, "average": dict(entry)}


def puzzles_fields(fields: dict, score: float, source_id: int) -> dict:
    return {"accuracy": score}


# task name, file under the dataset, table builder, rows, per-metric fields, source id base
SUBTASKS = (
    ("unig2u_chartqa100", "chartqa100/chartqa100.parquet", chartqa_table, CHARTQA, chartqa_fields, None),
    ("unig2u_mmsi_attribute_appr", "mmsi_bench/attribute_appr.parquet", mmsi_table, MMSI, mmsi_fields, 500),
    ("unig2u_VisualPuzzles_algorithmic", "visualpuzzles/algorithmic.parquet", puzzles_table, PUZZLES,
     puzzles_fields, 30),
)


def samples(task: str, data: Path, rows: list, fields_of, id_base: int | None) -> list[dict]:
    items = load_benchmark_spec(task, str(data))
    out = []
    for doc_id, ((fields, reply, score, _why), item) in enumerate(zip(rows, items)):
        doc = {k: v for k, v in fields.items()}  # lmms-eval hashes the whole doc; ours: its text fields
        rec = {"doc_id": doc_id, "target": str(fields["answer"]), "filtered_resps": reply,
               "token_counts": [None],
               "doc_hash": hashlib.sha256(json.dumps(doc, indent=2, ensure_ascii=False).encode()).hexdigest()}
        rec.update(fields_of(fields, score, None if id_base is None else id_base + doc_id))
        rec["input"] = item.question
        out.append(rec)
    return out


def build(out: Path) -> list[Path]:
    written = []
    for task, rel, make, rows, fields_of, id_base in SUBTASKS:
        table, features = make()
        write(table, features, out / rel)
        log = out / "samples" / f"{DATE_ID}_samples_{task}.jsonl"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                               for r in samples(task, out / rel, rows, fields_of, id_base)), encoding="utf-8")
        written += [out / rel, log]
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    for path in build(args.out):
        print(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


if __name__ == "__main__":
    main()
