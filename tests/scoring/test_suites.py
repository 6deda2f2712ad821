"""Metric suites on small frames; every expected value is worked out by hand in the comments."""
import json

import polars as pl
import pytest

from g2u_tasks.scoring.suites import SUITES, get_suite
from g2u_tasks.scoring.score import FRAME_SCHEMA
from g2u_tasks.scoring.extraction import extract

OPTS = {"A": "red circle", "B": "blue square", "C": "green triangle", "D": "yellow star"}


def frame(rows: list[dict], benchmark: str = "X") -> pl.DataFrame:
    """Rows with defaults for the columns a test does not care about."""
    full = []
    for i, r in enumerate(rows):
        full.append({"benchmark": benchmark, "item_id": str(r.get("item_id", i)), "question": "q",
                     "answer": r.get("answer"), "options": json.dumps(r.get("options", {})),
                     "category": r.get("category"), "question_type": r.get("question_type", "mcq"),
                     "extra": json.dumps(r.get("extra", {})), "prediction": r.get("prediction", ""),
                     "extracted": r.get("extracted"), "hit": r.get("hit"), "judged": r.get("judged", False),
                     "score": r.get("score")})
    return pl.DataFrame(full, schema=FRAME_SCHEMA)


def values(records: list[dict]) -> dict[str, float | None]:
    return {r["metric"]: r["value"] for r in records}


def by_metric(records: list[dict]) -> dict[str, dict]:
    return {r["metric"]: r for r in records}


def compute(suite: str, scored: pl.DataFrame) -> list[dict]:
    """The suite's aggregation over already-scored rows."""
    return get_suite(suite).aggregate(scored)


# ---- extraction edge cases under both rule sets  ----

@pytest.mark.parametrize(
    "pred, qtype, vlmevalkit, authors",
    [
        ("The answer is B.", "mcq", "B", "B"),  # letter late: both
        ("B. The red cube on the left side of the image is the largest", "mcq", None, "B"),  # letter early
        ("B. so B", "mcq", "B", None),  # VLMEvalKit counts distinct letters; the authors count tokens
        ("the answer is b", "mcq", None, None),  # lower-case letters never count
        ("A or B", "mcq", None, None),  # two letters
        ("I think B", "mcq", "B", None),  # 'I' is not an option (VLMEvalKit) but is a capital (authors)
        ("It is a blue square", "mcq", "B", None),  # option text only: VLMEvalKit's text fallback
        ("A cat is on the mat", "mcq", None, None),  # early A (VLMEvalKit); article A (authors)
        ("(C)", "mcq", "C", "C"),
        ("'C'", "mcq", None, "C"),  # apostrophes: kept by VLMEvalKit, blanked by the authors
        ("Cannot determine the answer", "mcq", "Z", "Z"),  # refusal
        ("Failed to obtain answer via API", "mcq", None, "Z"),
        ("Yes, there is no dog", "yes_no", None, None),  # both words: Unknown
        ("**Yes**", "yes_no", None, "Yes"),  # bold: VLMEvalKit keeps asterisks
        ("yes:", "yes_no", None, "Yes"),  # VLMEvalKit keeps colons
        ("No.", "yes_no", "No", "No"),
        ("NO!", "yes_no", "No", "No"),
        ("I'm sorry, but without the image provided I can't say", "yes_no", None, "Z"),  # refusal (authors only)
    ],
)
def test_extraction_both_rule_sets(pred, qtype, vlmevalkit, authors):
    opts = OPTS if qtype == "mcq" else {}
    assert extract("vlmevalkit", pred, opts, qtype) == vlmevalkit
    assert extract("authors", pred, opts, qtype) == authors


def test_all_suites_registered():
    assert set(SUITES) == {"mme", "hallusionbench", "mmvet", "mcq", "mmbench_circular", "mathvista",
                           "kiva", "spatial457", "qspatial", "pope", "mmmu", "unig2u_chartqa", "unig2u_visualpuzzles",
                           *(f"unig2u_mmsi_{t}" for t in ("attribute_appr", "attribute_meas", "motion_cam",
                                                          "motion_obj", "msr"))}
    assert all(s.aggregate is not None and s.item_scorer is not None for s in SUITES.values())
    with pytest.raises(ValueError, match="unknown scoring suite"):
        get_suite("nope")


# ---- MME ----

PERCEPTION = ["OCR", "artwork", "celebrity", "color", "count", "existence", "landmark", "position", "posters",
              "scene"]
