"""Tests of the benchmark table (g2u_tasks/benchmarks/table.py), the declaration-driven loading
(adapters.py, hooks.py), the committed fixtures (scripts/make_fixtures.py) and `benchmarks list`."""
from __future__ import annotations

import base64
import json
from collections import defaultdict
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flows.cli_benchmarks import benchmarks_app
from g2u_tasks.benchmarks.adapters import load_benchmark_spec
from g2u_tasks.benchmarks.hooks import split_embedded_options
from g2u_tasks.benchmarks.table import SPECS, BenchmarkSpec, get_spec, resolve
from g2u_tasks.scoring.suites import SUITES
from g2u_tasks.benchmarks.loaders import load_benchmark
from tests.benchmarks.fixture_files import assert_script_reproduces

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "benchmarks"

# (name to load with, fixture file, item count, question types)
CASES = [
    ("MME", "MME.tsv", 28, {"yes_no"}),
    ("MME", "MME.parquet", 28, {"yes_no"}),
    ("HallusionBench", "HallusionBench.tsv", 9, {"yes_no"}),
    ("HallusionBench", "HallusionBench.parquet", 9, {"yes_no"}),
    ("MMVet", "MMVet.tsv", 5, {"open"}),
    ("MMVet", "MMVet.parquet", 5, {"open"}),
    ("MMStar", "MMStar.tsv", 6, {"mcq"}),
    ("MMStar", "MMStar.parquet", 6, {"mcq"}),
    ("MMBench_DEV_EN", "MMBench_DEV_EN.tsv", 10, {"mcq"}),
    ("AI2D_TEST", "AI2D_TEST.tsv", 5, {"mcq"}),
    ("AI2D_TEST", "AI2D_TEST.parquet", 5, {"mcq"}),
    ("MathVista_MINI", "MathVista_MINI.tsv", 6, {"mcq", "numeric", "open"}),
    ("MathVista_MINI", "MathVista_MINI.parquet", 6, {"mcq", "numeric", "open"}),
    ("KIVA", "KIVA.tsv", 6, {"mcq", "yes_no"}),
    ("Spatial457_occ", "Spatial457_occ.tsv", 5, {"yes_no", "numeric", "open"}),
    ("QSpatial_plus", "QSpatial_plus.tsv", 5, {"numeric"}),
    ("QSpatial_plus", "QSpatial_plus.parquet", 5, {"numeric"}),
    ("POPE", "POPE.tsv", 6, {"yes_no"}),
    ("POPE", "POPE.parquet", 7, {"yes_no"}),
    ("MMMU_DEV_VAL", "MMMU_DEV_VAL.tsv", 4, {"mcq", "numeric"}),
    ("MMMU_DEV_VAL", "MMMU_DEV_VAL.parquet", 4, {"mcq", "numeric"}),
]


def load(file: str, name: str | None = None, **kwargs):
    return load_benchmark_spec(name or file.rsplit(".", 1)[0], str(FIXTURES / file), **kwargs)


def by_id(items):
    return {it.item_id: it for it in items}


def same(items_a, items_b, *extra_keys):
    """The fields both formats must agree on, item by item."""
    def view(it):
        return (it.question, it.options, it.answer, it.category, it.question_type, it.images,
                tuple(it.extra.get(k) for k in extra_keys))
    return [view(a) for a in items_a] == [view(b) for b in items_b]


# ---------------------------------------------------------------- registry


def test_every_spec_resolves_by_name_and_alias_case_insensitively():
    vlmevalkit = [s for s in SPECS if not s.name.startswith("unig2u_")]  # unig2u_*: tests/scoring/test_unig2u.py
    assert len(vlmevalkit) == 13 and vlmevalkit[-1].name == "custom"
    for spec in SPECS:
        for name in spec.names:
            assert get_spec(name) is spec and get_spec(name.lower()) is spec and get_spec(f" {name.upper()} ") is spec
    assert resolve("spatial457_l5") == (get_spec("Spatial457"), "Spatial457_L5")
    assert resolve("qspatial_scannet")[1] == "QSpatial_scannet"
    assert {s.metric_suite for s in SPECS} == set(SUITES)  # every suite scores some benchmark
    assert all(s.suite is SUITES[s.metric_suite] for s in SPECS)
    with pytest.raises(ValueError, match=r"unknown benchmark 'OCRBenchX'.*MME.*Spatial457_occ"):
        get_spec("OCRBenchX")


