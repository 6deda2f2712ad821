"""Analyses and reports on a synthetic warehouse with planted effects, and on a real end-to-end one.

Planted (see `synthetic_warehouse`): detail_enhancement fixes 30% of baseline-wrong items in concat (more at
higher PSNR), and in replace also breaks 20% of baseline-right ones; context_expansion and identity change
nothing; the self-directed source picks detail_enhancement / context_expansion / identity at 60 / 30 / 10%,
keeps its choice on the second seed for 70% of items (the rest choose again) and fails to parse 5% of plans; degraded detail_enhancement
thoughts (noise, strength s) fix (1 - s) times as often."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from PIL import Image
from typer.testing import CliRunner

from g2u_tasks.analysis import statistics as A
from g2u_tasks.analysis import reports
from g2u_tasks.warehouse import database as warehouse
from g2u_tasks.scoring.metrics import compute_metrics
from g2u_tasks.records import sha256_hex

REPO = Path(__file__).resolve().parents[2]
RUN, SELF_RUN = "synth-run", "synth-self"
BASE_ACC = {"BenchA": 0.5, "BenchB": 0.7}
N_ITEMS = {"BenchA": 400, "BenchB": 300}
FIX, BREAK_REPLACE = 0.3, 0.2
CHOICE = {"detail_enhancement": 0.6, "context_expansion": 0.3, "identity": 0.1}
STABLE, PARSE_FAIL = 0.7, 0.05
STABLE_SHARE = STABLE + (1 - STABLE) * sum(v * v for v in CHOICE.values())  # a fresh draw may repeat the choice
STRENGTHS = (0.25, 0.5, 1.0)
FAMILIES = tuple(CHOICE)
GEN_SECONDS = {"detail_enhancement": 2.0, "context_expansion": 1.0, "identity": 0.01}
MODES = ("concat", "replace")
SEEDS = (0, 1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def planted_gain(bench: str, mode: str, family: str = "detail_enhancement") -> float:
    """Expected gain in pp."""
    if family != "detail_enhancement":
        return 0.0
    wrong = 1 - BASE_ACC[bench]
    return 100 * (FIX * wrong - (BREAK_REPLACE * (1 - wrong) if mode == "replace" else 0.0))


def _exactly(rng, pool: np.ndarray, share: float, weights=None) -> np.ndarray:
    """Indices of exactly round(share * len(pool)) members of pool, drawn without replacement."""
    k = round(share * pool.size)
    p = None if weights is None else weights / weights.sum()
    return rng.choice(pool, size=k, replace=False, p=p) if k else np.array([], dtype=int)


def _plant(seed: int = 7) -> dict:
    """Per-item planted outcomes (numpy arrays per benchmark); shares are planted as exact counts."""
    rng = np.random.default_rng(seed)
    out = {}
    for bench, n in N_ITEMS.items():
        idx = np.arange(n)
        base = np.zeros(n, bool)
        base[_exactly(rng, idx, BASE_ACC[bench])] = True
        psnr = rng.uniform(15, 35, n)
        fix = np.zeros(n, bool)
        fix[_exactly(rng, idx[~base], FIX, weights=psnr[~base] - 14)] = True  # higher PSNR fixes more often
        brk = np.zeros(n, bool)
        brk[_exactly(rng, idx[base], BREAK_REPLACE)] = True
        fix_order = rng.permutation(idx[fix])  # degraded at strength s: the first (1 - s) of these stay fixed
        first, redraw = _choices(rng, n), _choices(rng, n)
        keep = np.zeros(n, bool)
        keep[_exactly(rng, idx, STABLE)] = True  # the rest choose again, independently
        failed = np.zeros((2, n), bool)
        for s in SEEDS:
            failed[s, _exactly(rng, idx, PARSE_FAIL)] = True
        out[bench] = {"base": base, "psnr": psnr, "fix": fix, "break": brk, "fix_order": fix_order,
                      "choice": [first, np.where(keep, first, redraw)], "parse_failed": failed}
    return out


def _choices(rng, n: int) -> np.ndarray:
    """Family indices in exactly the CHOICE shares, shuffled."""
    counts = [round(v * n) for v in CHOICE.values()]
    counts[0] += n - sum(counts)
    return rng.permutation(np.repeat(np.arange(len(CHOICE)), counts))


def _fixed_when_degraded(p: dict, strength: float) -> set[int]:
    order = p["fix_order"]
    return set(order[: round((1 - strength) * order.size)].tolist())


def _family_right(p: dict, family: str, mode: str) -> np.ndarray:
    if family != "detail_enhancement":
        return p["base"].copy()
    right = p["base"] | p["fix"]
    return right & ~p["break"] if mode == "replace" else right


def _tid(*parts) -> str:
    return sha256_hex("/".join(map(str, parts)))


def synthetic_tables(notes: str | None = None) -> tuple[dict, dict]:
    """Two runs by one understander, as the pipeline makes them (a run has one prompt source): RUN with baseline,
    the fixed families and degraded thoughts; SELF_RUN with baseline and the self-directed thoughts, whose
    parse-failed plans are failed thoughts with a quarantine row and no prediction."""
    plant = _plant()
    items, thoughts, preds, quarantine = [], [], [], []

    def pred(run, bench, i, cond, mode, seed, tid, ok):
        preds.append({"run_id": run, "benchmark": bench, "item_id": str(i), "condition": cond, "mode": mode,
                      "seed": seed, "thought_id": tid, "understander": "synthetic", "prompt": "p",
                      "raw_output": "A" if ok else "B", "extracted_answer": "A" if ok else "B", "answer": "A",
                      "correct": bool(ok)})

    def thought(bench, i, family, seed, psnr, source="template", chosen=None, status=None, params=None):
        tid = _tid(bench, i, family, seed, json.dumps(params or {}))
        failed = status == "parse_failed"
        row = {"thought_id": tid, "benchmark": bench, "item_id": str(i), "image_sha256": _tid(bench, i),
               "family": family, "family_version": "v1", "prompt": "edit", "prompt_source": source,
               "generator": "synthetic", "generator_params": json.dumps(params or {}), "seed": seed,
               "psnr": None if failed else psnr, "ssim": None if failed else min(psnr / 100, 1.0),
               "gen_seconds": None if failed else GEN_SECONDS.get(chosen or family, 1.0),
               "status": "failed" if failed else "ok", "chosen_family": None if failed else chosen or family,
               "plan_status": status, "plan_raw": "{}" if status else None,
               "plan_decoding": "sampled" if status else None}
        thoughts.append(row)
        return tid

    for bench, p in plant.items():
        n = N_ITEMS[bench]
        other_psnr = np.random.default_rng(11).uniform(15, 35, n)
        degraded = {s: _fixed_when_degraded(p, s) for s in STRENGTHS}
        for i in range(n):
            items.append({"benchmark": bench, "item_id": str(i), "question": "q?", "options": "{}", "answer": "A",
                          "category": "cat1" if i % 2 else "cat2", "question_type": "open",
                          "image_sha256": _tid(bench, i), "n_images": 1, "extra": "{}"})
            for run in (RUN, SELF_RUN):
                pred(run, bench, i, "baseline", "baseline", None, None, p["base"][i])
            psnr = {"detail_enhancement": p["psnr"][i], "context_expansion": other_psnr[i], "identity": 100.0}
            for seed in SEEDS:
                tids = {f: thought(bench, i, f, seed, psnr[f]) for f in FAMILIES}
                chosen = FAMILIES[p["choice"][seed][i]]
                failed = bool(p["parse_failed"][seed][i])
                self_tid = thought(bench, i, "self", seed, psnr[chosen], "self", chosen,
                                   "parse_failed" if failed else "ok")
                if failed:
                    quarantine.append({"run_id": SELF_RUN, "stage": "predictions", "benchmark": bench,
                                       "item_id": str(i), "reason": "plan parse failed",
                                       "record": json.dumps({"thought_id": self_tid, "family": "self"})})
                for mode in MODES:
                    for f in FAMILIES:
                        pred(RUN, bench, i, f, mode, seed, tids[f], _family_right(p, f, mode)[i])
                    if not failed:
                        pred(SELF_RUN, bench, i, "self", mode, seed, self_tid, _family_right(p, chosen, mode)[i])
            if bench == "BenchA":  # degraded detail_enhancement thoughts, concat only, one seed
                for s, fixed in degraded.items():
                    params = {"degrade": {"kind": "noise", "strength": s}}
                    tid = thought(bench, i, "detail_enhancement", 0, p["psnr"][i] - 10 * s, params=params)
                    pred(RUN, bench, i, "detail_enhancement", "concat", 0, tid, p["base"][i] or i in fixed)
    predictions = pl.DataFrame(preds)
    metrics = pl.from_arrow(compute_metrics(predictions))
    official = metrics.filter(pl.col("metric") == "accuracy").with_columns(
        pl.lit("Overall").alias("metric"),
        pl.when(pl.col("benchmark") == "BenchA").then(pl.col("value")).alias("value"),
        pl.when(pl.col("benchmark") == "BenchA").then(pl.lit("ok")).otherwise(pl.lit("not_computed")).alias("status"))
    runs = [{"run_id": run, "dataset_version": 3, "generator": "synthetic", "understander": "synthetic",
             "notes": notes, "n_items": sum(N_ITEMS.values()), "status": "completed",
             "finished_at": datetime(2026, 1, day, tzinfo=timezone.utc)}
            for run, day in ((RUN, 1), (SELF_RUN, 2))]
    tables = {"items": items, "thoughts": thoughts, "predictions": predictions, "runs": runs,
              "metrics": pl.concat([metrics, official.select(metrics.columns)]), "quarantine": quarantine}
    return tables, {"plant": plant}


def _arrow(name: str, rows) -> pa.Table:
    """Rows in the table's current schema (columns it lacks are null, ones it does not know are dropped)."""
    rows = rows.to_dicts() if isinstance(rows, pl.DataFrame) else rows
    return pa.Table.from_pylist(rows, schema=warehouse.table_schema(name))