REASONING = ["code_reasoning", "commonsense_reasoning", "numerical_calculation", "text_translation"]


def _mme_rows(overrides: dict[str, list[list[bool]]]) -> list[dict]:
    rows = []
    for cat in PERCEPTION + REASONING:
        for img, hits in enumerate(overrides.get(cat, [[True, True]])):
            rows += [{"category": cat, "hit": h, "extra": {"image_path": f"{cat}/{img}.jpg"}} for h in hits]
    return rows


def test_mme_scores():
    rows = _mme_rows({"OCR": [[True, False]], "artwork": [[True, True], [True, False]],
                      "code_reasoning": [[False, False]]})
    out = by_metric(compute("mme", frame(rows, "MME")))
    # OCR: acc = 1/2 = 50, acc+ = 0/1 images = 0 -> 50
    assert out["OCR"]["value"] == pytest.approx(50.0)
    assert out["acc/OCR"]["value"] == pytest.approx(50.0) and out["acc+/OCR"]["value"] == pytest.approx(0.0)
    # artwork: acc = 3/4 = 75, acc+ = 1/2 images = 50 -> 125
    assert out["artwork"]["value"] == pytest.approx(125.0)
    assert out["artwork"]["unit"] == "sum" and out["acc/artwork"]["unit"] == "x100"
    # perception = 50 + 125 + 8 * 200 = 1775; reasoning = 0 + 3 * 200 = 600
    assert out["perception"]["value"] == pytest.approx(1775.0)
    assert out["reasoning"]["value"] == pytest.approx(600.0)
    assert out["cognition"]["value"] == pytest.approx(600.0)
    assert out["perception"]["n"] == 22  # 10 categories x 2 questions + 1 extra artwork image


def test_mme_missing_category_not_computed():
    rows = [r for r in _mme_rows({}) if r["category"] != "scene"]
    out = by_metric(compute("mme", frame(rows, "MME")))
    assert out["perception"]["status"] == "not_computed" and out["perception"]["value"] is None
    assert "scene" in out["perception"]["note"]
    assert out["reasoning"]["value"] == pytest.approx(800.0)


# ---- HallusionBench ----

def _hb(l2: str, set_id: int, fig: int, q: int, hit: bool) -> dict:
    # index fields 4-6 (split positions 3, 4, 5) are set_id, figure_id, question_id
    return {"item_id": f"{l2}_x_{set_id}_{fig}_{q}", "category": l2[:2], "hit": hit, "extra": {"l2-category": l2}}


def test_hallusionbench():
    rows = [_hb("VD_figure", 1, 0, 0, True), _hb("VD_figure", 1, 0, 1, False), _hb("VD_figure", 1, 1, 0, True),
            _hb("VD_figure", 1, 1, 1, True), _hb("VS_chart", 2, 0, 0, True), _hb("VS_chart", 2, 0, 1, True)]
    out = values(compute("hallusionbench", frame(rows, "HallusionBench")))
    assert out["aAcc"] == pytest.approx(500 / 6)  # 5 of 6 right
    # figures: VD_figure_1_0 [T,F] -> 0, VD_figure_1_1 [T,T] -> 1, VS_chart_2_0 [T,T] -> 1: 2/3
    assert out["fAcc"] == pytest.approx(200 / 3)
    # questions: VD_figure_1_0 [T,T] -> 1, VD_figure_1_1 [F,T] -> 0, VS_chart_2_0 -> 1, VS_chart_2_1 -> 1: 3/4
    assert out["qAcc"] == pytest.approx(75.0)
    assert out["mean_aAcc_fAcc_qAcc"] == pytest.approx((500 / 6 + 200 / 3 + 75) / 3)  # = 75
    # category VD: aAcc 3/4, fAcc 1/2, qAcc 1/2
    assert (out["aAcc/VD"], out["fAcc/VD"], out["qAcc/VD"]) == pytest.approx((75.0, 50.0, 50.0))
    assert (out["aAcc/VS_chart"], out["fAcc/VS_chart"], out["qAcc/VS_chart"]) == pytest.approx((100, 100, 100))


# ---- MCQ report_acc, MMMU splits, circular ----