def test_spec_table_is_validated_and_frozen():
    with pytest.raises(ValueError, match="suite must be a ScoringSuite"):
        BenchmarkSpec(name="X", formats=("vlmevalkit-tsv",), question_type="mcq", suite="accuracy")
    with pytest.raises(ValueError, match="question_types"):
        BenchmarkSpec(name="X", formats=("vlmevalkit-tsv",), question_type="mcq", question_types=("mcq", "open"),
                      suite=SUITES["mcq"])
    with pytest.raises(ValueError, match="unknown format"):
        BenchmarkSpec(name="X", formats=("csv",), question_type="mcq", suite=SUITES["mcq"])
    with pytest.raises(TypeError):  # keyword arguments only past the name: no positional dozen
        BenchmarkSpec("X", ("vlmevalkit-tsv",), SUITES["mcq"])
    assert get_spec("MMBench").question_types == ("mcq",)  # defaulted from question_type
    with pytest.raises(TypeError):
        get_spec("MME").hf_columns["x"] = "y"
    judged = {s.name for s in SPECS if s.judge == "required"}
    assert judged == {"MMVet", "MathVista_MINI", "KIVA", "Spatial457", "custom"}
    assert get_spec("QSpatial").judge == "none" and get_spec("QSpatial").judge_model is None


def test_cli_list_table_and_json():
    runner = CliRunner()
    table = runner.invoke(benchmarks_app, ["list"])
    assert table.exit_code == 0 and "MMBench_DEV_EN" in table.output and "mmbench_circular" in table.output
    raw = runner.invoke(benchmarks_app, ["list", "--format", "json"])
    rows = json.loads(raw.output)
    assert [r["name"] for r in rows] == [s.name for s in SPECS]
    assert rows[0]["hf_columns"]["question_id"] == "image_path"
    assert rows[8]["aliases"] == ["Spatial457_occ", "Spatial457_L5"]
    assert runner.invoke(benchmarks_app, ["list", "--format", "xml"]).exit_code != 0


# ---------------------------------------------------------------- every fixture


@pytest.mark.parametrize("name, file, count, qtypes", CASES, ids=[c[1] for c in CASES])
def test_fixture_loads_through_its_spec(name, file, count, qtypes):
    items = load(file, name)
    assert len(items) == count and len({it.item_id for it in items}) == count
    assert {it.question_type for it in items} == qtypes
    assert qtypes <= set(get_spec(name).question_types)
    assert {it.benchmark for it in items} == {name}
    for it in items:
        assert it.images and it.image_error is None and "load_error" not in it.extra, it.item_id
        assert it.answer and (it.question_type != "mcq" or it.answer in it.options)


def test_every_fixture_file_is_covered():
    data_files = {p.name for p in FIXTURES.glob("*.*")}
    assert data_files == {file for _, file, _, _ in CASES}
    names = {p.stem for p in FIXTURES.glob("*.tsv")}
    assert {get_spec(n).name for n in names} == {s.name for s in SPECS if s.name != "custom"
                                                 and not s.name.startswith("unig2u_")}  # all twelve


# ---------------------------------------------------------------- per benchmark


def test_mme_pairs_share_image_path_and_image():
    for file in ("MME.tsv", "MME.parquet"):
        pairs = defaultdict(list)
        for it in load(file):
            pairs[(it.category, it.extra["image_path"])].append(it)
        assert len(pairs) == 14 and all(len(p) == 2 for p in pairs.values())
        for a, b in pairs.values():
            assert a.image_sha256 == b.image_sha256 and {a.answer, b.answer} == {"Yes", "No"}
    raw = pl.read_csv(FIXTURES / "MME.tsv", separator="\t", infer_schema=False)
    assert raw["image"][1] == "0"  # the pointer the loader resolved
    tsv, hf = load("MME.tsv"), load("MME.parquet")
    assert [it.item_id for it in hf] == [str(i) for i in range(28)]  # synthesised: question_id repeats
    assert same(tsv, hf, "image_path")