def load_synthetic(path: Path, notes: str | None = None) -> dict:
    tables, extra = synthetic_tables(notes)
    arrow = {name: _arrow(name, rows) for name, rows in tables.items()}
    con = warehouse.connect(path)
    warehouse.load(con, arrow)
    con.close()
    return extra


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "w.duckdb"
    extra = load_synthetic(path, notes="random weights: numbers are not meaningful")
    con = warehouse.connect(path, read_only=True)
    yield con, A.load_run(con, RUN), extra["plant"], path
    con.close()


def _row(frame: pl.DataFrame, **where) -> dict:
    hit = frame.filter(pl.all_horizontal(pl.col(k) == v for k, v in where.items()))
    assert hit.height == 1, (where, hit)
    return hit.row(0, named=True)


def _covers(row: dict, planted: float) -> bool:
    return row["ci_low_pp"] <= planted <= row["ci_high_pp"]


# ---------------------------------------------------------------- statistics

def test_bootstrap_matches_index_resampling_and_is_reproducible():
    rng = np.random.default_rng(0)
    diffs = rng.choice([-1.0, 0.0, 0.5, 1.0], size=300, p=[0.1, 0.6, 0.1, 0.2])
    ci = A.bootstrap_ci(diffs)
    assert ci == A.bootstrap_ci(diffs)  # fixed seed
    naive = diffs[rng.integers(0, diffs.size, (20000, diffs.size))].mean(axis=1)
    assert np.allclose(ci, np.quantile(naive, [0.025, 0.975]), atol=0.01)
    assert A.bootstrap_ci([0.0] * 10) == (0.0, 0.0)
    assert all(np.isnan(A.bootstrap_ci([])))