def test_mcq_report_acc():
    rows = [{"category": "c1", "hit": True, "extra": {"l2-category": "coarse_perception"}},
            {"category": "c1", "hit": False, "extra": {"l2-category": "coarse_perception"}},
            {"category": "c2", "hit": True, "extra": {"l2-category": "logic_reasoning"}},
            {"category": "c2", "hit": True, "extra": {"l2-category": "logic_reasoning"}}]
    out = by_metric(compute("mcq", frame(rows, "MMStar")))
    assert out["Overall"]["value"] == 0.75 and out["Overall"]["unit"] == "fraction"  # 3/4
    assert out["CP"]["value"] == 0.5 and out["LR"]["value"] == 1.0  # MMBench abbreviations
    assert out["c1"]["value"] == 0.5 and out["c2"]["value"] == 1.0
    assert out["Overall"]["n"] == 4


def test_mcq_unresolved_item_is_not_computed():
    rows = [{"category": "c1", "hit": True}, {"category": "c2", "hit": None}]
    out = by_metric(compute("kiva", frame(rows, "KIVA")))
    assert out["Overall"]["status"] == "not_computed" and out["Overall"]["value"] is None
    assert "1 of 2" in out["Overall"]["note"]
    assert out["c1"]["value"] == 1.0  # a group without unresolved items is still computed
    assert compute("spatial457", frame(rows))[0]["value"] is None


def test_mmmu_split_aware():
    rows = [{"category": "Art", "hit": True, "extra": {"split": "dev"}},
            {"category": "Art", "hit": False, "extra": {"split": "dev"}},
            {"category": "Math", "hit": True, "extra": {"split": "validation"}}]
    out = values(compute("mmmu", frame(rows, "MMMU_DEV_VAL")))
    assert out["Overall/dev"] == 0.5 and out["Overall/validation"] == 1.0  # 1/2 and 1/1
    assert out["Art/dev"] == 0.5 and out["Math/validation"] == 1.0
    assert out["Art/validation"] is None  # no Art item in validation (NaN upstream)


def _circ(index: int, hit, category="c1") -> dict:
    return {"item_id": str(index), "category": category, "hit": hit, "extra": {"l2-category": "coarse_perception"}}


def test_mmbench_circular():
    rows = [_circ(1, True), _circ(1_000_001, True), _circ(2_000_001, True),  # group 1: all right -> 1
            _circ(2, True, "c2"), _circ(1_000_002, False, "c2")]  # group 2: one rotation wrong -> 0
    out = by_metric(compute("mmbench_circular", frame(rows, "MMBench_DEV_EN")))
    assert out["Overall"]["value"] == 0.5 and out["Overall"]["n"] == 2  # 2 groups, 1 right
    assert out["c1"]["value"] == 1.0 and out["c2"]["value"] == 0.0 and out["CP"]["value"] == 0.5


def test_mmbench_circular_unresolved():
    # group 3: a wrong rotation settles it at 0 even with an unresolved one; group 4 stays unresolved
    rows = [_circ(3, False), _circ(1_000_003, None), _circ(4, True), _circ(1_000_004, None)]
    out = by_metric(compute("mmbench_circular", frame(rows)))
    assert out["Overall"]["status"] == "not_computed"
    assert "1 of 2" in out["Overall"]["note"]


# ---- POPE ----

def test_pope():
    rows = [{"answer": "Yes", "extracted": "Yes", "hit": True, "category": "adversarial"},  # TP
            {"answer": "Yes", "extracted": "No", "hit": False, "category": "adversarial"},  # FN
            {"answer": "No", "extracted": "Yes", "hit": False, "category": "popular"},  # FP
            {"answer": "No", "extracted": "No", "hit": True, "category": "popular,random"}]  # TN, counted twice
    out = values(compute("pope", frame(rows, "POPE")))
    # Overall over 5 exploded rows (TP FN FP TN TN): precision 1/2, recall 1/2, F1 1/2
    assert out["F1"] == pytest.approx(50.0) and out["precision"] == pytest.approx(50.0)
    assert out["recall"] == pytest.approx(50.0)
    assert out["acc"] == pytest.approx(60.0)  # 3 of 5 exploded rows right
    assert out["yes_ratio"] == pytest.approx(40.0)  # 2 of 5 say Yes
    # adversarial: precision 1/1, recall 1/2, F1 = 2 * 0.5 / 1.5
    assert out["F1/adversarial"] == pytest.approx(200 / 3) and out["acc/adversarial"] == pytest.approx(50.0)
    assert out["F1/popular"] == 0.0 and out["precision/popular"] == 0.0  # no true positive
    assert out["acc/random"] == pytest.approx(100.0) and out["recall/random"] == 0.0