def test_hallusionbench_keys_from_the_index_string():
    tsv, hf = load("HallusionBench.tsv"), load("HallusionBench.parquet")
    item = by_id(tsv)["VS_chart_1_0_1_0"]
    assert item.category == "VS" and item.answer == "No"
    assert {k: item.extra[k] for k in ("l2-category", "set_id", "figure_id", "question_id")} == {
        "l2-category": "VS_chart", "set_id": "0", "figure_id": "1", "question_id": "0"}
    pointer = by_id(tsv)["VD_figure_1_0_0_1"]
    assert pointer.image_sha256 == by_id(tsv)["VD_figure_1_0_0_0"].image_sha256
    assert [it.item_id for it in hf] == [it.item_id for it in tsv]  # HF gt_answer 1/0 -> Yes/No, same ids
    assert same(tsv, hf, "l2-category", "set_id", "figure_id", "question_id")
    figures = {(i.extra["l2-category"], i.extra["set_id"], i.extra["figure_id"]) for i in tsv}
    questions = {(i.extra["l2-category"], i.extra["set_id"], i.extra["question_id"]) for i in tsv}
    assert len(figures) == 5 and len(questions) == 5


def test_mmbench_circular_groups_and_rotations():
    items = load("MMBench_DEV_EN.tsv")
    groups = defaultdict(list)
    for it in items:
        groups[it.extra["g_index"]].append(it)
    assert {g: len(v) for g, v in groups.items()} == {"0": 4, "1": 4, "2": 2}
    for members in groups.values():
        first = members[0]
        assert first.item_id == first.extra["g_index"]  # the original comes first
        assert {tuple(sorted(m.options.values())) for m in members} == {tuple(sorted(first.options.values()))}
        assert {m.options[m.answer] for m in members} == {first.options[first.answer]}  # same gold text
        assert len({tuple(m.options.values()) for m in members}) == len(members)  # every copy rotated
        assert {m.image_sha256 for m in members} == {first.image_sha256}  # copies point at the original
    assert by_id(items)["1"].hint == "The scene is bright." and by_id(items)["0"].hint is None


def test_mmstar_and_ai2d_parquet_match_tsv():
    tsv, hf = load("MMStar.tsv"), load("MMStar.parquet")
    assert same(tsv, hf, "l2-category")
    assert hf[0].options["A"] == "red, with a black outline"
    assert hf[0].extra["raw_question"].endswith("D: yellow")
    assert same(load("AI2D_TEST.tsv"), load("AI2D_TEST.parquet"))
    assert load("AI2D_TEST.parquet")[2].options == {"A": "sun", "B": "moon", "C": "earth"}


def test_split_embedded_options():
    assert split_embedded_options("Q?\nOptions: A: x, y, B: z, C: w") == ("Q?", {"A": "x, y", "B": "z", "C": "w"})
    assert split_embedded_options("Q?\nOptions: A:1,B:2") == ("Q?", {"A": "1", "B": "2"})
    assert split_embedded_options("Q? Options: none here") is None
    assert split_embedded_options("No block at all") is None


def test_mmstar_parquet_without_options_block_is_flagged(tmp_path):
    path = tmp_path / "MMStar.parquet"
    src = pq.read_table(FIXTURES / "MMStar.parquet").slice(0, 1).to_pylist()
    src[0]["question"] = "What colour is it?"
    pl.DataFrame(src).write_parquet(path)
    item = load_benchmark_spec("MMStar", str(path))[0]
    assert item.options == {} and "Options" in item.extra["load_error"]


def test_mathvista_types_options_and_extra():
    tsv, hf = load("MathVista_MINI.tsv"), load("MathVista_MINI.parquet")
    keys = ("mathvista_question_type", "answer_type", "answer_option", "answer_text", "precision", "unit",
            "task", "skills")
    assert same(tsv, hf, *keys)
    items = by_id(tsv)
    mc, integer, flt, lst = items["1"], items["2"], items["3"], items["5"]
    assert mc.question_type == "mcq" and mc.answer == "B" and mc.extra["answer_text"] == "square"
    assert mc.options == {"A": "circle", "B": "square", "C": "triangle", "D": "star"}
    assert mc.question.startswith("Hint: ") and hf[0].extra["raw_question"] == "Which shape is blue?"
    assert integer.question_type == "numeric" and integer.answer == "7" and integer.extra["unit"] == "cm"
    assert flt.extra["precision"] == "1.0" and flt.extra["skills"] == ["algebraic reasoning", "arithmetic reasoning"]
    assert lst.question_type == "open" and lst.extra["answer_type"] == "list"
    assert {it.extra["task"] for it in tsv} >= {"figure question answering", "math word problem"}


