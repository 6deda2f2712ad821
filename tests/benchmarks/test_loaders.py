"""Tests of g2u_tasks.benchmarks.loaders (loaders) and scripts/make_demo_data.py (bundled demo TSVs)."""
from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from PIL import Image

from g2u_tasks.benchmarks.loaders import infer_question_type, load_benchmark, parse_list_cell
from g2u_tasks.records import images_sha256

REPO = Path(__file__).resolve().parents[2]


def png(colour: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


RED, GREEN, BLUE = png((255, 0, 0)), png((0, 255, 0)), png((0, 0, 255))


def write_tsv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)  # what VLMEvalKit writes
    return path


def by_id(items):
    return {it.item_id: it for it in items}


# ---------------------------------------------------------------- TSV


def test_tsv_options_pointer_list_quoting_hint(tmp_path):
    rows = [
        {"index": 10, "image": b64(RED), "question": 'Which "colour"?\tTab and\nnewline', "hint": "Look closely",
         "A": "red", "B": "green", "C": None, "D": None, "answer": "A", "category": "colour", "l2-category": "attr"},
        {"index": 11, "image": "10", "question": "Same image?", "hint": None,
         "A": "yes", "B": "no", "C": "maybe", "D": None, "answer": "B", "category": "colour", "l2-category": "attr"},
        {"index": 12, "image": str([b64(GREEN), b64(BLUE)]), "question": "Two images", "hint": None,
         "A": "1", "B": "2", "C": None, "D": None, "answer": "B", "category": "count", "l2-category": None},
    ]
    items = load_benchmark("T", str(write_tsv(tmp_path / "t.tsv", rows)))
    first, pointer, multi = (by_id(items)[k] for k in ("10", "11", "12"))

    assert first.question == 'Which "colour"?\tTab and\nnewline'
    assert first.hint == "Look closely" and pointer.hint is None
    assert first.options == {"A": "red", "B": "green"}
    assert pointer.options == {"A": "yes", "B": "no", "C": "maybe"}
    assert first.question_type == "mcq" and first.answer == "A"
    assert first.extra == {"l2-category": "attr"} and multi.extra == {}
    assert first.images == (RED,) and first.image_sha256 == images_sha256((RED,)) and first.image_error is None
    assert pointer.images == (RED,) and pointer.image_sha256 == first.image_sha256
    assert multi.images == (GREEN, BLUE) and multi.image_sha256 == images_sha256((GREEN, BLUE))


def test_tsv_bad_image_missing_answer_and_dangling_pointer_keep_other_rows(tmp_path):
    rows = [
        {"index": 1, "image": b64(b"not an image at all" * 5), "question": "q1", "answer": "Yes"},
        {"index": 2, "image": "!!!" * 30, "question": "q2", "answer": "No"},
        {"index": 3, "image": b64(RED), "question": "q3", "answer": None},
        {"index": 4, "image": "999", "question": "q4", "answer": "yes"},
        {"index": 5, "image": str([b64(RED), "%%%" * 30]), "question": "q5", "answer": "3"},
    ]
    items = by_id(load_benchmark("T", str(write_tsv(tmp_path / "t.tsv", rows))))
    assert list(items) == ["1", "2", "3", "4", "5"]

    assert items["1"].images == () and items["1"].image_sha256 == ""
    assert items["1"].image_error == "image 0: cannot identify image file"
    assert items["2"].image_error.startswith("image 0: invalid base64")
    assert items["3"].answer is None and items["3"].image_error is None and items["3"].images == (RED,)
    assert items["3"].question_type == "open"
    assert "dangling image pointer '999'" in items["4"].image_error and items["4"].images == ()
    assert items["4"].answer == "Yes" and items["4"].question_type == "yes_no"
    # one good image out of two: kept, with the bad one named
    assert items["5"].images == (RED,) and items["5"].image_sha256 == images_sha256((RED,))
    assert items["5"].image_error.startswith("image 1: invalid base64")


def test_tsv_duplicates_limit_and_forced_question_type(tmp_path):
    rows = [{"index": i % 3, "image": b64(RED), "question": f"q{i}", "answer": "No"} for i in range(5)]
    path = str(write_tsv(tmp_path / "t.tsv", rows))
    items = load_benchmark("T", path)
    assert [it.item_id for it in items] == ["0", "1", "2", "0", "1"]
    assert [it.extra.get("load_error") for it in items] == [
        None, None, None, "row 4: duplicate item_id '0' (first at row 1)", "row 5: duplicate item_id '1' (first at row 2)"]
    assert all(it.image_error is None for it in items)

    limited = load_benchmark("T", path, limit=2, question_type="open")
    assert [it.question for it in limited] == ["q0", "q1"]
    assert {it.question_type for it in limited} == {"open"} and limited[0].answer == "No"


