"""Synthetic fixtures of the twelve benchmarks, each in its real file format (tests/fixtures/benchmarks/).

    python scripts/make_fixtures.py [--out tests/fixtures/benchmarks]

Per benchmark: `<Name>.tsv` (VLMEvalKit columns; the authors' MyVQABench layout for KIVA and
Spatial457_occ, VLMEvalKit's DataFrame for QSpatial_plus), `<Name>.parquet` for the HF exports
(MME, HallusionBench, MMVet, MMStar, AI2D_TEST, MathVista_MINI, QSpatial_plus, POPE, MMMU_DEV_VAL;
HF column names, images as {bytes, path} structs), and `predictions/<Name>.tsv`: a VLMEvalKit
result file (the TSV's columns without `image`, plus `prediction`) with hand-chosen predictions and

- expected_extracted: what the field's rule-based extraction gives without a judge ("" = the rules
  fail and a judge is needed; "Z" = VLMEvalKit's no-match letter; QSpatial: value in cm),
- expected_hit: intended correctness (0/1). For judge-scored rows (MMVet, Spatial457, KIVA rows
  marked "judge") it is the verdict a sensible judge gives; MMBench: per copy (a group needs all);
  QSpatial: delta_2 (expected_hit_delta_1_5 has delta_1.5),
- note: why.

Quirks covered: MME pointers + image_path pairs (all 14 categories), HallusionBench string indexes
with pointers, MMBench circular copies (index + k*10^6, rotated options, pointer images), MMMU
multi-image cells with <image k> tags and an open question, KIVA relative image paths
(final_image_path_ori, and the <ori_Bench>/<index>.png fallback), POPE comma-joined categories.
Deterministic: fixed seeds, PNGs written with the standard-library zlib, uncompressed Parquet.
"""
from __future__ import annotations

import argparse
import base64
import random
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw
from g2u_tasks.images import stable_png

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "benchmarks"
SIZE = 40
PALETTE = [(215, 50, 50), (50, 150, 70), (50, 80, 205), (225, 190, 30), (140, 60, 170), (235, 130, 25)]
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
YES_NO = " Please answer yes or no."


# ---------------------------------------------------------------- images


png_bytes = stable_png  # byte-stable across Pillow/zlib builds