def test_kiva_relative_paths_first_image_only_and_fallback():
    items = by_id(load("KIVA.tsv"))
    images = FIXTURES / "images"
    assert items["0"].images == ((images / "KIVA" / "trial_000.png").read_bytes(),)
    assert items["1"].images == ((images / "KIVA" / "trial_001.png").read_bytes(),)  # first listed only
    assert items["5"].images == ((images / "KIVA" / "5.png").read_bytes(),)  # <ori_Bench>/<index>.png
    assert items["5"].extra["image_path"] == "KIVA/5.png" and items["1"].extra["image_path"] == "KIVA/trial_001.png"
    assert items["4"].question_type == "yes_no" and items["0"].options == {
        "A": "red to blue", "B": "blue to red", "C": "no change"}
    assert items["0"].extra["ori_Bench"] == "KIVA"


def test_custom_tsv_missing_file_root_override_limit_and_base64(tmp_path):
    rows = [
        {"index": 0, "question": "Q0", "A": "x", "B": "y", "answer": "A", "final_image_path_ori": "['pics/a.png']"},
        {"index": 1, "question": "Q1", "answer": "No", "ori_Bench": "Mine"},
        {"index": 2, "question": "Q2", "answer": "Yes", "image": base64.b64encode(
            (FIXTURES / "images" / "KIVA" / "5.png").read_bytes()).decode()},
    ]
    source = tmp_path / "data" / "Mine.tsv"
    source.parent.mkdir()
    pd.DataFrame(rows).to_csv(source, sep="\t", index=False)
    items = load_benchmark_spec("custom", str(source), benchmark="Mine")
    assert [it.benchmark for it in items] == ["Mine"] * 3
    assert items[0].image_error == "image 0: image file not found: pics/a.png"
    assert items[1].image_error == "image 0: image file not found: Mine/1.jpg or Mine/1.png"
    assert items[2].images and items[2].image_error is None  # VisThink-style base64 cell
    (tmp_path / "elsewhere" / "pics").mkdir(parents=True)
    (tmp_path / "elsewhere" / "pics" / "a.png").write_bytes((FIXTURES / "images" / "KIVA" / "5.png").read_bytes())
    limited = load_benchmark_spec("VisThink", str(source), images_root=str(tmp_path / "elsewhere"), limit=1)
    assert len(limited) == 1 and limited[0].images and limited[0].benchmark == "VisThink"


def test_spatial457_custom_and_hf_layouts(tmp_path):
    items = load("Spatial457_occ.tsv")
    assert items[0].images == ((FIXTURES / "images" / "Spatial457" / "100.png").read_bytes(),)
    assert [it.answer for it in items][:3] == ["Yes", "2", "sphere"]
    png = items[0].images[0]
    path = tmp_path / "l5.parquet"
    pl.DataFrame({"image": [{"bytes": png, "path": None}], "image_filename": ["superCLEVR_new_000001.png"],
                  "question": ["Is there a car?"], "answer": ["yes"], "question_index": [7],
                  "program": [["scene", "exist"]]}).write_parquet(path)
    hf = load_benchmark_spec("Spatial457_L5", str(path))[0]
    assert (hf.item_id, hf.answer, hf.question_type, hf.benchmark) == ("7", "Yes", "yes_no", "Spatial457_L5")
    assert hf.extra["image_path"] == "superCLEVR_new_000001.png" and hf.images == (png,)


def test_qspatial_answer_value_and_unit(tmp_path):
    tsv, hf = load("QSpatial_plus.tsv"), load("QSpatial_plus.parquet")
    assert same(tsv, hf, "answer_value", "answer_unit", "qspatial_question_type", "image_path")
    assert (tsv[4].answer, tsv[4].extra["answer_unit"]) == ("40.0", "inches")
    # a dump without the value/unit columns: parsed from answer "(value, 'unit')", never eval'ed
    frame = pd.read_csv(FIXTURES / "QSpatial_plus.tsv", sep="\t", dtype=str)
    frame.drop(columns=["answer_value", "answer_unit"]).to_csv(tmp_path / "q.tsv", sep="\t", index=False)
    parsed = load_benchmark_spec("QSpatial_scannet", str(tmp_path / "q.tsv"))
    assert [(it.answer, it.extra["answer_unit"]) for it in parsed] == [
        (it.answer, it.extra["answer_unit"]) for it in tsv]


