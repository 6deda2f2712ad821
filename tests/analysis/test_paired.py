"""Paired gains on small hand-made runs where thoughts fail, plans fail, answers are quarantined or not scored:
every gain is over the items with both sides, and the tables, Markdown and JSON say how many are missing and why."""
from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from g2u_tasks.analysis import reports
from g2u_tasks.analysis import statistics as A
from g2u_tasks.warehouse import database as warehouse

RUN, SELF_RUN = "fails", "plans"
DE, CE = "detail_enhancement", "context_expansion"
# item -> baseline verdict (None: the baseline answer was quarantined)
BASELINE = {0: True, 1: False, 2: True, 3: False, 4: False, 5: False, 6: None}
# item -> detail_enhancement verdict; items 4 and 5 have failed thoughts
DETAIL = {0: True, 1: True, 2: True, 3: False, 6: True}
# item -> context_expansion verdict: 4 quarantined (understander failed), 5 not scored (needs a judge)
CONTEXT = {0: True, 1: False, 2: True, 3: False, 5: None, 6: False}


def _pred(run, item, condition, mode, seed, tid, correct):
    return {"run_id": run, "benchmark": "B", "item_id": str(item), "condition": condition, "mode": mode, "seed": seed,
            "thought_id": tid, "understander": "u", "prompt": "p", "raw_output": "x", "extracted_answer": "x",
            "answer": "x", "correct": correct,
            "unscored_reason": "needs judge: no judge configured" if correct is None else None}


def _thought(tid, item, family, seed, status="ok", source="template", plan_status=None, chosen=None):
    return {"thought_id": tid, "benchmark": "B", "item_id": str(item), "family": family, "prompt_source": source,
            "generator": "reference", "generator_params": "{}", "seed": seed, "psnr": 20.0 + item, "ssim": 0.5,
            "gen_seconds": 0.5, "status": status, "error": None if status == "ok" else "boom",
            "plan_status": plan_status, "chosen_family": chosen}


def _quarantine(run, item, record, reason):
    return {"run_id": run, "stage": "predictions", "benchmark": "B", "item_id": str(item), "reason": reason,
            "record": json.dumps(record)}


def _tables() -> dict[str, list[dict]]:
    preds, thoughts, quarantine = [], [], []
    for i, ok in BASELINE.items():
        if ok is None:
            quarantine.append(_quarantine(RUN, i, {"condition": "baseline", "mode": "baseline", "thought_id": None},
                                          "baseline/baseline: understander failed: boom"))
        else:
            preds.append(_pred(RUN, i, "baseline", "baseline", None, None, ok))
        for family, verdicts in ((DE, DETAIL), (CE, CONTEXT)):
            tid = f"{family}-{i}"
            if family == DE and i in (4, 5):
                thoughts.append(_thought(tid, i, family, 0, status="failed"))
                quarantine.append(_quarantine(RUN, i, {"thought_id": tid, "family": family, "plan_status": None},
                                              f"no usable {family} thought (seed 0): boom"))
                continue
            thoughts.append(_thought(tid, i, family, 0))
            if i in verdicts:
                preds.append(_pred(RUN, i, family, "concat", 0, tid, verdicts[i]))
            else:
                quarantine.append(_quarantine(RUN, i, {"condition": family, "mode": "concat", "thought_id": tid},
                                              f"{family}/concat: understander failed: boom"))
    # a self-directed run: item 4's plans fail on both seeds, item 5's on seed 1; answers equal the baseline but
    # for item 1 (fixed on both seeds)
    for i, ok in BASELINE.items():
        if ok is None:
            continue
        preds.append(_pred(SELF_RUN, i, "baseline", "baseline", None, None, ok))
        for seed in (0, 1):
            tid = f"self-{i}-{seed}"
            if i == 4 or (i == 5 and seed == 1):
                thoughts.append(_thought(tid, i, "self", seed, "failed", "self", "parse_failed"))
                quarantine.append(_quarantine(SELF_RUN, i, {"thought_id": tid, "family": "self",
                                                            "plan_status": "parse_failed"}, "plan parse failed"))
                continue
            thoughts.append(_thought(tid, i, "self", seed, source="self", plan_status="ok", chosen=DE))
            preds.append(_pred(SELF_RUN, i, "self", "concat", seed, tid, True if i == 1 else ok))
    runs = [{"run_id": RUN, "n_items": 7, "understander": "u1", "config_json": json.dumps({"modes": ["concat"]})},
            {"run_id": SELF_RUN, "n_items": 6, "understander": "u2"}]
    return {"predictions": preds, "thoughts": thoughts, "quarantine": quarantine, "runs": runs}


