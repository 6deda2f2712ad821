"""The LLM judge against a local fake endpoint, and `evaluate_predictions` on files built here."""
import json
from pathlib import Path

import pandas as pd
import polars as pl
import pytest

from g2u_tasks.scoring import evaluate as E
from g2u_tasks.scoring import judge as J
from g2u_tasks.scoring.suites import SUITES
from g2u_tasks.records import Item
from tests.loopback_chat import ChatServer


class FakeJudge(ChatServer):
    """A deterministic judge endpoint; records every request with its prompt.

    `reply(prompt, body)` returns the message text, or an int for an HTTP error status."""

    def __init__(self):
        super().__init__()
        self.reply = lambda prompt, body: "A"

    def handle(self, body: dict, auth: str | None) -> str | int:
        prompt = body["messages"][0]["content"][0]["text"]
        self.requests.append({**body, "prompt": prompt, "auth": auth})
        return self.reply(prompt, body)

    def spec(self, model: str | None = None) -> J.JudgeSpec:
        return J.JudgeSpec(base_url=self.base_url, model=model, max_retries=0, backoff_s=0.0, concurrency=2)

    def graded(self) -> list[dict]:
        return [r for r in self.requests if r["prompt"] != "hello"]  # without the working() probe


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    server = FakeJudge()
    yield server
    server.close()


# ---- judge procedures ----

def test_mmvet_retries_until_a_float_in_range(fake):
    answers = iter(["great", "1.7", "0.7"])  # unparsable, out of range, ok
    fake.reply = lambda prompt, body: next(answers)
    judge = J.Judge(fake.spec(), SUITES["mmvet"].judge_model)
    grade, log = J.judge_mmvet(judge, "What is x?", "-1 <AND> -5", "x = -1")
    assert grade == 0.7 and log == "Succeed"
    assert [r["temperature"] for r in fake.requests] == [0.0, 0.5, 1.0]
    assert {r["max_tokens"] for r in fake.requests} == {3}
    assert fake.requests[0]["model"] == "gpt-4-1106-preview"  # the reference default for MM-Vet
    assert fake.requests[0]["prompt"].endswith("What is x? | -1  <AND>  -5 | x = -1 | ")
    assert fake.requests[0]["auth"] == "Bearer sk-test-key"  # key from the environment only
    judge.close()


def test_mmvet_five_failures_score_zero(fake):
    fake.reply = lambda prompt, body: "n/a"
    judge = J.Judge(fake.spec("my-judge"), SUITES["mmvet"].judge_model)
    grade, log = J.judge_mmvet(judge, "q", "a", "p")
    assert grade == 0.0 and "All 5 retries failed" in log
    assert [r["temperature"] for r in fake.requests] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert {r["model"] for r in fake.requests} == {"my-judge"}
    judge.close()


def test_mcq_judge_three_tries_then_seeded_random(fake):
    fake.reply = lambda prompt, body: "I cannot say"
    judge = J.Judge(fake.spec(), SUITES["mcq"].judge_model)
    opts = {"A": "cat", "B": "dog"}
    first = J.judge_option(judge, "What animal", opts, "a pet", "item-7")
    again = J.judge_option(judge, "What animal", opts, "a pet", "item-7")
    assert len(fake.requests) == 6  # 3 tries each
    assert first == again and first[0] in ("A", "B", "Z")  # seeded by the item id
    prompt = fake.requests[0]["prompt"]
    assert "Question: What animal?\nOptions: There are several options: \nA. cat\nB. dog\n\nAnswer: a pet" in prompt
    assert fake.requests[0]["model"] == "gpt-3.5-turbo-0125" and fake.requests[0]["max_tokens"] == 2048
    fake.reply = lambda prompt, body: "The answer is B"
    assert J.judge_option(judge, "What animal", opts, "a pet", "x")[0] == "B"
    judge.close()