def test_mcnemar_small_and_large():
    from scipy.stats import binomtest, chi2

    assert A.mcnemar_p(0, 0) == 1.0
    assert A.mcnemar_p(5, 0) == pytest.approx(0.0625)  # exact: 2 * 0.5**5
    assert A.mcnemar_p(7, 3) == pytest.approx(binomtest(3, 10, 0.5).pvalue)
    assert A.mcnemar_p(60, 30) == pytest.approx(chi2.sf((30 - 1) ** 2 / 90, 1))  # corrected chi-square
    assert A.mcnemar_p(200, 200) == pytest.approx(chi2.sf(1 / 400, 1))


# ---------------------------------------------------------------- planted effects

def test_gain_ci_recovers_planted_gains(synth):
    con, data, plant, _ = synth
    g = A.gain_ci(data)
    assert set(g["benchmark"]) == {"BenchA", "BenchB", "ALL"}
    for bench in ("BenchA", "BenchB"):
        for mode in MODES:
            row = _row(g, benchmark=bench, condition="detail_enhancement", mode=mode, degrade_kind="none")
            planted = planted_gain(bench, mode)
            assert abs(row["gain_pp"] - planted) < 5 and _covers(row, planted), row
            p = plant[bench]
            assert row["fixed"] == int(p["fix"].sum())
            assert row["broken"] == (int((p["break"]).sum()) if mode == "replace" else 0)
            assert row["n_items"] == N_ITEMS[bench] and (row["p_mcnemar"] < 1e-3 or mode == "replace")
            for family in ("context_expansion", "identity"):  # identity control in every gain table
                null = _row(g, benchmark=bench, condition=family, mode=mode)
                assert null["gain_pp"] == 0 and null["ci_low_pp"] == null["ci_high_pp"] == 0
                assert null["p_mcnemar"] == 1.0 and null["fixed"] == null["broken"] == 0
        assert abs(_row(g, benchmark=bench, condition="detail_enhancement", mode="concat",
                        degrade_kind="none")["baseline_pct"] - 100 * plant[bench]["base"].mean()) < 1e-9
    a = _row(g, benchmark="BenchA", condition="identity", mode="concat")
    b = _row(g, benchmark="BenchB", condition="identity", mode="concat")
    assert a["official_metric"] == "Overall" and float(a["official_value"]) == pytest.approx(a["accuracy_pct"] / 100,
                                                                                            abs=1e-4)
    assert a["official_gain"] == 0 and b["official_value"] == "not computed" and b["official_gain"] is None
    assert (g["n_missing"] == 0).all() and (g["n_paired"] == g["n_items"]).all()  # nothing failed in this run