def picture(seed: int) -> bytes:
    """A small flat scene: tinted background and one to three shapes (distinct per seed)."""
    rng = random.Random(seed)
    img = Image.new("RGB", (SIZE, SIZE), tuple(190 + rng.randrange(60) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(1 + rng.randrange(3)):
        r = 4 + rng.randrange(6)
        cx, cy = rng.randrange(r, SIZE - r), rng.randrange(r, SIZE - r)
        colour, kind = rng.choice(PALETTE), rng.randrange(3)
        box = (cx - r, cy - r, cx + r, cy + r)
        if kind == 0:
            draw.rectangle(box, fill=colour)
        elif kind == 1:
            draw.ellipse(box, fill=colour)
        else:
            draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=colour)
    draw.point((seed % SIZE, (seed * 7) % SIZE), fill=(0, 0, 0))  # keeps every seed's bytes distinct
    return png_bytes(img)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hf_image(data: bytes | None, path: str | None = None) -> dict | None:
    return None if data is None else {"bytes": data, "path": path}


# ---------------------------------------------------------------- fixture records


@dataclass
class Pred:
    """One prediction row: raw output, rule-based extraction, intended hit, reason."""

    prediction: str
    extracted: str
    hit: int
    note: str = ""


@dataclass
class Fixture:
    name: str
    tsv: list[dict]
    preds: list[Pred]
    hf: pa.Table | None = None
    files: dict[str, bytes] = field(default_factory=dict)  # extra files, relative to the output folder
    pred_columns: dict[str, list] = field(default_factory=dict)  # extra prediction columns


def hf_table(columns: dict[str, tuple[pa.DataType, list]]) -> pa.Table:
    return pa.table({name: pa.array(values, type=kind) for name, (kind, values) in columns.items()})


def col(rows: list[dict], key: str) -> list:
    return [r.get(key) for r in rows]


# ---------------------------------------------------------------- yes/no benchmarks


MME_CATEGORIES = (
    "OCR", "artwork", "celebrity", "color", "count", "existence", "landmark", "position", "posters", "scene",
    "code_reasoning", "commonsense_reasoning", "numerical_calculation", "text_translation",
)


MME_STYLES = {0: "sentence", 1: "period", 3: "wrong", 4: "both", 7: "bold", 10: "wrong", 11: "wrong"}


def yes_no_prediction(answer: str, style: str) -> Pred:
    """A prediction for a Yes/No answer in one of a few styles, with VLMEvalKit's extraction."""
    opposite = "No" if answer == "Yes" else "Yes"
    return {
        "plain": Pred(answer, answer, 1),
        "wrong": Pred(opposite, opposite, 0, "wrong"),
        "sentence": Pred(f"{answer.lower()}, I am sure.", answer, 1, "comma next to a space is deleted"),
        "period": Pred(f"{answer}.", answer, 1, "trailing period removed"),
        "both": Pred("Yes, there is no such object.", "Unknown", 0, "both yes and no -> Unknown"),
        "bold": Pred(f"**{answer}**", "Unknown", 0, "asterisks are not punctuation -> Unknown"),
    }[style]


def mme() -> Fixture:
    """14 categories x one image x two questions; the second row's image is a pointer."""
    rows, preds, hf_rows = [], [], []
    for i, category in enumerate(MME_CATEGORIES):
        png, image_path = picture(100 + i), f"{category}/{i:04d}.png"
        answers = ("Yes", "No") if i % 2 == 0 else ("No", "Yes")
        for j, answer in enumerate(answers):
            index = 2 * i + j
            question = f"Is this {category} sample number {index}?{YES_NO}"
            rows.append({"index": str(index), "image": b64(png) if j == 0 else str(2 * i), "question": question,
                         "answer": answer, "category": category, "image_path": image_path})
            hf_rows.append({"question_id": image_path, "image": hf_image(png, image_path), "question": question,
                            "answer": answer, "category": category})
            preds.append(yes_no_prediction(answer, MME_STYLES.get(index, "plain")))
    hf = hf_table({c: (IMAGE_TYPE if c == "image" else pa.string(), col(hf_rows, c)) for c in hf_rows[0]})
    return Fixture("MME", rows, preds, hf)


HALLUSION_ROWS = (  # (category, subcategory, set_id, figure_id, question_id, answer, prediction, extracted)
    ("VD", "figure", "0", "0", "0", "Yes", "Yes", "Yes"),
    ("VD", "figure", "0", "0", "1", "No", "No", "No"),
    ("VD", "figure", "0", "1", "0", "No", "Yes", "Yes"),
    ("VD", "figure", "0", "1", "1", "Yes", "Yes, it is.", "Yes"),
    ("VS", "chart", "0", "0", "0", "Yes", "yes", "Yes"),
    ("VS", "chart", "0", "0", "1", "No", "Yes and no.", "Unknown"),
    ("VS", "chart", "0", "1", "0", "No", "No", "No"),
    ("VS", "chart", "0", "1", "1", "No", "No", "No"),
    ("VD", "illusion", "1", "0", "0", "Yes", "Yes", "Yes"),
)


def hallusion() -> Fixture:
    """String indexes category_subcategory_visualinput_set_figure_question; a figure's later
    questions point at its first row."""
    rows, preds, hf_rows, first_of = [], [], [], {}
    for k, (cat, sub, set_id, fig, qid, answer, pred, extracted) in enumerate(HALLUSION_ROWS):
        index = f"{cat}_{sub}_1_{set_id}_{fig}_{qid}"
        figure = (cat, sub, set_id, fig)
        png = picture(200 + len(first_of)) if figure not in first_of else None
        question = f"According to the {sub}, is statement {set_id}.{qid} true?"
        if png is not None:
            first_of[figure] = (index, png)
        rows.append({"index": index, "image": b64(png) if png else first_of[figure][0], "question": question,
                     "answer": answer, "category": cat, "l2-category": f"{cat}_{sub}"})
        preds.append(Pred(pred, extracted, int(extracted == answer), "" if extracted == answer else "wrong"))
        filename = f"./hallusion_bench/{cat}/{sub}/{set_id}_{fig}.png"
        hf_rows.append({"category": cat, "subcategory": sub, "visual_input": "1", "set_id": set_id,
                        "figure_id": fig, "sample_note": f"sample {k}", "question_id": qid, "question": question,
                        "gt_answer_details": f"The statement is {answer.lower() == 'yes'}.",
                        "gt_answer": "1" if answer == "Yes" else "0", "filename": filename,
                        "image": hf_image(first_of[figure][1], filename)})
    hf = hf_table({c: (IMAGE_TYPE if c == "image" else pa.string(), col(hf_rows, c)) for c in hf_rows[0]})
    return Fixture("HallusionBench", rows, preds, hf)


def pope() -> Fixture:
    """Row 3 is asked under two categories (comma-joined in the TSV, two rows in the HF export)."""
    spec = (  # (category, answer, prediction, extracted)
        ("adversarial", "Yes", "Yes", "Yes"),
        ("adversarial", "No", "No", "No"),
        ("popular", "Yes", "yes", "Yes"),
        ("popular,random", "Yes", "No, there is not.", "No"),
        ("random", "No", "Yes", "Yes"),
        ("random", "No", "There is no bottle in the image.", "No"),
    )
    objects = ("dog", "bottle", "car", "chair", "bottle", "bottle")
    rows, preds, hf_rows = [], [], []
    for k, (category, answer, pred, extracted) in enumerate(spec):
        png = picture(300 + k // 2)
        question = f"Is there a {objects[k]} in the image?"
        rows.append({"index": str(k), "image": b64(png) if k % 2 == 0 else str(k - 1), "question": question,
                     "answer": answer, "category": category})
        preds.append(Pred(pred, extracted, int(extracted == answer), "" if extracted == answer else "wrong"))
        for cat in category.split(","):
            hf_rows.append({"id": str(len(hf_rows)), "question_id": str(k + 1), "question": question,
                            "answer": answer.lower(), "image_source": f"COCO_val2014_{300 + k // 2:012d}",
                            "image": hf_image(png), "category": cat})
    hf = hf_table({c: (IMAGE_TYPE if c == "image" else pa.string(), col(hf_rows, c)) for c in hf_rows[0]})
    return Fixture("POPE", rows, preds, hf)


# ---------------------------------------------------------------- MCQ benchmarks


def mmstar() -> Fixture:
    spec = (  # (question, options, answer, category, l2-category, prediction, extracted)
        ("What colour is the largest shape?", ("red, with a black outline", "green", "blue", "yellow"), "A",
         "coarse perception", "image scene and topic", "A", "A"),
        ("Which shape is on the left?", ("circle", "square", "triangle", "star"), "B",
         "fine-grained perception", "object counting", "The answer is B.", "B"),
        ("Where is the square relative to the circle?", ("left", "right", "above", "below"), "C",
         "instance reasoning", "single-instance reasoning",
         "B. The square is left of the circle and the circle is drawn near the top edge of the picture", "Z"),
        ("Where is the triangle relative to the square?", ("left", "right", "above", "below"), "D",
         "logical reasoning", "diagram reasoning", "It is below the square.", "D"),
        ("How many shapes are there?", ("one", "two", "three", "four"), "A",
         "math", "numeric commonsense and calculation", "C", "C"),
        ("Which law explains the picture?", ("gravity", "inertia", "friction", "buoyancy"), "B",
         "science & technology", "physics", "Cannot determine the answer", "Z"),
    )
    rows, preds, hf_rows = [], [], []
    for k, (question, options, answer, cat, l2, pred, extracted) in enumerate(spec):
        png = picture(400 + k)
        letters = dict(zip("ABCD", options))
        rows.append({"index": str(k), "image": b64(png), "question": question, **letters, "answer": answer,
                     "category": cat, "l2-category": l2})
        embedded = f"{question}\nOptions: " + ", ".join(f"{x}: {t}" for x, t in letters.items())
        hf_rows.append({"index": k, "question": embedded, "image": hf_image(png), "answer": answer,
                        "category": cat, "l2_category": l2,
                        "meta_info": {"source": "synthetic", "split": "val", "image_path": f"images/{k}.jpg"}})
        preds.append(Pred(pred, extracted, int(extracted == answer), _mcq_note(pred, extracted, answer)))
    hf = hf_table({
        "index": (pa.int64(), col(hf_rows, "index")),
        "question": (pa.string(), col(hf_rows, "question")),
        "image": (IMAGE_TYPE, col(hf_rows, "image")),
        "answer": (pa.string(), col(hf_rows, "answer")),
        "category": (pa.string(), col(hf_rows, "category")),
        "l2_category": (pa.string(), col(hf_rows, "l2_category")),
        "meta_info": (pa.struct([("source", pa.string()), ("split", pa.string()), ("image_path", pa.string())]),
                      col(hf_rows, "meta_info")),
    })
    return Fixture("MMStar", rows, preds, hf)


def _mcq_note(pred: str, extracted: str, answer: str) -> str:
    if extracted == "Z":
        return "no option letter near the end and no unique option text -> Z"
    return "" if extracted == answer else "wrong"


def mmbench() -> Fixture:
    """3 questions, circular-expanded: copy k has index + k*10^6, options rotated by k, image pointer."""
    spec = (  # (question, hint, options, answer, category, l2-category, per-copy predictions)
        ("What is the main colour?", None, ("red", "green", "blue", "yellow"), "C",
         "attribute_recognition", "finegrained_perception (instance-level)", ("C", "B.", "The answer is A", "D")),
        ("Which emotion fits the scene?", "The scene is bright.", ("happy", "sad", "angry", "scared"), "A",
         "image_emotion", "coarse_perception", ("A", "D", "A", "B")),
        ("Is the square left of the circle?", None, ("yes", "no"), "B",
         "spatial_relationship", "relation_reasoning", ("B", "A")),
    )
    originals, copies, preds_by_index = [], [], {}
    for g, (question, hint, options, answer, cat, l2, predictions) in enumerate(spec):
        png, n = picture(500 + g), len(options)
        for k in range(n):
            rotated = [options[(i + k) % n] for i in range(n)]
            gold = "ABCD"[("ABCD".index(answer) - k) % n]
            index = g + k * 1_000_000
            row = {"index": str(index), "image": b64(png) if k == 0 else str(g), "question": question,
                   "hint": hint, **dict(zip("ABCD", rotated)), "answer": gold, "category": cat,
                   "l2-category": l2, "split": "dev"}
            (originals if k == 0 else copies).append(row)
            extracted = predictions[k].replace("The answer is ", "").rstrip(".")
            preds_by_index[index] = Pred(predictions[k], extracted, int(extracted == gold),
                                      f"group {g} copy {k}" + ("" if extracted == gold else ": wrong"))
    rows = originals + sorted(copies, key=lambda r: int(r["index"]))
    preds = [preds_by_index[int(r["index"])] for r in rows]
    return Fixture("MMBench_DEV_EN", rows, preds)


def ai2d() -> Fixture:
    spec = (  # (question, options, answer letter, prediction, extracted, note)
        ("Which stage comes first?", ("egg", "larva", "pupa", "adult"), "A", "A", "A", ""),
        ("What does the arrow point to?", ("root", "stem", "leaf", "flower"), "C", "(C)", "C", "brackets stripped"),
        ("Which body is shown?", ("sun", "moon", "earth"), "B", "B", "B", "three options"),
        ("What eats the grass?", ("rabbit", "fox", "hawk", "snake"), "A", "D", "D", "wrong"),
        ("Which body is largest?", ("sun", "moon", "earth", "star"), "B", "the moon", "B", "option text match"),
    )
    rows, preds, hf_rows = [], [], []
    for k, (question, options, answer, pred, extracted, note) in enumerate(spec):
        png = picture(600 + k)
        rows.append({"index": str(k), "image": b64(png), "question": question,
                     **dict(zip("ABCD", options + (None,) * (4 - len(options)))), "answer": answer})
        hf_rows.append({"question": question, "options": list(options), "answer": str("ABCD".index(answer)),
                        "image": hf_image(png)})
        preds.append(Pred(pred, extracted, int(extracted == answer), note))
    hf = hf_table({
        "question": (pa.string(), col(hf_rows, "question")),
        "options": (pa.list_(pa.string()), col(hf_rows, "options")),
        "answer": (pa.string(), col(hf_rows, "answer")),
        "image": (IMAGE_TYPE, col(hf_rows, "image")),
    })
    return Fixture("AI2D_TEST", rows, preds, hf)


def mmmu() -> Fixture:
    """Single image, two and three images with <image k> tags, and one open question."""
    spec = (  # (id, question, options, answer, n_images, qtype, prediction, extracted, hit)
        ("validation_Art_1", "<image 1> Which style is this drawing?", ("cubist", "realist", "abstract", "pop"),
         "B", 1, "multiple-choice", "B", "B", 1),
        ("validation_Math_2", "Compare <image 1> and <image 2>. Which has more shapes?",
         ("the first", "the second"), "A", 2, "multiple-choice", "A", "A", 1),
        ("dev_Physics_3", "What is the length in cm shown in <image 1>?", (), "12.5", 1, "open",
         "12.5", "A", 1),
        ("validation_Art_Theory_4", "Which of <image 1>, <image 2>, <image 3> is symmetric?",
         ("image 1", "image 2", "image 3", "none"), "C", 3, "multiple-choice", "D", "D", 0),
    )
    rows, preds, hf_rows = [], [], []
    for k, (item_id, question, options, answer, n_images, qtype, pred, extracted, hit) in enumerate(spec):
        pngs = [picture(700 + 10 * k + j) for j in range(n_images)]
        split, category = item_id.split("_")[0], "_".join(item_id.split("_")[1:-1])
        image_cell = b64(pngs[0]) if n_images == 1 else str([b64(p) for p in pngs])
        rows.append({"index": str(k + 1), "question": question,
                     **dict(zip("ABCD", options + (None,) * (4 - len(options)))), "answer": answer,
                     "image": image_cell, "category": category, "split": split})
        note = "open: A = gold, B = 'Other Answers'; option text match" if qtype == "open" else (
            "" if hit else "wrong")
        preds.append(Pred(pred, extracted, hit, note))
        hf_rows.append({"id": item_id, "question": question, "options": str(list(options)),
                        "explanation": "", **{f"image_{j}": hf_image(pngs[j - 1]) if j <= n_images else None
                                               for j in range(1, 8)},
                        "img_type": "['Diagrams']", "answer": answer, "topic_difficulty": "Easy",
                        "question_type": qtype, "subfield": category})
    hf = hf_table({c: (IMAGE_TYPE if c.startswith("image_") else pa.string(), col(hf_rows, c)) for c in hf_rows[0]})
    return Fixture("MMMU_DEV_VAL", rows, preds, hf)


# ---------------------------------------------------------------- judge / numeric benchmarks


def mmvet() -> Fixture:
    spec = (  # (question, answer, capabilities, prediction, judge score)
        ("What colour is the circle?", "red<OR>crimson", ["rec"], "It is crimson.", 1),
        ("How many shapes are there?", "3", ["rec", "math"], "2", 0),
        ("Which shapes are shown?", "circle<AND>square", ["rec", "spat"], "A circle and a square.", 1),
        ("What is written at the top?", "STOP", ["ocr"], "It says GO.", 0),
        ("What would happen if the ball rolled?", "it falls off the table", ["know", "gen"],
         "It would fall off the table.", 1),
    )
    rows, preds, hf_rows = [], [], []
    for k, (question, answer, caps, pred, score) in enumerate(spec):
        png = picture(800 + k)
        rows.append({"index": str(k), "image": b64(png), "question": question, "answer": answer,
                     "category": ",".join(caps)})
        hf_rows.append({"question_id": f"v1_{k}", "image": hf_image(png), "question": question, "answer": answer,
                        "image_source": f"v1_{k}", "capability": caps})
        preds.append(Pred(pred, "", score, "judge score"))
    hf = hf_table({
        "question_id": (pa.string(), col(hf_rows, "question_id")),
        "image": (IMAGE_TYPE, col(hf_rows, "image")),
        "question": (pa.string(), col(hf_rows, "question")),
        "answer": (pa.string(), col(hf_rows, "answer")),
        "image_source": (pa.string(), col(hf_rows, "image_source")),
        "capability": (pa.list_(pa.string()), col(hf_rows, "capability")),
    })
    return Fixture("MMVet", rows, preds, hf)


def mathvista() -> Fixture:
    shapes = ["circle", "square", "triangle", "star"]
    # (pid, query, answer, question_type, answer_type, choices, precision, unit, task, skills,
    #  prediction, extracted, hit, note)
    spec = (
        ("1", "Which shape is blue?", "square", "multi_choice", "text", shapes, None, None,
         "figure question answering", ["logical reasoning"], "B", "B", 1, "pre-fetch letter"),
        ("2", "How long is the bar (in cm)?", "7", "free_form", "integer", None, None, "cm",
         "textbook question answering", ["arithmetic reasoning"], "7", "7", 1, "pre-fetch integer"),
        ("3", "What is the ratio? (one decimal place)", "1.5", "free_form", "float", None, 1.0, None,
         "math word problem", ["algebraic reasoning", "arithmetic reasoning"], "1.50", "1.5", 1,
         "float compared exactly: 1.50 == 1.5"),
        ("4", "What is the slope? (two decimal places)", "2.25", "free_form", "float", None, 2.0, None,
         "math word problem", ["algebraic reasoning"], "2.3", "", 0,
         "pre-fetch fails (2.3 != 2.25, no rounding); judge extracts 2.3 -> wrong"),
        ("5", "List the x-intercepts.", "[1, 2, 3]", "free_form", "list", None, None, None,
         "geometry problem solving", ["algebraic reasoning"], "[1, 2, 3]", "", 0, "list answers never score"),
        ("6", "Which shape has three sides?", "triangle", "multi_choice", "text", shapes, None, None,
         "figure question answering", ["geometry reasoning"], "The shape is a triangle", "C", 1,
         "option text match"),
    )
    rows, preds, hf_rows = [], [], []
    for k, (pid, query, answer, qtype, atype, choices, precision, unit, task, skills, pred, extracted, hit,
            note) in enumerate(spec):
        png = picture(900 + k)
        option = "ABCD"[choices.index(answer)] if choices else None
        rows.append({"index": pid, "image": b64(png), "question": query, "answer": answer,
                     "question_type": qtype, "answer_type": atype, "choices": str(choices) if choices else None,
                     "answer_option": option, "precision": None if precision is None else repr(precision),
                     "unit": unit, "task": task, "skills": str(skills)})
        preds.append(Pred(pred, extracted, hit, note))
        hf_rows.append({"pid": pid, "question": query, "image": f"images/{pid}.jpg",
                        "decoded_image": hf_image(png, None), "choices": choices, "unit": unit,
                        "precision": precision, "answer": answer, "question_type": qtype, "answer_type": atype,
                        "metadata": {"category": "math-targeted-vqa", "context": "synthetic scene",
                                     "grade": "high school", "img_height": SIZE, "img_width": SIZE,
                                     "language": "english", "skills": skills, "source": "synthetic",
                                     "split": "testmini", "task": task},
                        "query": f"Hint: Please answer the question.\nQuestion: {query}"})
    for row, hf_row in zip(rows, hf_rows):  # VLMEvalKit's question is the HF query
        row["question"] = hf_row["query"]
    metadata_type = pa.struct([
        ("category", pa.string()), ("context", pa.string()), ("grade", pa.string()), ("img_height", pa.int64()),
        ("img_width", pa.int64()), ("language", pa.string()), ("skills", pa.list_(pa.string())),
        ("source", pa.string()), ("split", pa.string()), ("task", pa.string()),
    ])
    hf = hf_table({
        "pid": (pa.string(), col(hf_rows, "pid")),
        "question": (pa.string(), col(hf_rows, "question")),
        "image": (pa.string(), col(hf_rows, "image")),
        "decoded_image": (IMAGE_TYPE, col(hf_rows, "decoded_image")),
        "choices": (pa.list_(pa.string()), col(hf_rows, "choices")),
        "unit": (pa.string(), col(hf_rows, "unit")),
        "precision": (pa.float64(), col(hf_rows, "precision")),
        "answer": (pa.string(), col(hf_rows, "answer")),
        "question_type": (pa.string(), col(hf_rows, "question_type")),
        "answer_type": (pa.string(), col(hf_rows, "answer_type")),
        "metadata": (metadata_type, col(hf_rows, "metadata")),
        "query": (pa.string(), col(hf_rows, "query")),
    })
    return Fixture("MathVista_MINI", rows, preds, hf)


def qspatial() -> Fixture:
    """VLMEvalKit's QSpatial DataFrame (answer = str((value, unit))) and the HF split."""
    spec = (  # (question, value, unit, question_type, prediction, extracted cm, delta_2 hit, delta_1.5 hit)
        ("How far is the chair from the table?", 1.5, "meters", "distance",
         "\\scalar{1.2} \\distance_unit{meters}", "120.0", 1, 1),
        ("How wide is the box?", 100.0, "centimeters", "size",
         "\\scalar{40} \\distance_unit{centimeters}", "40.0", 0, 0),
        ("How tall is the lamp?", 1.0, "meters", "size",
         "\\scalar{3 to 4} \\distance_unit{feet}", "106.68", 1, 1),
        ("How far apart are the two cups?", 2.0, "meters", "distance", "About two meters.", "", 0, 0),
        ("How long is the shelf?", 40.0, "inches", "size", "\\scalar{60} \\distance_unit{cm}", "60.0", 1, 0),
    )
    rows, preds, hf_rows = [], [], []
    for k, (question, value, unit, qtype, pred, extracted, hit2, hit15) in enumerate(spec):
        png, image_path = picture(1000 + k), f"qspatial_plus/{k:03d}.png"
        rows.append({"index": str(k), "question": question, "answer_value": repr(value), "answer_unit": unit,
                     "question_type": qtype, "image_path": image_path, "image": b64(png),
                     "answer": str((value, unit))})
        note = "no \\scalar{} -> parse failure" if not extracted else f"ratio vs {value} {unit}"
        preds.append(Pred(pred, extracted, hit2, note))
        hf_rows.append({"question": question, "answer_value": value, "answer_unit": unit, "question_type": qtype,
                        "image_path": image_path, "image": hf_image(png, image_path)})
    hf = hf_table({
        "question": (pa.string(), col(hf_rows, "question")),
        "answer_value": (pa.float64(), col(hf_rows, "answer_value")),
        "answer_unit": (pa.string(), col(hf_rows, "answer_unit")),
        "question_type": (pa.string(), col(hf_rows, "question_type")),
        "image_path": (pa.string(), col(hf_rows, "image_path")),
        "image": (IMAGE_TYPE, col(hf_rows, "image")),
    })
    return Fixture("QSpatial_plus", rows, preds, hf, pred_columns={"expected_hit_delta_1_5": [s[7] for s in spec]})


# ---------------------------------------------------------------- authors' custom TSVs (MyVQABench)


def kiva() -> Fixture:
    """Images under images/KIVA/ named by final_image_path_ori; the last row uses the
    <ori_Bench>/<index>.png fallback."""
    spec = (  # (question, options, answer, category, paths, prediction, extracted, hit, note)
        ("Which option shows the same colour change?", ("red to blue", "blue to red", "no change"), "B", "colour",
         ["KIVA/trial_000.png"], "(B)", "B", 1, ""),
        ("Which option shows the same size change?", ("bigger", "smaller", "no change"), "A", "size",
         ["KIVA/trial_001.png", "KIVA/trial_001_extra.png"], "A", "A", 1, "only the first listed image is used"),
        ("Which option shows the same rotation?", ("90 degrees", "180 degrees", "no rotation"), "C", "rotation",
         ["KIVA/trial_002.png"], "I think C", "", 1, "two capitals (I, C): the parser fails; a judge gives C"),
        ("Which option shows the same reflection?", ("left-right", "up-down", "none"), "C", "reflection",
         ["KIVA/trial_003.png"], "The answer is B.", "B", 0, "wrong"),
        ("Is the change the same in both rows?", (), "Yes", "count", ["KIVA/trial_004.png"], "yes, the same",
         "Yes", 1, "yes/no fallback of the authors' parser"),
        ("Which option shows the same count change?", ("+1", "-1", "no change"), "B", "count", None, "C", "C", 0,
         "wrong; image found as KIVA/5.png"),
    )
    rows, preds, files = [], [], {}
    for k, (question, options, answer, category, paths, pred, extracted, hit, note) in enumerate(spec):
        for j, path in enumerate(paths or [f"KIVA/{k}.png"]):
            files[f"images/{path}"] = picture(1100 + 10 * k + j)
        rows.append({"index": str(k), "question": question,
                     **dict(zip("ABCD", options + (None,) * (4 - len(options)))), "answer": answer,
                     "category": category, "split": "test", "ori_Bench": "KIVA",
                     "final_image_path_ori": str(paths) if paths else None})
        preds.append(Pred(pred, extracted, hit, note))
    return Fixture("KIVA", rows, preds, files=files)


def spatial457() -> Fixture:
    """Authors' Spatial457_occ layout: no image column, images at images/Spatial457/<index>.png."""
    spec = (  # (question, answer, category, prediction, judge verdict)
        ("Is the red cube occluded by the sphere?", "Yes", "occlusion", "Yes, it is partly hidden.", 1),
        ("How many objects occlude the cylinder?", "2", "occlusion", "There are 3.", 0),
        ("What shape hides the small car?", "sphere", "occlusion", "A sphere.", 1),
        ("Is the bus fully visible?", "Yes", "occlusion", "No", 0),
        ("How many cars are partly hidden?", "2", "occlusion", "2", 1),
    )
    rows, preds, files = [], [], {}
    for k, (question, answer, category, pred, verdict) in enumerate(spec):
        index = 100 + k
        files[f"images/Spatial457/{index}.png"] = picture(1200 + k)
        rows.append({"index": str(index), "question": question, "answer": answer, "category": category,
                     "ori_Bench": "Spatial457"})
        preds.append(Pred(pred, "", verdict, "judge verdict (every row is judged)"))
    return Fixture("Spatial457_occ", rows, preds, files=files)


# ---------------------------------------------------------------- writing


def write_tsv(rows: list[dict], path: Path) -> None:
    """Like VLMEvalKit's dump: pandas, tab-separated, no index column, '\\n' line ends."""
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False, lineterminator="\n")


def write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="none")