# ---- MathVista ----

def test_mathvista():
    fqa, mwp = "figure question answering", "math word problem"
    rows = [{"hit": True, "extracted": "14", "extra": {"task": fqa, "skills": "['arithmetic reasoning']"}},
            {"hit": False, "extracted": "3", "judged": True,
             "extra": {"task": fqa, "skills": ["arithmetic reasoning", "statistical reasoning"]}},
            {"hit": True, "extracted": "B", "judged": True,
             "extra": {"task": mwp, "skills": "['arithmetic reasoning']"}}]
    out = values(compute("mathvista", frame(rows, "MathVista_MINI")))
    assert out["Overall"] == pytest.approx(200 / 3)  # 2 of 3
    assert out[fqa] == pytest.approx(50.0) and out[mwp] == pytest.approx(100.0)
    assert out["arithmetic reasoning"] == pytest.approx(200 / 3) and out["statistical reasoning"] == 0.0
    assert out["prefetch_rate"] == pytest.approx(100 / 3)  # only row 1 was settled without the judge


def test_mathvista_needs_judge():
    rows = [{"hit": True, "extracted": "14", "extra": {"task": "t1", "skills": "['s1']"}},
            {"hit": None, "extracted": None, "extra": {"task": "t2", "skills": "['s2']"}}]
    out = by_metric(compute("mathvista", frame(rows)))
    assert out["Overall"]["status"] == "not_computed" and out["Overall"]["value"] is None
    assert out["t1"]["value"] == 100.0 and out["t2"]["value"] is None


# ---- MM-Vet ----

def test_mmvet_scores_and_double_count_quirk():
    rows = [{"category": "rec", "score": 1.0, "hit": True, "judged": True},
            {"category": "rec,ocr", "score": 0.5, "hit": False, "judged": True},
            {"category": "ocr", "score": 0.0, "hit": False, "judged": True}]
    out = by_metric(compute("mmvet", frame(rows, "MMVet")))
    assert out["Overall"]["value"] == pytest.approx(50.0)  # (1 + 0.5 + 0) / 3
    # rec: items with 'rec' (1.0, 0.5) plus item 1 again (its category is exactly 'rec'): 2.5 / 3
    assert out["rec"]["value"] == pytest.approx(250 / 3) and out["rec"]["n"] == 3
    # ocr: (0.5 + 0.0) plus item 3 again (0.0): 0.5 / 3
    assert out["ocr"]["value"] == pytest.approx(50 / 3)
    assert out["rec_ocr"]["value"] == pytest.approx(50.0)  # the capability combination
    assert out["math"]["status"] == "not_computed"  # no item


def test_mmvet_without_judge_is_not_computed():
    rows = [{"category": "rec", "hit": None}, {"category": "ocr", "hit": None}]
    out = compute("mmvet", frame(rows, "MMVet"))
    assert {r["status"] for r in out} == {"not_computed"}
    assert all(r["value"] is None for r in out)  # never 0
    assert by_metric(out)["Overall"]["n"] == 2


# ---- Q-Spatial ----

def test_qspatial():
    rows = [{"extracted": "140.0", "extra": {"answer_value": "1", "answer_unit": "meters", "question_type": "dist"}},
            {"extracted": "250.0", "extra": {"answer_value": "100", "answer_unit": "cm", "question_type": "dist"}},
            {"extracted": "30.48", "extra": {"answer_value": "0.5", "answer_unit": "m", "question_type": "size"}},
            {"extracted": None, "answer": "(1, 'meters')", "extra": {"question_type": "size"}}]
    out = by_metric(compute("qspatial", frame(rows, "QSpatial_plus")))
    # ratios: 1.4, 2.5, 50/30.48 = 1.64, huge (parse failure = 1e-8 cm)
    assert out["delta_2"]["value"] == 0.5  # 1.4 and 1.64
    assert out["delta_1_point_5"]["value"] == 0.25  # 1.4 only
    assert out["dist_delta_2"]["value"] == 0.5 and out["size_delta_2"]["value"] == 0.5
    assert out["dist_delta_1_point_5"]["value"] == 0.5 and out["size_delta_1_point_5"]["value"] == 0.0
    assert out["parse_errors"]["n"] == 1 and out["delta_2"]["unit"] == "fraction"
