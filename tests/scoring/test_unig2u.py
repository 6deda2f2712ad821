"""lmms-eval UniG2U sub-tasks: fixtures in their Parquet layout load, score by each sub-task's rules, and
the metrics equal the hand derivation in docs/SCORING.md (lmms-eval's own per-metric fields in the
sample logs agree item by item)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from g2u_tasks.benchmarks.adapters import load_benchmark_spec
from g2u_tasks.benchmarks.table import get_spec
from g2u_tasks.scoring.evaluate import evaluate_predictions, score_predictions
from g2u_tasks.scoring.extraction import (unig2u_mmsi_letter, unig2u_relaxed,
                                          unig2u_visualpuzzles_letter)
from g2u_tasks.thoughts.families import load_family
from tests.benchmarks.fixture_files import assert_script_reproduces

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "fixtures" / "benchmarks" / "unig2u"
FAMILIES = ROOT / "g2u_tasks" / "benchmarks" / "unig2u_families"
SUBTASKS = {  # task -> (data file, hand-derived metrics: docs/SCORING.md "UniG2U")
    "unig2u_chartqa100": ("chartqa100/chartqa100.parquet",
                          {"relaxed_overall": (5 / 7, 7), "relaxed_human_split": (1.0, 3),
                           "relaxed_augmented_split": (0.5, 4)}),
    "unig2u_mmsi_attribute_appr": ("mmsi_bench/attribute_appr.parquet", {"Attribute (Appr.)": (0.6, 5)}),
    "unig2u_VisualPuzzles_algorithmic": ("visualpuzzles/algorithmic.parquet", {"accuracy": (0.6, 5)}),
}


def samples(task: str) -> Path:
    return DATA / "samples" / f"20260101_000000_samples_{task}.jsonl"


def logged_score(task: str, rec: dict) -> float:
    """The verdict lmms-eval logged for one doc, from the sub-task's per-metric field."""
    if task == "unig2u_chartqa100":
        return rec["relaxed_overall"]
    if task == "unig2u_mmsi_attribute_appr":
        return rec["average"]["score"]
    return rec["accuracy"]


@pytest.mark.parametrize("task", SUBTASKS)
def test_metrics_equal_the_hand_derivation(task):
    data, expected = SUBTASKS[task]
    records = evaluate_predictions(task, str(samples(task)), str(DATA / data))
    got = {r["metric"]: (r["value"], r["n"]) for r in records if r["metric"] not in ("judge_fallback", "coverage")}
    assert got.keys() == expected.keys()
    for metric, (value, n) in expected.items():
        assert got[metric][0] == pytest.approx(value) and got[metric][1] == n, metric
    assert all(r["status"] == "ok" for r in records)


@pytest.mark.parametrize("task", SUBTASKS)
def test_verdicts_equal_the_logged_per_metric_fields(task):
    data, _ = SUBTASKS[task]
    frame = score_predictions(task, str(samples(task)), str(DATA / data))
    logged = {str(r["doc_id"]): logged_score(task, r)
              for r in map(json.loads, samples(task).read_text().splitlines())}
    assert {i: float(h) for i, h in zip(frame["item_id"], frame["hit"])} == logged


def test_the_two_stage_task_name_scores_the_same_way():
    data, expected = SUBTASKS["unig2u_chartqa100"]
    records = evaluate_predictions("unig2u_chartqa100_visual_cot", str(samples("unig2u_chartqa100")), str(DATA / data))
    assert {r["metric"] for r in records} >= set(expected)


def test_items_follow_lmms_eval_layout():
    chart = load_benchmark_spec("unig2u_chartqa100", str(DATA / "chartqa100/chartqa100.parquet"))
    assert [i.item_id for i in chart] == [str(k) for k in range(7)]  # doc_id = row position
    assert chart[0].question == chart[0].extra["raw_question"] + "\nAnswer the question with a single word."
    assert chart[0].category == "human_test" and all(i.images and not i.image_error for i in chart)
    mmsi = load_benchmark_spec("unig2u_mmsi_attribute_appr", str(DATA / "mmsi_bench/attribute_appr.parquet"))
    assert len(mmsi[0].images) == 2 and mmsi[0].category == "Attribute (Appr.)"
    assert mmsi[0].extra["source_id"] == "500" and mmsi[0].question.endswith("Enclose the option's letter within ``.")
    puzzles = load_benchmark_spec("unig2u_VisualPuzzles_algorithmic", str(DATA / "visualpuzzles/algorithmic.parquet"))
    assert "\n(A) 3\n(B) 5\n(C) 7\n(D) 9\n" in puzzles[0].question and puzzles[0].options == {}
    assert "Options: Choose from (A) (B) (C) (D) in the image." in puzzles[2].question


