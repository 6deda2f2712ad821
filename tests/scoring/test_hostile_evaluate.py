"""Hostile and incomplete inputs to `g2u evaluate`: spreadsheet formulas, predictions
covering part of the benchmark, damaged files, and benchmark data the loader refuses.

Each case asserts the reason a user reads AND that no prediction row is lost: every row is either
scored or listed as refused (n_predicted = n_scored + n_refused)."""
from __future__ import annotations

import base64
import io
import json
import re
import zipfile
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from PIL import Image
from typer.testing import CliRunner

from g2u_tasks.scoring import evaluate as E


def _png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def mcq_rows(n: int) -> list[dict]:
    """MMStar-style rows whose gold answer is A; prediction 'A' is right."""
    return [{"index": i, "question": f"Question {i}?", "A": "red", "B": "green", "C": "blue", "D": "grey",
             "answer": "A", "category": "colour", "l2-category": "coarse_perception", "prediction": "A"}
            for i in range(n)]


def by_metric(records: list[dict]) -> dict[str, dict]:
    return {r["metric"]: r for r in records}


def no_row_lost(coverage: dict) -> None:
    assert coverage["n_predicted"] == coverage["n_scored"] + coverage["n_refused"]
    assert len(coverage["refused"]) == coverage["n_refused"] and len(coverage["missing"]) == coverage["n_missing"]


def cli(*args: str):
    import typer

    from flows.cli_evaluate import evaluate

    app = typer.Typer()
    app.command()(evaluate)
    app.command("noop")(lambda: None)  # two commands keep `evaluate` as a sub-command name
    return CliRunner().invoke(app, ["evaluate", *args])


# ---------------------------------------------------------------- formulas


def test_xlsx_formula_cells_are_refused_per_row(tmp_path):
    rows = mcq_rows(8)
    rows[1]["prediction"] = '=HYPERLINK("http://127.0.0.1:9/x","A")'
    rows[2]["prediction"] = "=1+1"
    rows[3]["index"] = "=2+1"  # a formula id: no id at all
    rows[4]["category"] = '=WEBSERVICE("http://127.0.0.1:9/")'  # anywhere in the row
    rows[5]["prediction"] = "-3"  # text, not a formula (openpyxl writes only "=..." as formulas)
    rows[6]["prediction"] = "B"  # wrong, scored
    path = tmp_path / "model_MMStar.xlsx"
    pd.DataFrame(rows).to_excel(path, index=False)

    records = E.evaluate_predictions("MMStar", str(path))
    got = by_metric(records)
    cov = got["coverage"]
    no_row_lost(cov)
    assert (cov["n_expected"], cov["n_predicted"], cov["n_scored"], cov["n_refused"]) == (8, 8, 4, 4)
    reasons = [r["reason"] for r in cov["refused"]]
    assert reasons == [
        "row 2: prediction is a spreadsheet formula '=HYPERLINK(\"http://127.0.0.1:9/x\",\"A\")'; not scored",
        "row 3: prediction is a spreadsheet formula '=1+1'; not scored",
        "row 4: index is a spreadsheet formula '=2+1'; not scored",
        "row 5: category is a spreadsheet formula '=WEBSERVICE(\"http://127.0.0.1:9/\")'; not scored",
    ]
    assert [r["item_id"] for r in cov["refused"]] == ["1", "2", None, "4"]
    # rows 0 and 7 right, 5 ("-3") and 6 wrong: 2 of the 4 scored
    assert got["Overall"]["value"] == 0.5 and got["Overall"]["n"] == 4
    assert got["Overall"]["status"] == cov["status"] == "partial"
    assert "4 refused ('1', '2', no id, '4')" in got["Overall"]["note"]
    scored = E.score_predictions("MMStar", str(path))
    assert sorted(scored["item_id"]) == ["0", "5", "6", "7"]