def test_gain_over_baseline_sql_is_gain_ci_on_paired_items(synth):
    con, data, plant, _ = synth
    g = A.gain_ci(data).filter((pl.col("benchmark") != "ALL") & (pl.col("degrade_kind") == "none"))
    sql = reports.run_report(con, "gain_over_baseline", RUN).filter(pl.col("condition") != "baseline")
    joined = sql.join(g, on=["benchmark", "condition", "mode"], suffix="_py")
    assert joined.height == sql.height == g.height
    for col in ("accuracy_pct", "gain_pp", "baseline_pct", "n_paired", "n_missing"):
        assert (joined[col] == joined[f"{col}_py"]).all(), col
    assert (joined["n"] == joined["n_items"]).all()


def test_degrade_curve_falls_with_strength(synth):
    con, data, plant, _ = synth
    g = A.gain_ci(data)
    curve = A.tidy(A.degrade_curve(data)).filter(pl.col("benchmark") == "BenchA")
    assert curve["degrade_strength"].to_list() == [0.0, *STRENGTHS]
    gains = curve["gain_pp"].to_list()
    assert gains == sorted(gains, reverse=True) and gains[-1] == 0
    for row in curve.iter_rows(named=True):
        assert _covers(row, planted_gain("BenchA", "concat") * (1 - row["degrade_strength"])), row
    assert g.filter((pl.col("degrade_kind") == "noise") & (pl.col("benchmark") == "BenchA")).height == len(STRENGTHS)


def test_fidelity_relation_and_sql_bins_agree(synth):
    con, data, plant, _ = synth
    fid = A.fidelity_gain(data)
    pooled = fid.filter((pl.col("family") == "ALL") & (pl.col("mode") == "concat")).sort("psnr_bin")
    assert pooled["psnr_bin"].to_list() == [1, 2, 3, 4]
    assert pooled["rho_psnr"][0] > 0.1 and pooled["p_rho_psnr"][0] < 1e-3
    de = fid.filter((pl.col("family") == "detail_enhancement") & (pl.col("mode") == "concat")).sort("psnr_bin")
    assert de["gain_pp"][-1] > de["gain_pp"][0] + 10 and de["rho_psnr"][0] > 0.2
    assert fid.filter(pl.col("family") == "identity")["psnr_bin"].null_count() == 2  # reference rows, one per mode
    assert fid.filter((pl.col("family") == "context_expansion"))["rho_psnr"].null_count() > 0  # constant gain
    sql = reports.run_report(con, "fidelity_bins", RUN).filter(pl.col("mode") == "concat").sort("psnr_bin")
    assert sql["n_thoughts"].to_list() == pooled["n_thoughts"].to_list()
    assert sql["gain_pp"].to_list() == pooled["gain_pp"].to_list()