def test_yes_no_judge_up_to_five_calls(fake):
    replies = iter(["Unknown", "maybe", "No."])
    fake.reply = lambda prompt, body: next(replies)
    judge = J.Judge(fake.spec(), SUITES["mme"].judge_model)
    assert J.judge_yes_no(judge, "Is it red", "hard to tell") == "No"
    assert [r["temperature"] for r in fake.requests] == [0.0, 0.5, 1.0]
    fake.reply = lambda prompt, body: "Unknown"
    assert J.judge_yes_no(judge, "Is it red", "hard to tell") == "Unknown"
    assert len(fake.requests) == 3 + 5
    judge.close()


def test_mathvista_judge_retries_api_failures(fake):
    replies = iter([500, 500, "14"])  # HTTP errors become VLMEvalKit's failure message, then a retry
    fake.reply = lambda prompt, body: next(replies)
    judge = J.Judge(fake.spec(), SUITES["mathvista"].judge_model)
    assert J.judge_mathvista(judge, "Which number is missing?", "It is 14") == "14"
    assert [r["temperature"] for r in fake.requests] == [0.0, 0.5, 1.0]
    assert {r["max_tokens"] for r in fake.requests} == {128}
    assert fake.requests[0]["model"] == "gpt-4o-mini-2024-07-18"
    assert fake.requests[0]["prompt"].endswith("Which number is missing?\nModel respone: It is 14Extracted answer:")
    judge.close()


def test_authors_judges(fake):
    judge = J.Judge(fake.spec(), SUITES["spatial457"].judge_model)
    fake.reply = lambda prompt, body: "<result>\n1\n</result>\n<think>fine</think>"
    assert J.judge_authors_verdict(judge, "q", "p", "a") == (True, "Succeed")
    fake.reply = lambda prompt, body: "looks right to me"
    assert J.judge_authors_verdict(judge, "q", "p", "a")[0] is False  # no tag -> 0
    fake.reply = lambda prompt, body: "<result>maybe</result>"
    assert J.judge_authors_verdict(judge, "q", "p", "a")[0] is False  # non-integer -> 0 (upstream crashes)
    assert len(fake.requests) == 3  # one call per item
    assert "[Ground Truth]: a\n    [Prediction]: p" in fake.requests[0]["prompt"]
    fake.reply = lambda prompt, body: "hard to say"  # 3 tries, then the fixed 'A'
    assert J.judge_authors_option(judge, "q", "p") == "A"
    assert len(fake.requests) == 6
    fake.reply = lambda prompt, body: "**Yes**"
    assert J.judge_authors_option(judge, "q", "p") == "Yes"
    judge.close()


# ---- evaluate_predictions on VLMEvalKit-style files ----

def _mcq_table() -> pd.DataFrame:
    return pd.DataFrame({
        "index": [1, 2, 3, 4],
        "Question": ["Color?", "Shape?", "Count?", "Size?"],  # upper-case names are lower-cased on read
        "A": ["red", "circle", "one", "big"], "B": ["blue", "square", "two", "small"],
        "answer": ["A", "B", "B", "A"],
        "category": ["c1", "c1", "c2", "c2"],
        "L2-Category": ["coarse_perception"] * 4,
        "Prediction": ["The answer is A.", "B", "It is hard to tell from this picture.", "I pick B"],
    })


def test_evaluate_mcq_xlsx_without_judge(tmp_path):
    path = tmp_path / "model_MMStar.xlsx"
    _mcq_table().to_excel(path, index=False)
    out = {r["metric"]: r for r in E.evaluate_predictions("MMStar", str(path))}
    # hits: 1 A=A yes, 2 B=B yes, 3 no letter / no text -> 'Z' wrong, 4 B != A wrong
    assert out["Overall"]["value"] == 0.5 and out["Overall"]["n"] == 4
    assert out["CP"]["value"] == 0.5 and out["c1"]["value"] == 1.0 and out["c2"]["value"] == 0.0
    assert out["judge_fallback"]["n"] == 1 and "no judge" in out["judge_fallback"]["note"]