def _with_cached_values(path: Path, value: str) -> None:
    """What a file saved by Excel holds: each formula's last computed value next to it."""
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    sheet = parts["xl/worksheets/sheet1.xml"].decode()
    sheet = re.sub(r'<c r="([A-Z]+\d+)"><f>(.*?)</f><v\s*/>', rf'<c r="\1" t="str"><f>\2</f><v>{value}</v>', sheet)
    parts["xl/worksheets/sheet1.xml"] = sheet.encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in parts.items():
            z.writestr(name, data)


def test_xlsx_cached_formula_values_are_not_scored(tmp_path):
    rows = mcq_rows(3)
    rows[1]["prediction"] = '=IF(1,"A","B")'
    path = tmp_path / "p.xlsx"
    pd.DataFrame(rows).to_excel(path, index=False)
    _with_cached_values(path, "A")
    assert pd.read_excel(path)["prediction"].tolist() == ["A", "A", "A"]  # what a values-only reader scores
    cov = by_metric(E.evaluate_predictions("MMStar", str(path)))["coverage"]
    assert cov["n_scored"] == 2 and cov["refused"] == [
        {"item_id": "1", "reason": "row 2: prediction is a spreadsheet formula '=IF(1,\"A\",\"B\")'; not scored"}]


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_text_files_formula_like_answers_are_refused(tmp_path, suffix):
    hostile = ["=1+1", '=HYPERLINK("http://x","A")', "@SUM(A1)", "-cmd|' /C calc'!A0", "+HYPERLINK(\"x\")",
               " =A1"]
    kept = ["-3", "+5 cm", "- A", "A", "@ A", "A = B"]
    rows = mcq_rows(len(hostile) + len(kept))
    for row, text in zip(rows, hostile + kept):
        row["prediction"] = text
    rows[-1]["index"] = "=99"  # a formula-like id
    path = tmp_path / f"p{suffix}"
    pd.DataFrame(rows).to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    cov = by_metric(E.evaluate_predictions("MMStar", str(path)))["coverage"]
    no_row_lost(cov)
    refused = {r["item_id"]: r["reason"] for r in cov["refused"]}
    assert sorted(refused, key=str) == [str(i) for i in range(len(hostile))] + ["=99"]
    assert refused["0"] == "row 1: prediction is formula-like text '=1+1'; not scored"
    assert refused["=99"] == "row 12: index is formula-like text '=99'; not scored"
    assert cov["n_scored"] == len(kept) - 1


# ---------------------------------------------------------------- partial predictions


@pytest.fixture()
def mmstar_data(tmp_path):
    """A 10-item MMStar data file (VLMEvalKit TSV)."""
    rows = [{**{k: v for k, v in r.items() if k != "prediction"}, "image": _png()} for r in mcq_rows(10)]
    path = tmp_path / "MMStar.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def test_predictions_covering_part_of_the_benchmark_say_so(tmp_path, mmstar_data):
    path = tmp_path / "p.tsv"
    pd.DataFrame(mcq_rows(10)[:3]).to_csv(path, sep="\t", index=False)
    got = by_metric(E.evaluate_predictions("MMStar", str(path), data_path=str(mmstar_data)))
    cov = got["coverage"]
    no_row_lost(cov)
    assert (cov["n_expected"], cov["n_predicted"], cov["n_scored"], cov["n_missing"]) == (10, 3, 3, 7)
    assert cov["missing"] == [str(i) for i in range(3, 10)] and cov["value"] == 0.3
    assert cov["status"] == "partial"
    # the value is over the scored items only (VLMEvalKit scores the rows it is given), marked as such
    overall = got["Overall"]
    assert overall["value"] == 1.0 and overall["n"] == 3 and overall["status"] == "partial"
    assert "scored 3 of 10 items of the benchmark data: 7 without a prediction ('3', '4', '5'" in overall["note"]
    assert "the value covers the scored items only" in overall["note"]

    complete = tmp_path / "all.tsv"
    pd.DataFrame(mcq_rows(10)).to_csv(complete, sep="\t", index=False)
    whole = by_metric(E.evaluate_predictions("MMStar", str(complete), data_path=str(mmstar_data)))
    assert whole["Overall"]["status"] == whole["coverage"]["status"] == "ok" and whole["coverage"]["n_missing"] == 0

    res = cli("--benchmark", "MMStar", "--predictions", str(path), "--data", str(mmstar_data), "--format", "json")
    assert res.exit_code == 0, res.output
    records = by_metric(json.loads(res.stdout))
    assert records["coverage"]["n_missing"] == 7 and records["Overall"]["status"] == "partial"
    assert "warning: MMStar: scored 3 of 10 items" in res.stderr