def test_families_oracle_and_cost(synth):
    con, data, plant, _ = synth
    fo = A.family_oracle(data)
    for bench in ("BenchA", "BenchB"):
        p = plant[bench]
        rows = fo.filter((pl.col("benchmark") == bench) & (pl.col("mode") == "concat"))
        assert rows["family"][0] == "detail_enhancement" and rows["family"][-1] == "oracle"
        oracle = _row(rows, family="oracle")
        assert oracle["accuracy_pct"] == pytest.approx(100 * (p["base"] | p["fix"]).mean(), abs=0.01)
        assert oracle["oracle_share_pct"] == pytest.approx(oracle["accuracy_pct"], abs=0.01)
        de = _row(rows, family="detail_enhancement")
        assert de["oracle_share_pct"] == pytest.approx(oracle["accuracy_pct"], abs=0.01)
        assert de["seconds_per_pp"] == pytest.approx(2.0 / de["gain_pp"], abs=2e-3)
        assert _row(rows, family="context_expansion")["seconds_per_pp"] is None  # no gain, no cost per point
        assert _row(rows, family="identity")["n_items"] == N_ITEMS[bench]
    # the per-category gains, weighted by their items, pool back to the benchmark's paired gain
    by_cat = reports.run_report(con, "family_gain_by_category", RUN)
    pooled = by_cat.group_by("benchmark", "family", "mode").agg(
        (pl.col("gain_pp") * pl.col("n_items")).sum().alias("w"), pl.col("n_items").sum().alias("n"))
    gains = A.gain_ci(data).filter(pl.col("degrade_kind") == "none")
    for row in pooled.iter_rows(named=True):
        g = _row(gains, benchmark=row["benchmark"], condition=row["family"], mode=row["mode"])
        assert row["n"] == g["n_paired"] and row["w"] / row["n"] == pytest.approx(g["gain_pp"], abs=0.05)
    per_item = reports.run_report(con, "oracle_family", RUN, detail=True).filter(
        (pl.col("benchmark") == "BenchA") & (pl.col("mode") == "concat"))
    assert per_item.height == N_ITEMS["BenchA"]
    assert (per_item["oracle_score"] > 0).mean() == pytest.approx((plant["BenchA"]["base"] | plant["BenchA"]["fix"]).mean())


def test_flips_sql_matches_python(synth):
    con, data, plant, _ = synth
    flips = reports.run_report(con, "flips", RUN)
    g = A.gain_ci(data).filter(pl.col("benchmark") != "ALL")
    joined = flips.join(g, on=["benchmark", "condition", "mode", "degrade_kind", "degrade_strength"],
                        nulls_equal=True)
    assert joined.height == g.height == flips.height
    assert (joined["fixed"] == joined["fixed_right"]).all() and (joined["broken"] == joined["broken_right"]).all()


def _parsed_choices(p: dict, i: int) -> list[str]:
    return [FAMILIES[p["choice"][s][i]] for s in SEEDS if not p["parse_failed"][s][i]]


def test_self_direction_recovers_plant(synth):
    con, _, plant, _ = synth
    data = A.load_run(con, SELF_RUN)
    assert data.reference is not None and data.reference.run_id == RUN  # fixed families live in the template run
    sd = A.self_direction(data)
    choices = A.choice_distribution(data).filter(pl.col("benchmark") == "ALL")
    assert _row(choices, chosen_family="(none)")["share_pct"] == pytest.approx(100 * PARSE_FAIL)
    for family, share in CHOICE.items():  # shares among parsed plans
        assert abs(_row(choices, chosen_family=family)["share_pct"] / (1 - PARSE_FAIL) - 100 * share) < 4
    n = sum(N_ITEMS.values())
    parsed = {b: [_parsed_choices(plant[b], i) for i in range(N_ITEMS[b])] for b in N_ITEMS}
    multi = [c for b in N_ITEMS for c in parsed[b] if len(c) == 2]
    for mode in MODES:
        row = _row(sd, benchmark="ALL", source="self", mode=mode)
        assert row["n_choices"] == 2 * n and row["parse_failed_pct"] == pytest.approx(100 * PARSE_FAIL)
        assert row["reference_run"] == RUN and row["decoding"] == "sampled"
        assert row["n_items_multi_seed"] == len(multi)
        assert row["seed_stable_pct"] == pytest.approx(100 * np.mean([c[0] == c[1] for c in multi]), abs=0.01)
        assert abs(row["seed_stable_pct"] - 100 * STABLE_SHARE) < 4
        assert row["pairwise_agreement_pct"] == pytest.approx(row["seed_stable_pct"], abs=0.01)  # two seeds
        assert 0.3 < row["fleiss_kappa"] < 0.8 and row["top_choice"] == "detail_enhancement"
        # agreement from the plant: items no family gets right and unparsed plans are left out
        shares = []
        for b in N_ITEMS:
            for i, chosen in enumerate(parsed[b]):
                oracle = {f for f in FAMILIES if _family_right(plant[b], f, mode)[i]}
                if oracle and chosen:
                    shares.append(np.mean([c in oracle for c in chosen]))
        assert row["n_items_with_oracle"] == len(shares)
        assert row["oracle_agreement_pct"] == pytest.approx(100 * np.mean(shares), abs=0.01)
        assert row["n_items"] == sum(bool(c) for b in N_ITEMS for c in parsed[b])
        # an item whose plans all failed is missing (failed plan); one with a failed seed is paired on the other
        assert row["missing_failed_plan"] == row["n_missing"] == sum(not c for b in N_ITEMS for c in parsed[b])
        assert row["n_partial"] == sum(len(c) == 1 for b in N_ITEMS for c in parsed[b]) > 0
    svf = A.self_vs_families(data)
    for bench in ("BenchA", "BenchB"):
        vs_base = _row(svf, benchmark=bench, source="self", mode="concat", versus="baseline")
        vs_de = _row(svf, benchmark=bench, source="self", mode="concat", versus="detail_enhancement")
        planted = planted_gain(bench, "concat")
        assert _covers(vs_base, CHOICE["detail_enhancement"] * planted), vs_base
        assert _covers(vs_de, -(1 - CHOICE["detail_enhancement"]) * planted), vs_de
        assert _row(svf, benchmark=bench, source="self", mode="concat", versus="oracle")["gain_pp"] <= 0
    assert A.self_direction(A.load_run(con, RUN)).is_empty()  # the template run has no plans