@pytest.fixture(scope="module")
def wh(tmp_path_factory):
    path = tmp_path_factory.mktemp("paired") / "w.duckdb"
    con = warehouse.connect(path)
    warehouse.load(con, {name: pa.Table.from_pylist(rows, schema=warehouse.table_schema(name))
                         for name, rows in _tables().items()})
    con.close()
    con = warehouse.connect(path, read_only=True)
    yield con, path
    con.close()


def _row(frame: pl.DataFrame, **where) -> dict:
    hit = frame.filter(pl.all_horizontal(pl.col(k) == v for k, v in where.items()))
    assert hit.height == 1, (where, hit)
    return hit.row(0, named=True)


def _by_hand(verdicts: dict) -> tuple[int, float, float, float]:
    """(n paired, accuracy %, baseline %, gain pp) over the items both sides scored."""
    both = [i for i, ok in verdicts.items() if ok is not None and BASELINE.get(i) is not None]
    acc = 100 * sum(verdicts[i] for i in both) / len(both)
    base = 100 * sum(BASELINE[i] for i in both) / len(both)
    return len(both), round(acc, 2), round(base, 2), round(acc - base, 2)


def test_gain_ci_pairs_items_and_counts_the_missing(wh):
    con, _ = wh
    g = reports.run_report(con, "gain_ci", RUN)
    de = _row(g, condition=DE, mode="concat")
    assert _by_hand(DETAIL) == (4, 75.0, 50.0, 25.0)
    assert (de["n_items"], de["accuracy_pct"], de["baseline_pct"], de["gain_pp"]) == _by_hand(DETAIL)
    # the unpaired comparison this replaces: 4 of 5 answered right vs 2 of 6 baselines right
    assert de["gain_pp"] != round(100 * (4 / 5 - 2 / 6), 2)
    assert (de["n_paired"], de["n_missing"], de["missing_failed_thought"], de["missing_quarantined"]) == (4, 3, 2, 1)
    assert de["fixed"] == 1 and de["broken"] == 0
    ce = _row(g, condition=CE, mode="concat")
    assert (ce["n_items"], ce["gain_pp"]) == (4, 0.0)
    assert (ce["n_missing"], ce["missing_quarantined"], ce["missing_not_scored"], ce["missing_failed_thought"]) \
        == (3, 2, 1, 0)


def test_sql_reports_agree_with_python_on_paired_items(wh):
    con, _ = wh
    g = reports.run_report(con, "gain_ci", RUN)
    sql = reports.run_report(con, "gain_over_baseline", RUN)
    base = _row(sql, condition="baseline")
    assert (base["n"], base["accuracy_pct"], base["gain_pp"]) == (6, round(100 * 2 / 6, 2), 0.0)
    flips = reports.run_report(con, "flips", RUN)
    for family in (DE, CE):
        py, row, flip = (_row(f, condition=family, mode="concat") for f in (g, sql, flips))
        for col in ("accuracy_pct", "gain_pp", "baseline_pct", "n_paired", "n_missing", "missing_failed_thought",
                    "missing_quarantined", "missing_not_scored", "n_partial"):
            assert row[col] == py[col], col
        assert row["n"] == py["n_items"] and (flip["fixed"], flip["broken"]) == (py["fixed"], py["broken"])
    overall = _row(reports.run_report(con, "overall_gain", RUN), condition=DE)
    assert (overall["gain_pp"], overall["n_paired"], overall["n_missing"]) == (25.0, 4, 3)
    by_cat = reports.run_report(con, "family_gain_by_category", RUN)
    assert _row(by_cat, family=DE, mode="concat")["gain_pp"] == 25.0
    assert _row(by_cat, family=DE, mode="concat")["n_missing"] == 3