def test_evaluate_mcq_with_judge(tmp_path, fake):
    path = tmp_path / "model_MMStar.tsv"
    _mcq_table().to_csv(path, sep="\t", index=False)
    fake.reply = lambda prompt, body: "Hi" if prompt == "hello" else "B"
    out = {r["metric"]: r for r in E.evaluate_predictions("MMStar", str(path), judge=fake.spec())}
    # item 3 now judged 'B' = its answer: 3 of 4 right
    assert out["Overall"]["value"] == 0.75 and out["c2"]["value"] == 0.5
    assert out["judge_fallback"]["n"] == 1 and "gpt-3.5-turbo-0125" in out["judge_fallback"]["note"]
    assert [r["prompt"] for r in fake.requests][0] == "hello"  # VLMEvalKit's working() probe first
    assert len(fake.graded()) == 1 and "Count?" in fake.graded()[0]["prompt"]


def test_evaluate_judge_not_working_falls_back(tmp_path, fake):
    path = tmp_path / "p.csv"
    _mcq_table().to_csv(path, index=False)
    fake.reply = lambda prompt, body: 503
    out = {r["metric"]: r for r in E.evaluate_predictions("MMStar", str(path), judge=fake.spec())}
    assert out["Overall"]["value"] == 0.5  # as without a judge
    assert "judge not working" in out["judge_fallback"]["note"]
    assert len(fake.requests) == 1  # only the probe


def test_evaluate_mme_yes_no(tmp_path):
    cats = ["OCR", "artwork", "celebrity", "color", "count", "existence", "landmark", "position", "posters", "scene",
            "code_reasoning", "commonsense_reasoning", "numerical_calculation", "text_translation"]
    rows = []
    for c in cats:
        rows += [{"index": len(rows), "question": "Is it? Please answer yes or no.", "answer": "Yes", "category": c,
                  "image_path": f"{c}/0.jpg", "prediction": "Yes"},
                 {"index": len(rows) + 1, "question": "Is it not?", "answer": "No", "category": c,
                  "image_path": f"{c}/0.jpg", "prediction": "No."}]
    rows[0]["prediction"] = "Yes, there is no dog"  # OCR q1 -> Unknown -> wrong
    rows[2]["prediction"] = "**Yes**"  # artwork q1 -> Unknown (asterisks kept) -> wrong
    path = tmp_path / "MME.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    out = {r["metric"]: r for r in E.evaluate_predictions("MME", str(path))}
    # OCR and artwork: acc 50 + acc+ 0 = 50 each; the other 8 perception categories 200 -> 1700
    assert out["OCR"]["value"] == 50.0 and out["perception"]["value"] == 1700.0
    assert out["reasoning"]["value"] == 800.0 and out["cognition"]["value"] == 800.0
    assert out["judge_fallback"]["n"] == 2


def test_evaluate_mmbench_circular(tmp_path, fake):
    base = {"question": "Which?", "A": "cat", "B": "dog", "category": "c1", "l2-category": "logic_reasoning",
            "split": "dev"}
    rows = [{**base, "index": 1, "answer": "A", "prediction": "A"},
            {**base, "index": 1_000_001, "answer": "B", "prediction": "B"},  # group 1 right
            {**base, "index": 2, "answer": "A", "prediction": "A"},
            {**base, "index": 1_000_002, "answer": "B", "prediction": "no idea at all really"},  # needs the judge
            {**base, "index": 3, "answer": "A", "prediction": "B"},  # group 3 settled wrong by pre-fetch
            {**base, "index": 1_000_003, "answer": "B", "prediction": "hmm, hard to say"}]
    path = tmp_path / "MMBench_DEV_EN.xlsx"
    pd.DataFrame(rows).to_excel(path, index=False)
    out = {r["metric"]: r for r in E.evaluate_predictions("MMBench_DEV_EN", str(path))}
    assert out["Overall"]["value"] == pytest.approx(1 / 3) and out["LR"]["value"] == pytest.approx(1 / 3)
    assert out["judge_fallback"]["n"] == 1  # group 3's unparsed rotation never needs the judge
    fake.reply = lambda prompt, body: "ok" if prompt == "hello" else "B"
    out = {r["metric"]: r for r in E.evaluate_predictions("MMBench_DEV_EN", str(path), judge=fake.spec())}
    assert out["Overall"]["value"] == pytest.approx(2 / 3)  # group 2 completed by the judge
    assert len(fake.graded()) == 1


