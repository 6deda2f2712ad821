"""`g2u export` writes a run's predictions as VLMEvalKit / lmms-eval files that `g2u evaluate` scores
back to the run's `metrics` table."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from g2u_tasks.benchmarks.adapters import load_benchmark_spec
from g2u_tasks.records import PREDICTIONS_SCHEMA, items_table
from g2u_tasks.scoring.evaluate import evaluate_predictions
from g2u_tasks.scoring.stage import score_run
from g2u_tasks.warehouse import database as warehouse

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "benchmarks"
SOURCES = {"unig2u_chartqa100": FIXTURES / "unig2u" / "chartqa100" / "chartqa100.parquet",
           "unig2u_mmsi_attribute_appr": FIXTURES / "unig2u" / "mmsi_bench" / "attribute_appr.parquet",
           "MME": FIXTURES / "MME.tsv", "MMStar": FIXTURES / "MMStar.tsv"}
RUN = "run-export"


def reply(item, k: int) -> str:
    """Deterministic replies, right for some items and wrong for others (per condition)."""
    if item.benchmark == "unig2u_chartqa100":
        return [item.answer, "1+1", "7", item.answer.lower()][k % 4]
    if item.benchmark == "unig2u_mmsi_attribute_appr":
        return [f"``{item.answer}``", "`A`", "none"][k % 3]
    if item.question_type == "yes_no":
        return [item.answer, "No", "Yes, it is."][k % 3]
    return [f"The answer is {item.answer}", "B", "Z"][k % 3]


@pytest.fixture(scope="module")
def run_warehouse(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wh") / "warehouse.duckdb"
    items = [it for name, src in SOURCES.items() for it in load_benchmark_spec(name, str(src))]
    rows = []
    for k, item in enumerate(items):
        for condition, mode, shift in (("baseline", "baseline", 0), ("unig2u_chartqa100", "concat", 1)):
            rows.append({"run_id": RUN, "benchmark": item.benchmark, "item_id": item.item_id, "condition": condition,
                         "mode": mode, "seed": 0, "thought_id": None, "understander": "transformers:tiny",
                         "prompt": item.question, "raw_output": reply(item, k + shift), "extracted_answer": None,
                         "answer": item.answer, "correct": None, "gate_passed": None, "unscored_reason": None})
    items_frame = pl.from_arrow(items_table(items))
    scored = score_run(items_frame, pl.from_arrow(pl.DataFrame(rows).to_arrow().cast(PREDICTIONS_SCHEMA)))
    con = warehouse.connect(path)
    try:
        warehouse.ensure_tables(con)
        warehouse.load(con, {"items": items_frame, "predictions": scored.predictions, "metrics": scored.metrics()})
    finally:
        con.close()
    return path


def run_metrics(path: Path) -> dict[tuple, float | None]:
    con = warehouse.connect(path, read_only=True)
    try:
        rows = con.execute("SELECT benchmark, condition, mode, metric, value FROM metrics WHERE run_id = ?",
                           [RUN]).fetchall()
    finally:
        con.close()
    return {tuple(r[:4]): r[4] for r in rows}


@pytest.mark.parametrize("fmt, suffix", [("vlmevalkit", ".xlsx"), ("lmms-eval", ".jsonl")])
def test_export_reads_back_with_the_runs_metrics(run_warehouse, tmp_path, fmt, suffix):
    out = tmp_path / fmt
    result = CliRunner().invoke(app, ["export", RUN, "--format", fmt, "--out", str(out),
                                      "--warehouse", str(run_warehouse)])
    assert result.exit_code == 0, result.output
    files = [Path(line) for line in result.output.split()]
    assert len(files) == len(SOURCES) * 2 and all(f.suffix == suffix and f.exists() for f in files)
    expected = run_metrics(run_warehouse)
    compared = 0
    for f in files:
        condition_mode = f.parent.name if fmt == "vlmevalkit" else f.parent.parent.name
        condition, mode = ("baseline", "baseline") if condition_mode == "baseline_baseline" else \
            ("unig2u_chartqa100", "concat")
        benchmark = next(b for b in SOURCES if f.stem.endswith(b))
        for rec in evaluate_predictions(benchmark, str(f)):  # no --data: the file carries the dataset columns
            if rec["metric"] == "coverage":
                assert rec["status"] == "ok"
                continue
            key = (benchmark, condition, mode, rec["metric"])
            assert key in expected, key
            assert rec["value"] == pytest.approx(expected[key]), key
            compared += 1
    assert compared >= 20


def test_lmms_eval_records_have_its_layout(run_warehouse, tmp_path):
    CliRunner().invoke(app, ["export", RUN, "--format", "lmms-eval", "--out", str(tmp_path),
                             "--warehouse", str(run_warehouse)])
    log = next(tmp_path.glob("baseline_baseline/*/*_samples_unig2u_chartqa100.jsonl"))
    first = json.loads(log.read_text().splitlines()[0])
    assert first["doc_id"] == 0 and isinstance(first["filtered_resps"], str)
    assert {"target", "input", "doc_hash", "doc"} <= first.keys()


def test_formula_like_reply_stays_text(tmp_path):
    import openpyxl

    from g2u_tasks.scoring.export import _write_xlsx

    _write_xlsx(tmp_path / "r.xlsx", [{"index": "0", "question": "q", "prediction": "=1+1"}])
    cell = openpyxl.load_workbook(tmp_path / "r.xlsx").active["C2"]
    assert cell.value == "=1+1" and cell.data_type == "s"


def test_unknown_run_is_one_line_error(run_warehouse, tmp_path):
    result = CliRunner().invoke(app, ["export", "nope", "--out", str(tmp_path), "--warehouse", str(run_warehouse)])
    assert result.exit_code == 2 and "no predictions" in result.output