def test_oracle_needs_every_family_paired(wh):
    con, _ = wh
    fo = reports.run_report(con, "family_oracle", RUN)
    oracle = _row(fo, family="oracle", mode="concat")
    # items 0..3 have both families: the best of the two is right on 0, 1, 2
    assert (oracle["n_items"], oracle["accuracy_pct"], oracle["gain_pp"]) == (4, 75.0, 25.0)
    assert (oracle["n_missing"], oracle["missing_failed_thought"], oracle["missing_quarantined"]) == (3, 2, 1)
    per_item = reports.run_report(con, "oracle_family", RUN, detail=True)
    assert per_item.filter(pl.col("complete"))["item_id"].sort().to_list() == ["0", "1", "2", "3"]
    assert _row(per_item, item_id="4")["missing_reason"] == "failed_thought"
    # the default is the summary of those rows, and it agrees with family_oracle's oracle row
    summary = _row(reports.run_report(con, "oracle_family", RUN), mode="concat")
    assert (summary["n_complete"], summary["oracle_pct"], summary["gain_pp"]) == (4, 75.0, 25.0)
    assert (summary["n_incomplete"], summary["missing_failed_thought"], summary["missing_quarantined"]) == (3, 2, 1)
    assert summary["n_items"] == per_item.filter(pl.col("mode") == "concat").height
    with pytest.raises(ValueError, match="no per-item detail"):
        reports.run_report(con, "gain_ci", RUN, detail=True)


def test_failed_plans_are_missing_and_partial_seeds_counted(wh):
    con, _ = wh
    data = A.load_run(con, SELF_RUN)
    sd = _row(A.self_direction(data), source="self", mode="concat")
    # items 0..3 and 5 paired (5 on seed 0 only); item 4 lost both plans
    assert (sd["n_items"], sd["n_missing"], sd["missing_failed_plan"], sd["n_partial"]) == (5, 1, 1, 1)
    assert sd["gain_pp"] == pytest.approx(100 / 5) and sd["fixed"] == 1
    vs = _row(A.self_vs_families(data), source="self", mode="concat", versus="baseline")
    assert (vs["n_items"], vs["missing_failed_plan"]) == (5, 1)
    sql = _row(reports.run_report(con, "gain_over_baseline", SELF_RUN), condition="self")
    assert (sql["n"], sql["gain_pp"], sql["missing_failed_plan"], sql["n_partial"]) == (5, 20.0, 1, 1)
    text = "\n".join(reports.run_report(con, "summary", SELF_RUN)["finding"])
    assert "Paired over 5 items; 1 missing (1 failed plan); 1 paired on only some seeds." in text


def test_cli_shows_n_paired_and_missing_in_table_markdown_and_json(wh, tmp_path):
    from flows.cli import app

    _, path = wh
    runner = CliRunner()
    out = runner.invoke(app, ["report", "gain_ci", "-w", str(path), "--run-id", RUN, "-f", "json"])
    assert out.exit_code == 0, out.output
    rows = {r["condition"]: r for r in json.loads(out.stdout)}
    assert rows[DE]["n_paired"] == 4 and rows[DE]["n_missing"] == 3 and rows[DE]["gain_pp"] == 25.0
    assert {"benchmark", "condition", "mode", "accuracy_pct", "gain_pp", "ci_low_pp", "ci_high_pp", "fixed",
            "broken"} <= set(rows[DE])
    out = runner.invoke(app, ["report", "gain_over_baseline", "-w", str(path), "--run-id", RUN, "-f", "json"])
    rows = {r["condition"]: r for r in json.loads(out.stdout)}
    assert {"benchmark", "condition", "mode", "n", "accuracy_pct", "gain_pp"} <= set(rows[DE])
    assert (rows[DE]["n"], rows[DE]["n_missing"], rows[DE]["missing_failed_thought"]) == (4, 3, 2)
    md = runner.invoke(app, ["report", "gain_over_baseline", "-w", str(path), "--run-id", RUN, "-f", "md"]).stdout
    header = md.splitlines()[0]
    assert "n_paired" in header and "n_missing" in header and "missing_failed_thought" in header
    de_line = next(line for line in md.splitlines() if f"| {DE} |" in line)
    cells = [c.strip() for c in de_line.strip("|").split("|")]
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cells[cols.index("n_paired")] == "4" and cells[cols.index("n_missing")] == "3"
    table = runner.invoke(app, ["report", "gain_over_baseline", "-w", str(path), "--run-id", RUN]).stdout
    assert "n_paired" in table  # the narrow terminal table shortens the longer column names
    de_cells = [c.strip() for c in next(line for line in table.splitlines() if "detail_" in line).split("│")]
    assert de_cells[4:10] == ["4", "75.0", "25.0", "50.0", "4", "3"]  # n, accuracy, gain, baseline, paired, missing
    runner.invoke(app, ["report", "summary", "-w", str(path), "--run-id", RUN, "--out", str(tmp_path)])
    summary = (tmp_path / "summary.md").read_text()
    assert "Paired over 4 items; 3 missing (2 failed thought, 1 quarantined)." in summary