def test_many_missing_items_are_listed_in_full_on_the_coverage_record(tmp_path):
    rows = mcq_rows(30)
    data = tmp_path / "MMStar.tsv"
    pd.DataFrame([{**r, "image": _png()} for r in rows]).drop(columns="prediction").to_csv(data, sep="\t", index=False)
    path = tmp_path / "p.csv"
    pd.DataFrame(rows[:2]).to_csv(path, index=False)
    got = by_metric(E.evaluate_predictions("MMStar", str(path), data_path=str(data)))
    assert len(got["coverage"]["missing"]) == 28
    assert "... 18 more (see the coverage record)" in got["Overall"]["note"]


def test_parquet_groups_get_their_own_coverage(tmp_path, mmstar_data):
    preds = pl.DataFrame({"benchmark": ["MMStar"] * 5, "item_id": ["0", "1", "2", "0", None],
                          "condition": ["baseline"] * 3 + ["zoom"] * 2, "raw_output": ["A"] * 5})
    path = tmp_path / "predictions.parquet"
    preds.write_parquet(path)
    out = E.evaluate_predictions("MMStar", str(path), data_path=str(mmstar_data))
    cov = {r["condition"]: r for r in out if r["metric"] == "coverage"}
    assert (cov["baseline"]["n_scored"], cov["baseline"]["n_missing"]) == (3, 7)
    assert (cov["zoom"]["n_scored"], cov["zoom"]["n_refused"], cov["zoom"]["n_missing"]) == (1, 1, 9)
    assert cov["zoom"]["refused"] == [{"item_id": None, "reason": "row 5: empty item_id; not scored"}]
    for c in cov.values():
        no_row_lost(c)


def test_blank_index_in_a_result_file_is_refused_not_renamed(tmp_path):
    rows = mcq_rows(3)
    rows[1]["index"] = "  "
    path = tmp_path / "p.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    cov = by_metric(E.evaluate_predictions("MMStar", str(path)))["coverage"]
    assert cov["refused"] == [{"item_id": None, "reason": "row 2: empty index; not scored"}]
    assert cov["n_scored"] == 2


# ---------------------------------------------------------------- the benchmark data's own rules (--data)


def test_data_items_the_loader_refuses_are_not_scored(tmp_path):
    rows = [{**r, "image": _png()} for r in mcq_rows(6)]
    rows[1]["answer"] = "E"  # not among the options A-D
    rows[2]["question"] = "   "  # empty question
    rows[3]["answer"] = None  # no gold answer
    rows[5]["index"] = 4  # duplicate id
    data = tmp_path / "MMStar.tsv"
    pd.DataFrame(rows).drop(columns="prediction").to_csv(data, sep="\t", index=False)
    preds = tmp_path / "p.tsv"
    pd.DataFrame(mcq_rows(5)).to_csv(preds, sep="\t", index=False)

    got = by_metric(E.evaluate_predictions("MMStar", str(preds), data_path=str(data)))
    cov = got["coverage"]
    no_row_lost(cov)
    refused = {r["item_id"]: r["reason"] for r in cov["refused"]}
    assert refused == {
        "1": "the benchmark data refuses item '1': row 2: answer 'E' is not among the options A, B, C, D",
        "2": "the benchmark data refuses item '2': row 3: empty question",
        "3": "the benchmark data refuses item '3': gold answer missing",
        "4": "the benchmark data refuses item '4': item_id '4' appears 2 times in the benchmark data; "
             "row 6: duplicate item_id '4' (first at row 5)",
    }
    assert (cov["n_expected"], cov["n_scored"], cov["n_missing"]) == (5, 1, 0)
    assert got["Overall"]["value"] == 1.0 and got["Overall"]["status"] == "partial"