# ---------------------------------------------------------------- reports, plots, summary

def _is_png(path: Path) -> bool:
    with open(path, "rb") as fh:
        ok = fh.read(8) == PNG_MAGIC
    Image.open(path).verify()
    return ok


def test_every_report_renders_in_every_format(synth):
    con, data, plant, _ = synth
    names = reports.list_reports()
    assert set(reports.PYTHON_REPORTS) <= set(names) and "gain_over_baseline" in names
    for run in (RUN, SELF_RUN):
        for name in names:
            frame = reports.run_report(con, name, run)
            assert isinstance(frame, pl.DataFrame)
            for fmt in ("md", "csv", "json"):
                text = reports.render(frame, fmt)
                if fmt == "json":
                    json.loads(text)  # valid JSON: no NaN
    assert reports.run_report(con, "gain_ci").equals(reports.run_report(con, "gain_ci", SELF_RUN))  # latest run
    choices = reports.run_report(con, "self_direction_choices", SELF_RUN)
    assert choices.filter(pl.col("chosen_family") == "(none)")["parse_failed"].sum() == sum(
        round(PARSE_FAIL * n) for n in N_ITEMS.values()) * len(SEEDS)


def test_write_report_writes_tables_and_valid_pngs(synth, tmp_path):
    con, data, plant, _ = synth
    expected = {"gain_ci": {"gain_ci.png", "degrade_curve.png"}, "fidelity_gain": {"fidelity_gain.png"},
                "family_oracle": {"family_oracle.png"}, "self_direction": {"self_direction_choices.png"},
                "self_vs_families": {"self_vs_families.png"}, "flips": set()}
    for name, pngs in expected.items():
        run = SELF_RUN if name.startswith("self") else RUN
        frame, paths = reports.write_report(con, name, tmp_path / name, run)
        names = {p.name for p in paths}
        assert {f"{name}.md", f"{name}.csv", f"{name}.json"} <= names and pngs <= names
        assert all(_is_png(p) for p in paths if p.suffix == ".png")
        assert pl.read_csv(tmp_path / name / f"{name}.csv").height == frame.height


def test_summary_states_planted_findings(synth, tmp_path):
    con, data, plant, _ = synth
    frame, paths = reports.write_report(con, "summary", tmp_path, RUN)
    text = (tmp_path / "summary.md").read_text()
    g = A.gain_ci(data)
    best = _row(g, benchmark="BenchA", condition="detail_enhancement", mode="concat", degrade_kind="none")
    assert (f"On BenchA, detail_enhancement/concat (the largest gain) changes accuracy by {best['gain_pp']:+.1f} pp "
            f"[95% CI {best['ci_low_pp']:+.1f}, {best['ci_high_pp']:+.1f}]") in text
    assert f"fixing {best['fixed']} and breaking 0 items" in text and "McNemar p < 0.001" in text
    assert "random weights" in text and "Caution" in text
    assert "The identity control on BenchA: concat +0.0 pp [95% CI +0.0, +0.0] (p = 1.00)" in text
    assert "no interval excludes zero" in text
    rho = _row(A.fidelity_gain(data), mode="concat", family="ALL", psnr_bin=1)["rho_psnr"]
    assert f"Fidelity bounds gain (concat): Spearman ρ = {rho:.2f} (p < 0.001)" in text
    assert "Best edit family on BenchA: detail_enhancement/concat" in text
    assert "Degrading detail_enhancement thoughts on BenchA (noise, concat)" in text
    self_data = A.load_run(con, SELF_RUN)
    sd = _row(A.self_direction(self_data), benchmark="ALL", source="self", mode="concat")
    _, self_paths = reports.write_report(con, "summary", tmp_path / "self", SELF_RUN)
    self_text = (tmp_path / "self/summary.md").read_text()
    assert "self_direction_choices.png" in {p.name for p in self_paths}
    assert f"agrees with the oracle family on {sd['oracle_agreement_pct']:.0f}% (concat)" in self_text
    assert f"stable across seeds on {sd['seed_stable_pct']:.0f}%" in self_text
    assert f"{100 * PARSE_FAIL:.1f}% of plans failed to parse. Fixed families and the oracle come from run {RUN}" \
        in self_text
    assert "self/replace changes accuracy by" in self_text and "The interval includes zero" in self_text
    assert {"gain_ci.png", "fidelity_gain.png", "family_oracle.png", "degrade_curve.png"} <= {p.name for p in paths}
    assert "![gain_ci](gain_ci.png)" in text and frame.columns == ["topic", "finding"]


