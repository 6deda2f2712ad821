"""The demo's positive control, end to end through the pipeline: the trained control model on the
control benchmarks shows the planted design (signs and 95% intervals), and the summary says so."""
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml

from g2u_tasks.analysis import reports

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def control_run(tmp_path_factory, prefect_harness):
    """configs/demo.yaml as shipped (model, families, modes, generator), on its two control benchmarks."""
    root = tmp_path_factory.mktemp("control")
    cfg = yaml.safe_load((REPO / "configs/demo.yaml").read_text())
    cfg.update(store=f"file://{root / 'store'}", warehouse=str(root / "wh.duckdb"))
    cfg["benchmarks"] = [{**b, "source": str(REPO / b["source"])} for b in cfg["benchmarks"]
                         if b["name"].startswith("Control")]
    cfg["understander"]["model"] = str(REPO / cfg["understander"]["model"])
    assert [b["name"] for b in cfg["benchmarks"]] == ["ControlSmallDetail", "ControlColour"]
    from flows.pipeline import g2u_pipeline

    result = g2u_pipeline(cfg)
    con = duckdb.connect(cfg["warehouse"], read_only=True)
    tables = {name: reports.run_report(con, name, result["run_id"])
              for name in ("gain_ci", "family_oracle", "fidelity_gain", "summary")}
    con.close()
    return tables


def _gain(tables, bench: str, condition: str, mode: str) -> dict:
    rows = tables["gain_ci"].filter((pl.col("benchmark") == bench) & (pl.col("condition") == condition)
                                    & (pl.col("mode") == mode) & (pl.col("degrade_kind") == "none"))
    assert rows.height == 1, (bench, condition, mode)
    return rows.row(0, named=True)


def test_detail_enhancement_helps_on_small_details(control_run):
    for mode in ("concat", "replace"):
        row = _gain(control_run, "ControlSmallDetail", "detail_enhancement", mode)
        assert row["baseline_pct"] < 40 and row["accuracy_pct"] > 80  # chance in the original, read once zoomed
        assert row["ci_low_pp"] > 30 and row["p_mcnemar"] < 0.001, row


def test_identity_changes_nothing(control_run):
    for bench in ("ControlSmallDetail", "ControlColour"):
        for mode in ("concat", "replace"):
            row = _gain(control_run, bench, "identity", mode)
            assert row["ci_low_pp"] <= 0 <= row["ci_high_pp"], row


def test_structure_map_hurts_colour_and_context_expansion_cannot_help(control_run):
    row = _gain(control_run, "ControlColour", "structural_visualisation", "replace")
    assert row["ci_high_pp"] < -20, row
    for mode in ("concat", "replace"):
        assert _gain(control_run, "ControlSmallDetail", "context_expansion", mode)["ci_low_pp"] <= 0
        assert _gain(control_run, "ControlColour", "context_expansion", mode)["gain_pp"] <= 0


def test_fidelity_relates_to_gain(control_run):
    fid = control_run["fidelity_gain"].filter(pl.col("family") == "ALL")
    for mode in ("concat", "replace"):
        part = fid.filter(pl.col("mode") == mode).sort("psnr_bin")
        assert part["rho_psnr"][0] > 0 and part["p_rho_psnr"][0] < 0.05, part
        assert part["gain_pp"][-1] > part["gain_pp"][0]  # the highest-fidelity bin gains more than the lowest


def test_oracle_is_at_least_every_fixed_family(control_run):
    fam = control_run["family_oracle"]
    for (bench, mode), part in fam.group_by(["benchmark", "mode"]):
        oracle = part.filter(pl.col("family") == "oracle")["accuracy_pct"][0]
        fixed = part.filter(pl.col("family") != "oracle")["accuracy_pct"]
        assert oracle >= fixed.max(), (bench, mode)


def test_summary_states_the_findings(control_run):
    text = "\n".join(control_run["summary"]["finding"])
    assert "On ControlSmallDetail, detail_enhancement/" in text and "(the largest gain) changes accuracy by +7" in text
    assert "On ControlColour, structural_visualisation/replace (the largest loss)" in text
    assert "The identity control on ControlSmallDetail" in text and "no interval excludes zero" in text
    assert "Fidelity bounds gain (replace): Spearman ρ" in text