# ---------------------------------------------------------------- files that cannot be read


def test_corrupt_xlsx_is_one_line_naming_the_file(tmp_path):
    junk = tmp_path / "junk.xlsx"
    junk.write_bytes(b"this is not a zip file")
    truncated = tmp_path / "cut.xlsx"
    pd.DataFrame(mcq_rows(50)).to_excel(truncated, index=False)
    truncated.write_bytes(truncated.read_bytes()[:1500])
    for path in (junk, truncated):
        with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: not a readable .xlsx file \("):
            E.evaluate_predictions("MMStar", str(path))
        res = cli("--benchmark", "MMStar", "--predictions", str(path))
        assert res.exit_code == 2
        assert res.stderr.startswith(f"error: {path}: not a readable .xlsx file (") and res.stderr.count("\n") == 1
        assert "Traceback" not in res.output


@pytest.mark.parametrize("case", ["missing", "empty_csv", "no_columns", "bad_quote", "empty_sheet", "parquet",
                                  "suffix", "unknown_benchmark", "unknown_id", "no_rows", "missing_data"])
def test_bad_input_files_exit_2_with_one_error_line(tmp_path, mmstar_data, case):
    path, data, bench = tmp_path / "p.csv", [], "MMStar"
    if case == "missing":
        path = tmp_path / "nowhere.xlsx"
    elif case == "empty_csv":
        path.write_text("")
    elif case == "no_columns":
        pd.DataFrame({"index": [1], "answer": ["A"]}).to_csv(path, index=False)
    elif case == "bad_quote":
        path.write_text('index,prediction\n1,"A\n2,B\n')
    elif case == "empty_sheet":
        path = tmp_path / "p.xlsx"
        pd.DataFrame().to_excel(path, index=False)
    elif case == "parquet":
        path = tmp_path / "p.parquet"
        path.write_bytes(b"PAR1 not really")
    elif case == "suffix":
        path = tmp_path / "p.json"
        path.write_text("[]")
    elif case == "unknown_benchmark":
        bench = "NoSuchBench"
        pd.DataFrame(mcq_rows(1)).to_csv(path, index=False)
    elif case == "unknown_id":
        pd.DataFrame([{**mcq_rows(1)[0], "index": 77}]).to_csv(path, index=False)
        data = ["--data", str(mmstar_data)]
    elif case == "no_rows":
        path.write_text("index,question,prediction\n")
    elif case == "missing_data":
        pd.DataFrame(mcq_rows(1)).to_csv(path, index=False)
        data = ["--data", str(tmp_path / "nowhere" / "MMStar.tsv")]
    res = cli("--benchmark", bench, "--predictions", str(path), *data)
    assert res.exit_code == 2, (case, res.output)
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, (case, res.stderr)
    assert "Traceback" not in res.output
    if case != "unknown_benchmark":
        assert str(data[1] if case == "missing_data" else path) in res.stderr, (case, res.stderr)


def test_every_row_refused_gives_no_value_and_no_error(tmp_path):
    rows = mcq_rows(2)
    for row in rows:
        row["prediction"] = "=1+1"
    path = tmp_path / "p.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    got = by_metric(E.evaluate_predictions("MMStar", str(path)))
    assert got["coverage"]["status"] == "partial" and got["coverage"]["n_refused"] == 2
    assert got["coverage"]["value"] == 0.0
    assert all(r["value"] is None or r["metric"] in ("judge_fallback", "coverage") for r in got.values())