def test_evaluate_mmvet_needs_judge(tmp_path, fake):
    rows = [{"index": 0, "question": "What is x?", "answer": "-1<AND>-5", "category": "rec,math", "prediction": "-1"},
            {"index": 1, "question": "Read it", "answer": "STOP", "category": "ocr", "prediction": "STOP"}]
    path = tmp_path / "MMVet.xlsx"
    pd.DataFrame(rows).to_excel(path, index=False)
    out = {r["metric"]: r for r in E.evaluate_predictions("MMVet", str(path))}
    assert out["Overall"]["status"] == "not_computed" and out["Overall"]["value"] is None
    assert out["judge_fallback"]["n"] == 2 and "not computed" in out["judge_fallback"]["note"]
    fake.reply = lambda prompt, body: "ok" if prompt == "hello" else ("0.5" if "What is x?" in prompt else "1.0")
    out = {r["metric"]: r for r in E.evaluate_predictions("MMVet", str(path), judge=fake.spec())}
    assert out["Overall"]["value"] == pytest.approx(75.0)  # (0.5 + 1.0) / 2 x 100
    assert out["math"]["value"] == pytest.approx(50.0) and out["ocr"]["value"] == pytest.approx(100.0)
    assert any(r["prompt"].endswith("What is x? | -1 <AND> -5 | -1 | ") for r in fake.graded())  # spaced <AND>


def test_evaluate_mathvista(tmp_path, fake):
    common = {"task": "figure question answering", "skills": "['arithmetic reasoning']", "precision": None,
              "unit": None}
    rows = [{**common, "index": 1, "question": "Q1", "answer": "14", "question_type": "free_form",
             "answer_type": "integer", "prediction": "14"},  # pre-fetched right
            {**common, "index": 2, "question": "Q2", "answer": "8/11", "question_type": "multi_choice",
             "answer_type": "text", "choices": "['3/11', '8/11']", "answer_option": "B",
             "prediction": "The answer is A"},  # pre-fetched letter, wrong
            {**common, "index": 3, "question": "Q3", "answer": "1.5", "question_type": "free_form",
             "answer_type": "float", "prediction": "about one and a half"}]  # needs the judge
    path = tmp_path / "MathVista_MINI.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    out = {r["metric"]: r for r in E.evaluate_predictions("MathVista_MINI", str(path))}
    assert out["Overall"]["status"] == "not_computed" and out["judge_fallback"]["n"] == 1
    fake.reply = lambda prompt, body: "ok" if prompt == "hello" else "1.5"
    out = {r["metric"]: r for r in E.evaluate_predictions("MathVista_MINI", str(path), judge=fake.spec())}
    assert out["Overall"]["value"] == pytest.approx(200 / 3)  # items 1 and 3 right
    assert out["prefetch_rate"]["value"] == pytest.approx(200 / 3)
    assert fake.graded()[0]["prompt"].endswith("Q3\nModel respone: about one and a halfExtracted answer:")


def test_evaluate_kiva_and_spatial457(tmp_path, fake):
    rows = [{"index": 0, "question": "Which?", "answer": "B", "prediction": "(B)"},
            {"index": 1, "question": "Which?", "answer": "A", "prediction": "I think B"},  # two capitals -> judge
            {"index": 2, "question": "Same?", "answer": "Yes", "prediction": "**Yes**"}]
    path = tmp_path / "KIVA.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    out = {r["metric"]: r for r in E.evaluate_predictions("KIVA", str(path))}
    assert out["Overall"]["value"] is None and out["judge_fallback"]["n"] == 1
    fake.reply = lambda prompt, body: "ok" if prompt == "hello" else "C"
    out = {r["metric"]: r for r in E.evaluate_predictions("KIVA", str(path), judge=fake.spec())}
    assert out["Overall"]["value"] == pytest.approx(2 / 3)  # item 1 judged 'C' != 'A'

    fake.requests.clear()
    fake.reply = lambda prompt, body: "ok" if prompt == "hello" else (
        "<result>1</result>" if "[Ground Truth]: B" in prompt else "<result>0</result>")
    out = {r["metric"]: r for r in E.evaluate_predictions("Spatial457_occ", str(path), judge=fake.spec())}
    assert out["Overall"]["value"] == pytest.approx(1 / 3) and out["judge_fallback"]["n"] == 3
    assert len(fake.graded()) == 3  # one call per item