def test_fixtures_decode_as_lmms_eval_reads_them():
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("parquet", data_files=str(DATA / "mmsi_bench/attribute_appr.parquet"), split="train")
    doc = ds[0]
    assert doc["images"][0].convert("RGB").size == (48, 48) and doc["question_type"] == "Attribute (Appr.)"


def test_each_subtask_has_its_generation_prompt_family():
    for spec_name in ("unig2u_chartqa100", "unig2u_mmsi_attribute_appr", "unig2u_mmsi_attribute_meas",
                      "unig2u_mmsi_motion_cam", "unig2u_mmsi_motion_obj", "unig2u_mmsi_msr",
                      "unig2u_VisualPuzzles_algorithmic"):
        assert f"edit family {spec_name}" in get_spec(spec_name).notes
        assert load_family(spec_name, FAMILIES).name == spec_name
    item = load_benchmark_spec("unig2u_VisualPuzzles_algorithmic", str(DATA / "visualpuzzles/algorithmic.parquet"))[0]
    prompt = load_family("unig2u_VisualPuzzles_algorithmic", FAMILIES).render(item)
    assert item.question in prompt  # the item-specific part is in the rendered prompt, so in the thought key
    chart = load_family("unig2u_chartqa100", FAMILIES)
    assert "\n" not in chart.template and chart.template.startswith("Based on this chart")


@pytest.mark.parametrize("pred, gold, hit", [
    ("12.6", "12", True), ("12.7", "12", False), ("5%", "0.05", True), ("-0", "0", False), ("0", "0", True),
    ("YES", "yes", True), (" yes", "yes", False), ("1e3", "1000", True), ("nan", "5", False),
])
def test_relaxed_accuracy(pred, gold, hit):
    assert unig2u_relaxed(pred, gold) is hit


@pytest.mark.parametrize("pred, letter", [
    ("``B`` then `C`", "B"), ("{D}", "D"), ("A cat. B", "B"), ("(C)", "C"), ("a b c", None), ("AB", None),
])
def test_mmsi_letter(pred, letter):
    assert unig2u_mmsi_letter(pred) == letter


@pytest.mark.parametrize("pred, choices, letter", [
    ("Answer: (a) then Answer: (B)", None, "B"), ("Answer: E", None, None), ("$C$", None, "C"),
    (" x D.", None, "D"), ("answer: blue", ["red", "blue", "green", "cyan"], "B"), ("no idea", ["x1", "x2", "x3", "x4"], None),
])
def test_visualpuzzles_letter(pred, choices, letter):
    assert unig2u_visualpuzzles_letter(pred, choices) == letter


def test_fixture_script_reproduces_committed_files(tmp_path):
    assert_script_reproduces(ROOT / "scripts" / "make_unig2u_fixtures.py", DATA, tmp_path)


def test_real_lmms_eval_logs_need_data_and_bad_lines_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="pass the benchmark data"):
        evaluate_predictions("unig2u_chartqa100", str(samples("unig2u_chartqa100")))  # no `doc` since 0.4
    bad = tmp_path / "x_samples_unig2u_chartqa100.jsonl"
    bad.write_text('{"doc_id": 0, "filtered_resps": "1"}\nnot json\n')
    with pytest.raises(ValueError, match=r"x_samples_unig2u_chartqa100.jsonl: line 2 is not JSON"):
        evaluate_predictions("unig2u_chartqa100", str(bad), str(DATA / "chartqa100/chartqa100.parquet"))
    nested = tmp_path / "n_samples_unig2u_chartqa100.jsonl"
    nested.write_text('{"doc_id": 0, "resps": [["42"]]}\n')  # several requests per doc: the first reply
    recs = evaluate_predictions("unig2u_chartqa100", str(nested), str(DATA / "chartqa100/chartqa100.parquet"))
    overall = next(r for r in recs if r["metric"] == "relaxed_overall")
    assert overall["value"] == 1.0 and overall["status"] == "partial"  # 1 of 7 docs logged