def test_summary_cites_the_intervals_it_draws(synth):
    """The summary bootstraps only the intervals its sentences cite: the same sentences as with every interval."""
    from g2u_tasks.analysis import summary as S

    con, data, _, _ = synth
    for run in (data, A.load_run(con, SELF_RUN)):
        gains = A.gain_table(run)
        every = (S.run_findings(run) + S.gain_findings(A.tidy(gains)) + S.family_findings(A.family_oracle(run))
                 + S.fidelity_findings(A.fidelity_gain(run)) + S.degrade_findings(A.tidy(A.degrade_curve(run, gains)))
                 + S.self_findings(A.self_direction(run), A.self_vs_families(run)))
        assert S.findings(run).rows() == every
    cited = A.gain_table(data, S.CITED_GAINS)
    drawn = cited.filter(pl.col("ci_low_pp").is_not_nan())
    assert 0 < drawn.height < cited.filter(pl.col("n_items") > 0).height  # some intervals are left undrawn
    assert set(drawn["condition"]) >= {"identity", "detail_enhancement"} and (drawn["degrade_kind"] == "noise").any()
    full = A.gain_table(data).join(drawn.select(*A.VARIANT), on=A.VARIANT, how="semi", nulls_equal=True)
    assert drawn.sort(A.VARIANT).select("ci_low_pp", "ci_high_pp").equals(
        full.sort(A.VARIANT).select("ci_low_pp", "ci_high_pp"))


def test_small_samples_and_missing_plan_columns_are_honest(tmp_path):
    """A warehouse from before the self-direction columns, with 6 items: reports run, the summary says 'pilot'."""
    preds = pl.DataFrame([
        {"run_id": "tiny", "benchmark": "B", "item_id": str(i), "condition": c, "mode": m, "seed": s,
         "thought_id": t, "understander": "u", "prompt": "p", "raw_output": "x", "extracted_answer": "x",
         "answer": "x", "correct": ok}
        for i in range(6)
        for c, m, s, t, ok in (("baseline", "baseline", None, None, i < 3), ("identity", "concat", 0, f"t{i}", i < 4))
    ])
    thoughts = pa.Table.from_pylist([{"thought_id": f"t{i}", "benchmark": "B", "item_id": str(i), "family": "identity",
                                      "prompt_source": "template", "generator_params": "{}", "psnr": 100.0,
                                      "ssim": 1.0, "gen_seconds": 0.1, "status": "ok"} for i in range(6)],
                                    schema=warehouse.table_schema("thoughts"))
    con = warehouse.connect(tmp_path / "w.duckdb")
    warehouse.load(con, {"predictions": _arrow("predictions", preds), "thoughts": thoughts,
                         "metrics": compute_metrics(preds), "runs": _arrow("runs", [{"run_id": "tiny", "n_items": 6}])})
    for name in reports.list_reports():
        reports.run_report(con, name, "tiny")
    g = _row(reports.run_report(con, "gain_ci"), condition="identity")
    assert g["gain_pp"] == pytest.approx(16.67) and g["fixed"] == 1 and g["p_mcnemar"] == 1.0
    text = "\n".join(reports.run_report(con, "summary", "tiny")["finding"])
    assert "Only 6 items: a pilot number." in text and "no interval excludes zero" in text
    assert reports.run_report(con, "self_direction", "tiny").is_empty()
    con.close()
    empty = warehouse.connect(tmp_path / "empty.duckdb")
    for name in reports.list_reports():
        assert reports.run_report(empty, name).is_empty() or name == "summary"
    empty.close()