def test_evaluate_qspatial(tmp_path):
    rows = [{"index": 0, "question": "How far?", "answer": "(1.0, 'meters')", "answer_value": 1.0,
             "answer_unit": "meters", "question_type": "distance", "prediction": r"\scalar{140} \distance_unit{cm}"},
            {"index": 1, "question": "How tall?", "answer": "(2, 'feet')", "answer_value": 2,
             "answer_unit": "feet", "question_type": "size", "prediction": "two feet"}]
    path = tmp_path / "QSpatial_plus.xlsx"
    pd.DataFrame(rows).to_excel(path, index=False)
    out = {r["metric"]: r for r in E.evaluate_predictions("QSpatial_plus", str(path))}
    assert out["delta_2"]["value"] == 0.5 and out["delta_1_point_5"]["value"] == 0.5  # 1.4; unparsed
    assert out["distance_delta_2"]["value"] == 1.0 and out["size_delta_2"]["value"] == 0.0
    assert out["parse_errors"]["n"] == 1 and out["judge_fallback"]["n"] == 0


def test_evaluate_mmmu_preproc(tmp_path):
    rows = [{"index": 0, "question": "Pick", "A": "x", "B": "y", "answer": "B", "split": "validation",
             "category": "Art", "prediction": "B"},
            {"index": 1, "question": "How many?", "answer": "42", "split": "validation", "category": "Math",
             "prediction": "It is 42"},  # open: A = '42', B = 'Other Answers'; text match -> A = gold
            {"index": 2, "question": "How many?", "answer": "7", "split": "dev", "category": "Math",
             "prediction": "It is 8"}]
    path = tmp_path / "MMMU_DEV_VAL.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    out = {r["metric"]: r["value"] for r in E.evaluate_predictions("MMMU_DEV_VAL", str(path))}
    assert out["Overall/validation"] == 1.0 and out["Overall/dev"] == 0.0


def test_evaluate_parquet_with_data_and_groups(tmp_path, monkeypatch):
    items = {str(i): Item("POPE", str(i), f"Is there a {i}?", {}, ans, "random", "yes_no", "", ())
             for i, ans in enumerate(["Yes", "No"])}
    monkeypatch.setattr(E, "load_data", lambda label, path: E.Data(items, {}, list(items)))
    preds = pl.DataFrame({"benchmark": ["POPE"] * 4, "item_id": ["0", "1", "0", "1"],
                          "condition": ["baseline", "baseline", "zoom", "zoom"],
                          "raw_output": ["Yes", "Yes", "yes.", "No"]})
    path = tmp_path / "predictions.parquet"
    preds.write_parquet(path)
    out = E.evaluate_predictions("POPE", str(path), data_path="unused.tsv")
    acc = {r["condition"]: r["value"] for r in out if r["metric"] == "acc"}
    assert acc == {"baseline": 50.0, "zoom": 100.0}
    with pytest.raises(ValueError, match="--data"):
        E.evaluate_predictions("POPE", str(path))  # our Parquet carries no question