def test_pope_categories():
    tsv, hf = load("POPE.tsv"), load("POPE.parquet")
    assert [it.category for it in tsv] == ["adversarial", "adversarial", "popular", "popular,random", "random",
                                           "random"]
    assert [it.category for it in hf].count("random") == 3 and {it.answer for it in hf} == {"Yes", "No"}
    assert hf[3].extra["question_id"] == hf[4].extra["question_id"] == "4"


def test_mmmu_multi_image_tags_and_open_question(tmp_path):
    tsv, hf = load("MMMU_DEV_VAL.tsv"), load("MMMU_DEV_VAL.parquet")
    assert [len(it.images) for it in tsv] == [len(it.images) for it in hf] == [1, 2, 1, 3]
    assert [it.images for it in tsv] == [it.images for it in hf]
    assert [it.extra["split"] for it in hf] == [it.extra["split"] for it in tsv] == [
        "validation", "validation", "dev", "validation"]
    assert [it.category for it in hf] == ["Art", "Math", "Physics", "Art_Theory"]
    open_q = tsv[2]
    assert open_q.options == {} and open_q.answer == "12.5" and hf[2].extra["mmmu_question_type"] == "open"
    frame = pd.read_csv(FIXTURES / "MMMU_DEV_VAL.tsv", sep="\t", dtype=str).head(1)
    frame.loc[0, "question"] = "Compare <image 1> with <image 2>."
    frame.to_csv(tmp_path / "m.tsv", sep="\t", index=False)
    bad = load_benchmark_spec("MMMU", str(tmp_path / "m.tsv"))[0]
    assert bad.extra["load_error"] == "<image 2> but only 1 image(s)"


def test_format_choice():
    with pytest.raises(ValueError, match="format 'hf-parquet' not supported"):
        load_benchmark_spec("KIVA", str(FIXTURES / "KIVA.tsv"), format="hf-parquet")
    items = load_benchmark_spec("mmvet", str(FIXTURES / "MMVet.tsv"), format="vlmevalkit-tsv", limit=2)
    assert [it.benchmark for it in items] == ["MMVet", "MMVet"]


def test_generic_loader_prepare_rows_hook(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"qid": "a", "text": "Q?", "gold": "yes"}) + "\n")

    def prepare(rows):
        return [{"index": r["qid"], "question": r["text"], "answer": r["gold"], "note": "x"} for r in rows]

    item = load_benchmark("T", str(path), prepare_rows=prepare)[0]
    assert (item.item_id, item.question, item.answer, item.extra) == ("a", "Q?", "Yes", {"note": "x"})


# ---------------------------------------------------------------- predictions and the fixture script


@pytest.mark.parametrize("tsv", sorted(p.name for p in FIXTURES.glob("*.tsv")))
def test_prediction_files_follow_the_data(tsv):
    data = pd.read_csv(FIXTURES / tsv, sep="\t", dtype=str, keep_default_na=False)
    preds = pd.read_csv(FIXTURES / "predictions" / tsv, sep="\t", dtype=str, keep_default_na=False)
    assert "image" not in preds.columns and list(preds["index"]) == list(data["index"])
    assert [c for c in data.columns if c != "image"] == list(preds.columns[: len(data.columns) - ("image" in data)])
    assert {"prediction", "expected_extracted", "expected_hit", "note"} <= set(preds.columns)
    assert set(preds["expected_hit"]) <= {"0", "1"} and (preds["prediction"] != "").all()
    assert 0 < (preds["expected_hit"] == "1").sum() < len(preds)  # some right, some wrong


def test_fixture_script_reproduces_committed_files(tmp_path):
    assert_script_reproduces(REPO / "scripts" / "make_fixtures.py", FIXTURES, tmp_path,
                             skip=("unig2u",))  # made by scripts/make_unig2u_fixtures.py
    assert sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file()) < 1_500_000