def test_cli_report_out_and_list(synth, tmp_path):
    con, data, plant, path = synth
    from flows.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["report", "gain_ci", "-w", str(path), "-f", "json", "--out", str(tmp_path / "g")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "g/gain_ci.png").exists() and (tmp_path / "g/gain_ci.csv").exists()
    out = runner.invoke(app, ["report", "summary", "-w", str(path), "--out", str(tmp_path / "s")])
    assert out.exit_code == 0, out.output
    assert "Fidelity bounds gain" in (tmp_path / "s/summary.md").read_text()
    out = runner.invoke(app, ["report", "--list", "-f", "csv"])
    assert all(n in out.output for n in ("gain_ci", "fidelity_gain", "family_oracle", "self_direction", "flips"))


# ---------------------------------------------------------------- a real warehouse

def _run_plain(cfg) -> str:
    """One run through the core's stage sequences in this process (no Prefect); returns its run id."""
    from g2u_tasks.thoughts.stage import materialise_thoughts
    from g2u_tasks.understanding.stage import run_understanding
    from g2u_tasks.warehouse.stage import load_run

    m = materialise_thoughts(cfg)
    run_id = run_understanding(cfg, m["dataset_version"], m)
    load_run(cfg, run_id, m["dataset_version"])
    return run_id


@pytest.fixture(scope="module")
def real_warehouse(tmp_path_factory, tiny_llava):
    """A template run over three benchmarks, then a self-directed run on one (the tiny random model's plans fail to
    parse): reference thoughts, the tiny understander, Great Expectations, the warehouse load."""
    from g2u_tasks.config import RunConfig

    root = tmp_path_factory.mktemp("real")
    fix = REPO / "tests/fixtures/benchmarks"
    base = {
        "store": f"file://{root / 'store'}", "warehouse": str(root / "wh.duckdb"), "seeds": [0, 1],
        "benchmarks": [{"name": "DemoShapes", "source": str(REPO / "data/demo/DemoShapes.tsv"), "limit": 4},
                       {"name": "MME", "source": str(fix / "MME.tsv"), "limit": 6},
                       {"name": "MMVet", "source": str(fix / "MMVet.tsv"), "limit": 2}],
        "understander": {"backend": "transformers", "model": str(tiny_llava), "params": {"max_new_tokens": 4}},
        "batch_size": 32,
    }
    template = _run_plain(RunConfig.model_validate(base))
    own = _run_plain(RunConfig.model_validate({**base, "benchmarks": base["benchmarks"][:1], "prompt_source": "self",
                                               "plan_max_new_tokens": 12}))
    return base["warehouse"], template, own


@pytest.mark.slow  # builds the tiny model (no Prefect)
def test_every_report_runs_on_a_real_warehouse(real_warehouse, tmp_path):
    path, run_id, self_run = real_warehouse
    con = warehouse.connect(path, read_only=True)
    try:
        for run in (run_id, self_run):
            for name in reports.list_reports():
                frame = reports.run_report(con, name, run)
                for fmt in ("md", "csv", "json"):
                    reports.render(frame, fmt)
        sd = reports.run_report(con, "self_direction", self_run)
        assert sd.height and (sd["n_choices"] == 8).all() and (sd["reference_run"] == run_id).all()
        failed = sd["parse_failed_pct"][0]
        choices = reports.run_report(con, "self_direction_choices", self_run)
        assert choices["n_choices"].sum() == 8 and choices["parse_failed"].sum() == round(failed * 8 / 100)
        g = reports.run_report(con, "gain_ci", run_id)
        assert {"identity", "detail_enhancement"} <= set(g["condition"]) and "ALL" in set(g["benchmark"])
        mme = g.filter((pl.col("benchmark") == "MME") & (pl.col("condition") == "identity"))
        assert set(mme["official_metric"]) == {"perception"}
        mmvet = g.filter(pl.col("benchmark") == "MMVet")
        assert set(mmvet["official_value"]) == {"not computed"}
        frame, paths = reports.write_report(con, "summary", tmp_path, run_id)
    finally:
        con.close()
    text = (tmp_path / "summary.md").read_text()
    assert "random weights" in text and "identity control" in text
    con = warehouse.connect(path, read_only=True)
    try:
        reports.write_report(con, "summary", tmp_path / "self", self_run)
    finally:
        con.close()
    self_text = (tmp_path / "self/summary.md").read_text()
    failed = sd["parse_failed_pct"][0]
    assert ("none of the model's 8 plans (self) parsed" if failed == 100 else "of plans failed to parse") in self_text
    assert all(_is_png(p) for p in paths if p.suffix == ".png") and any(p.suffix == ".png" for p in paths)