def test_unknown_prediction_id_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(E, "load_data", lambda label, path: E.Data({}, {}, []))
    path = tmp_path / "p.csv"
    pd.DataFrame({"index": [5], "prediction": ["Yes"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="not in the benchmark data"):
        E.evaluate_predictions("POPE", str(path), data_path="x.tsv")


def test_cli_json(tmp_path):
    from typer.testing import CliRunner
    import typer

    from flows.cli_evaluate import evaluate

    path = tmp_path / "p.xlsx"
    _mcq_table().to_excel(path, index=False)
    app = typer.Typer()
    app.command()(evaluate)
    app.command("noop")(lambda: None)  # two commands keep `evaluate` as a sub-command name
    res = CliRunner().invoke(app, ["evaluate", "--benchmark", "MMStar", "--predictions", str(path),
                                   "--format", "json"])
    assert res.exit_code == 0, res.output
    records = {r["metric"]: r for r in json.loads(res.output)}
    assert {k: records["Overall"][k] for k in ("benchmark", "value", "n", "unit", "status")} == {
        "benchmark": "MMStar", "value": 0.5, "n": 4, "unit": "fraction", "status": "ok"}
    assert {k: records["coverage"][k] for k in ("n_expected", "n_predicted", "n_missing", "n_refused")} == {
        "n_expected": 4, "n_predicted": 4, "n_missing": 0, "n_refused": 0}
    res = CliRunner().invoke(app, ["evaluate", "--benchmark", "MMStar", "--predictions", str(path)])
    assert res.exit_code == 0 and "Overall" in res.output and "judge_fallback" in res.output




# ---- the shared fixtures (tests/fixtures/benchmarks): per-row expectations and hand-computed metrics ----

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"
EXPECTED = {
    # 4 of 5 right (row 3 wrong)
    "AI2D_TEST": ({"Overall": 0.8}, 0),
    # rows 0, 1, 3 right of 6; row 2 unparsed -> Z needs the judge
    "MMStar": ({"Overall": 0.5, "coarse perception": 1.0, "math": 0.0, "image scene and topic": 1.0}, 1),
    # groups 0 (4 copies right) and 2 right, group 1 has a wrong copy: 2/3
    "MMBench_DEV_EN": ({"Overall": 2 / 3, "FP-S": 1.0, "CP": 0.0, "RR": 1.0, "image_emotion": 0.0}, 0),
    # OCR, count, landmark, position, posters, scene 200 each; artwork, celebrity, color 50 + 0; existence 0
    "MME": ({"perception": 1350.0, "reasoning": 800.0, "cognition": 800.0, "artwork": 50.0, "existence": 0.0,
             "OCR": 200.0, "acc/color": 50.0, "acc+/color": 0.0}, 2),
    # 7/9 right; figures (l2,set,fig): 3 of 5 all-right; questions (l2,set,q): 3 of 5; VD: 4/5, 2/3, 2/3
    "HallusionBench": ({"aAcc": 700 / 9, "fAcc": 60.0, "qAcc": 60.0, "aAcc/VD": 80.0, "fAcc/VD": 200 / 3,
                        "qAcc/VD": 200 / 3, "mean_aAcc_fAcc_qAcc": (700 / 9 + 120) / 3}, 1),
    # 7 exploded rows: TP 2, FN 2, FP 1, TN 2 -> P 2/3, R 1/2, F1 4/7; acc 4/7; Yes said 3 times
    "POPE": ({"F1": 400 / 7, "acc": 400 / 7, "precision": 200 / 3, "recall": 50.0, "yes_ratio": 300 / 7,
              "F1/adversarial": 100.0, "F1/popular": 200 / 3, "acc/popular": 50.0, "F1/random": 0.0,
              "acc/random": 100 / 3}, 0),
    # dev: the open question (A = gold) right; validation: 2 of 3
    "MMMU_DEV_VAL": ({"Overall/dev": 1.0, "Overall/validation": 2 / 3, "Art/validation": 1.0,
                      "Art_Theory/validation": 0.0}, 0),
    # ratios 1.25, 2.5, 1.0668, parse failure, 1.693: delta_2 3/5, delta_1.5 2/5
    "QSpatial_plus": ({"delta_2": 0.6, "delta_1_point_5": 0.4, "distance_delta_2": 0.5, "size_delta_2": 2 / 3,
                       "size_delta_1_point_5": 1 / 3, "parse_errors": 1.0}, 0),
    # with the judge giving C for row 2: 4 of 6; count = rows 4 (right) and 5 (wrong)
    "KIVA": ({"Overall": 4 / 6, "count": 0.5, "colour": 1.0, "reflection": 0.0}, 1),
    # judge verdicts 1, 0, 1, 0, 1
    "Spatial457_occ": ({"Overall": 0.6, "occlusion": 0.6}, 5),
    # grades 1, 0, 1, 0, 1: Overall 3/5; rec = (1 + 0 + 1 + 1 again for the lone-'rec' item) / 4
    "MMVet": ({"Overall": 60.0, "rec": 75.0, "math": 0.0, "spat": 100.0, "ocr": 0.0, "know": 100.0,
               "rec_spat": 100.0}, 5),
    # rows 1, 2, 3, 6 right (pre-fetched); 4 judged 2.3 (wrong), 5 a list (never right)
    "MathVista_MINI": ({"Overall": 200 / 3, "prefetch_rate": 200 / 3, "figure question answering": 100.0,
                        "math word problem": 50.0, "geometry problem solving": 0.0,
                        "algebraic reasoning": 100 / 3, "arithmetic reasoning": 100.0}, 2),
}
JUDGED = ("KIVA", "Spatial457_occ", "MMVet", "MathVista_MINI")


def _fixture_reply(name: str, table: pd.DataFrame):
    """The fake judge's answers, read off the fixture's expected_hit column."""
    def reply(prompt, body):
        if prompt == "hello":
            return "ok"
        marker = {"MMVet": "| {} | ", "Spatial457_occ": "[Prediction]: {}\n",
                  "MathVista_MINI": "Model respone: {}Extracted"}.get(name, "{}")
        row = next(r for r in table.to_dict("records") if marker.format(r["prediction"]) in prompt)
        if name == "KIVA":
            return "C"
        if name == "MMVet":
            return "1.0" if row["expected_hit"] == "1" else "0.0"
        if name == "Spatial457_occ":
            return f"<result>{row['expected_hit']}</result>"
        return row["prediction"]  # MathVista: the judge extracts the model's own number / list
    return reply


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_predictions(name, fake):
    path = FIXTURES / "predictions" / f"{name}.tsv"
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    fake.reply = _fixture_reply(name, table)
    judge = fake.spec() if name in JUDGED else None
    scored = E.score_predictions(name, str(path), judge=judge)
    hits = dict(zip(scored["item_id"], scored["hit"]))
    extracted = dict(zip(scored["item_id"], scored["extracted"]))
    for row in table.to_dict("records"):
        assert hits[row["index"]] == (row["expected_hit"] == "1"), (name, row["index"], row["note"])
        want = row["expected_extracted"]
        if want and name == "QSpatial_plus":
            assert float(extracted[row["index"]]) == pytest.approx(float(want))
        elif want:
            assert extracted[row["index"]] == want, (name, row["index"], row["note"])
    records = E.evaluate_predictions(name, str(path), judge=judge)
    got = {r["metric"]: r for r in records}
    metrics, fallback = EXPECTED[name]
    for metric, value in metrics.items():
        assert got[metric]["status"] == "ok" and got[metric]["value"] == pytest.approx(value), (name, metric)
    assert got["judge_fallback"]["n"] == fallback
    # the same numbers when the benchmark data comes from the data file through the spec's adapter
    via_data = E.evaluate_predictions(name, str(path), data_path=str(FIXTURES / f"{name}.tsv"), judge=judge)
    assert [(r["metric"], r["value"], r["n"]) for r in via_data] == [(r["metric"], r["value"], r["n"])
                                                                    for r in records]


@pytest.mark.parametrize("name", JUDGED)
def test_fixture_judge_required_without_judge(name):
    records = E.evaluate_predictions(name, str(FIXTURES / "predictions" / f"{name}.tsv"))
    got = {r["metric"]: r for r in records}
    assert got["Overall"]["status"] == "not_computed" and got["Overall"]["value"] is None
    assert got["judge_fallback"]["n"] == EXPECTED[name][1] and "not computed" in got["judge_fallback"]["note"]