def prediction_rows(fixture: Fixture) -> list[dict]:
    out = []
    for k, (row, p) in enumerate(zip(fixture.tsv, fixture.preds, strict=True)):
        record = {c: v for c, v in row.items() if c != "image"}
        record.update(prediction=p.prediction, expected_extracted=p.extracted, expected_hit=p.hit, note=p.note)
        record.update({name: values[k] for name, values in fixture.pred_columns.items()})
        out.append(record)
    return out


FIXTURES = (mme, hallusion, mmvet, mmstar, mmbench, ai2d, mathvista, kiva, spatial457, qspatial, pope, mmmu)


def build(out: Path) -> list[Path]:
    written: list[Path] = []
    (out / "predictions").mkdir(parents=True, exist_ok=True)
    for make in FIXTURES:
        fixture = make()
        write_tsv(fixture.tsv, out / f"{fixture.name}.tsv")
        write_tsv(prediction_rows(fixture), out / "predictions" / f"{fixture.name}.tsv")
        written += [out / f"{fixture.name}.tsv", out / "predictions" / f"{fixture.name}.tsv"]
        if fixture.hf is not None:
            write_parquet(fixture.hf, out / f"{fixture.name}.parquet")
            written.append(out / f"{fixture.name}.parquet")
        for relative, data in fixture.files.items():
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            (out / relative).write_bytes(data)
            written.append(out / relative)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    paths = build(args.out)
    print(f"{len(paths)} files, {sum(p.stat().st_size for p in paths)} bytes in {args.out}")


if __name__ == "__main__":
    main()