def test_missing_file_no_question_column_and_bad_type(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'MME'.*nope\.tsv"):
        load_benchmark("MME", str(tmp_path / "nope.tsv"))
    bad = write_tsv(tmp_path / "bad.tsv", [{"index": 0, "prompt": "x", "answer": "A"}])
    with pytest.raises(ValueError, match=r"'Bad'.*question.*\['index', 'prompt', 'answer'\]"):
        load_benchmark("Bad", str(bad))
    with pytest.raises(ValueError, match="question_type"):
        load_benchmark("Bad", str(bad), question_type="essay")


# ---------------------------------------------------------------- Parquet / JSONL


def test_parquet_hf_image_struct_and_options_list(tmp_path):
    df = pl.DataFrame(
        {
            "question_id": ["a", "b", "c"],
            "question": ["Which?", "How many?", "Broken"],
            "options": [["cat", "dog", None, "fish"], [], ["x", "y"]],
            "answer": ["B", "7", "x"],
            "category": ["animals", "count", None],
            "image": [
                {"bytes": RED, "path": "red.png"},
                {"bytes": GREEN, "path": None},
                {"bytes": b"junk", "path": None},
            ],
            "meta": [{"source": "s1"}, {"source": "s2"}, {"source": None}],
        }
    )
    path = tmp_path / "bench.parquet"
    df.write_parquet(path)
    items = by_id(load_benchmark("P", str(path)))

    a, b, c = items["a"], items["b"], items["c"]
    assert a.options == {"A": "cat", "B": "dog", "D": "fish"} and a.question_type == "mcq" and a.answer == "B"
    assert a.images == (RED,) and a.category == "animals" and json.loads(a.extra["meta"]) == {"source": "s1"}
    assert b.options == {} and b.question_type == "numeric" and b.images == (GREEN,)
    assert c.answer == "A"  # option text mapped to its letter
    assert c.images == () and c.image_error == "image 0: cannot identify image file"


def test_jsonl_relative_paths_images_list_and_bad_line(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "r.png").write_bytes(RED)
    (tmp_path / "img" / "g.png").write_bytes(GREEN)
    lines = [
        json.dumps({"id": 1, "question": "Rel path", "answer": "no", "image": "img/r.png"}),
        json.dumps({"id": 2, "question": "Two", "answer": "1.5", "images": ["img/r.png", {"path": "img/g.png"}]}),
        json.dumps({"id": 3, "question": "Gone", "answer": "free text", "image": "img/missing.png"}),
        "{not json",
        json.dumps({"id": 4, "question": "B64 + dict options", "options": {"A": "up", "B": "down"},
                    "answer": "A", "image": b64(BLUE)}),
    ]
    path = tmp_path / "sub.jsonl"
    path.write_text("\n".join(lines) + "\n")
    items = by_id(load_benchmark("J", str(path)))

    assert list(items) == ["1", "2", "3", "row-4", "4"]  # the malformed line is a broken row, not fatal
    assert items["row-4"].extra["load_error"].startswith("row 4: invalid JSON at line 4")
    assert items["1"].images == (RED,) and items["1"].answer == "No" and items["1"].question_type == "yes_no"
    assert items["2"].images == (RED, GREEN) and items["2"].question_type == "numeric"
    assert items["3"].images == () and items["3"].image_error == "image 0: image file not found: img/missing.png"
    assert items["3"].question_type == "open"
    assert items["4"].images == (BLUE,) and items["4"].options == {"A": "up", "B": "down"}
    assert load_benchmark("J", path.as_uri(), limit=1)[0].item_id == "1"  # fsspec URI + limit


def test_infer_question_type_and_list_cells():
    assert infer_question_type({"A": "x"}, "Yes") == "mcq"
    assert infer_question_type({}, "YES") == "yes_no"
    assert infer_question_type({}, "-3.5") == "numeric"
    assert infer_question_type({}, "nan") == "open"
    assert infer_question_type({}, None) == "open"
    assert parse_list_cell("['a', \"it's\", 'b,c']") == ["a", "it's", "b,c"]
    assert parse_list_cell('["x", null]') == ["x", None]
    assert parse_list_cell("['unterminated]") is None
    assert parse_list_cell("plain") is None


# ---------------------------------------------------------------- demo data


def test_demo_script_reproduces_committed_tsvs(tmp_path):
    script = REPO / "scripts" / "make_demo_data.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True, capture_output=True)
    for name in ("DemoShapes", "DemoYesNo"):
        committed = REPO / "data" / "demo" / f"{name}.tsv"
        assert (tmp_path / f"{name}.tsv").read_bytes() == committed.read_bytes(), name
        items = load_benchmark(name, str(committed))
        assert len(items) >= 24 and all(it.image_error is None and it.images for it in items)
        assert all(Image.open(io.BytesIO(it.images[0])).size == (96, 96) for it in items)
    assert sum(f.stat().st_size for f in (REPO / "data" / "demo").glob("*.tsv")) < 1_000_000

    shapes = load_benchmark("DemoShapes", str(REPO / "data" / "demo" / "DemoShapes.tsv"))
    assert {it.question_type for it in shapes} == {"mcq"} and {it.answer for it in shapes} == set("ABCD")
    yes_no = load_benchmark("DemoYesNo", str(REPO / "data" / "demo" / "DemoYesNo.tsv"))
    assert {it.question_type for it in yes_no} == {"yes_no"}
    assert sorted(it.answer for it in yes_no) == ["No"] * 12 + ["Yes"] * 12
    assert all(it.question.endswith(" Please answer yes or no.") for it in yes_no)
    assert [yes_no[i].image_sha256 == yes_no[i + 1].image_sha256 for i in range(0, 24, 2)] == [True] * 12
    raw = pl.read_csv(REPO / "data" / "demo" / "DemoYesNo.tsv", separator="\t", infer_schema=False)
    assert raw["image"][1] == "0"  # MME-style pointer to the first row of the pair
