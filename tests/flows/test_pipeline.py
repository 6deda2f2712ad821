"""End to end: g2u_pipeline under Prefect's test harness, with a broken benchmark file mixed in."""
import base64
import io
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from g2u_tasks.config import RunConfig
from g2u_tasks.store.thought_store import ThoughtStore
from tests.flows.conftest import table_counts

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests/fixtures/benchmarks"
DEFAULT_FAMILIES = RunConfig.model_fields["families"].default  # what a config without `families` runs
N_ITEMS = {"DemoShapes": 6, "DemoYesNo": 6, "Broken": 2, "MME": 28, "MMVet": 3}
N_GOOD = sum(N_ITEMS.values())


def _b64_png(colour) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _broken_benchmark(path: Path) -> None:
    pd.DataFrame({
        "index": [0, 1, 2, 3],
        "image": [_b64_png("red"), _b64_png("blue"), base64.b64encode(b"not an image at all" * 8).decode(),
                  _b64_png("green")],
        "question": ["Is it red? Please answer yes or no."] * 4,
        "answer": ["Yes", "No", "Yes", None],
        "category": ["colour"] * 4,
    }).to_csv(path, sep="\t", index=False)


@pytest.fixture(scope="module")
def run_env(tmp_path_factory, prefect_harness, tiny_llava):
    root = tmp_path_factory.mktemp("e2e")
    _broken_benchmark(root / "Broken.tsv")
    cfg = {
        "store": f"file://{root / 'store'}",
        "warehouse": str(root / "wh.duckdb"),
        "benchmarks": [
            {"name": "DemoShapes", "source": str(REPO / "data/demo/DemoShapes.tsv"), "limit": 6},
            {"name": "DemoYesNo", "source": str(REPO / "data/demo/DemoYesNo.tsv"), "limit": 6},
            {"name": "Broken", "source": str(root / "Broken.tsv"), "question_type": "yes_no"},
            {"name": "MME", "source": str(FIX / "MME.tsv")},
            {"name": "MMVet", "source": str(FIX / "MMVet.tsv"), "limit": 3},
        ],
        "understander": {"backend": "transformers", "model": str(tiny_llava), "params": {"max_new_tokens": 4}},
        "batch_size": 8,
    }
    from flows.pipeline import g2u_pipeline

    first = g2u_pipeline(cfg)
    return root, cfg, first


def test_predictions_cover_every_condition(run_env):
    root, cfg, first = run_env
    con = duckdb.connect(cfg["warehouse"], read_only=True)
    rows = con.execute("""SELECT benchmark, condition, mode, count(*) FROM predictions
                          GROUP BY ALL ORDER BY ALL""").fetchall()
    con.close()
    n_items = N_ITEMS
    expected = {(b, "baseline", "baseline", n) for b, n in n_items.items()}
    expected |= {(b, f, m, n) for b, n in n_items.items() for f in DEFAULT_FAMILIES for m in ("concat", "replace")}
    assert set(rows) == expected


def test_one_ok_thought_per_item_and_family(run_env):
    root, cfg, first = run_env
    con = duckdb.connect(cfg["warehouse"], read_only=True)
    per = con.execute("""SELECT benchmark, item_id, family, count(*) FILTER (WHERE status = 'ok') AS ok
                         FROM thoughts GROUP BY ALL""").fetchall()
    con.close()
    assert len(per) == N_GOOD * len(DEFAULT_FAMILIES) and all(r[3] == 1 for r in per)
    assert first["generated"] == N_GOOD * len(DEFAULT_FAMILIES)
    assert first["reused"] == 0 and first["dataset_version"] == 0


def test_broken_rows_quarantined_with_reasons(run_env):
    root, cfg, first = run_env
    con = duckdb.connect(cfg["warehouse"], read_only=True)
    rows = dict(con.execute("SELECT item_id, reason FROM quarantine WHERE benchmark = 'Broken'").fetchall())
    scored = con.execute("SELECT count(DISTINCT item_id) FROM predictions WHERE benchmark = 'Broken'").fetchall()
    con.close()
    assert set(rows) == {"2", "3"}
    assert "Broken/2" in rows["2"] and "image unreadable" in rows["2"] and "cannot identify image" in rows["2"]
    assert "Broken/3" in rows["3"] and "gold answer missing" in rows["3"] and "nan" not in rows["3"]
    assert scored == [(2,)]  # the two good rows were still answered and scored


def test_report_is_printed(run_env):
    root, cfg, first = run_env
    assert "gain_pp" in first["report"] and "DemoShapes" in first["report"]


def test_rerun_reuses_everything_and_duplicates_nothing(run_env):
    root, cfg, first = run_env
    store = ThoughtStore(cfg["store"])
    blobs = sorted((root / "store/thoughts/blobs").rglob("*.png"))
    stamps = {p: p.stat().st_mtime_ns for p in blobs}
    before = table_counts(cfg["warehouse"])

    import yaml
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    from flows.cli import app

    out = CliRunner().invoke(app, ["run", str(root / "cfg.yaml")])
    assert out.exit_code == 0, out.output
    assert f"0 thought(s) generated, {N_GOOD * len(DEFAULT_FAMILIES)} reused" in out.output
    assert {p: p.stat().st_mtime_ns for p in sorted((root / "store/thoughts/blobs").rglob("*.png"))} == stamps
    assert store.version() == 0
    assert table_counts(cfg["warehouse"]) == before


def test_cli_query_and_report(run_env):
    root, cfg, first = run_env
    from flows.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["query", "SELECT count(*) AS n FROM predictions", "-w", cfg["warehouse"], "-f", "json"])
    assert out.exit_code == 0, out.output
    assert f'"n": {N_GOOD * 9}' in out.output  # baseline + 4 families x 2 modes
    out = runner.invoke(app, ["report", "quarantine_summary", "-w", cfg["warehouse"], "-f", "csv"])
    lines = out.output.strip().splitlines()
    assert out.exit_code == 0 and len(lines) == 3 and all(",items,Broken," in ln for ln in lines[1:])
    out = runner.invoke(app, ["report", "--list"])
    assert "gain_over_baseline" in out.output and "fidelity_by_family" in out.output
    out = runner.invoke(app, ["report", "nope", "-w", cfg["warehouse"]])
    assert out.exit_code != 0 and "unknown report 'nope'" in str(out.exception)


HOSTILE_QUERIES = {  # each must be refused by the read-only, sandboxed connection
    "COPY predictions TO '{out}/copied.csv'": "Permission Error",
    "SELECT * FROM read_csv('/etc/passwd')": "Permission Error",
    "SELECT * FROM glob('/root/*')": "Permission Error",
    "INSTALL httpfs": "Permission Error",
    "LOAD httpfs": "Permission Error",
    "ATTACH '{out}/other.duckdb' AS other": "Permission Error",
    "SET enable_external_access = true": "the configuration has been locked",
    "DELETE FROM predictions": "read-only",
}


def test_query_is_read_only_and_reports_work_on_the_same_connection(run_env, tmp_path):
    root, cfg, first = run_env
    from flows.cli import app
    from g2u_tasks.analysis import reports

    runner = CliRunner()
    for sql, says in HOSTILE_QUERIES.items():
        out = runner.invoke(app, ["query", sql.format(out=tmp_path), "-w", cfg["warehouse"]])
        lines = out.output.strip().splitlines()
        assert out.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], \
            (sql, out.output)
    assert list(tmp_path.iterdir()) == []  # nothing written outside the warehouse
    for name in reports.list_reports():  # every report, through the same kind of connection
        out = runner.invoke(app, ["report", name, "-w", cfg["warehouse"], "-f", "json"])
        assert out.exit_code == 0, (name, out.output)


def test_table_headers_fold_rather_than_truncate(run_env):
    root, cfg, first = run_env
    from flows.cli import app

    out = CliRunner().invoke(app, ["report", "gain_over_baseline", "-w", cfg["warehouse"]])
    assert out.exit_code == 0 and "missing_" in out.output
    assert "…" not in out.output  # long names wrap onto the next header line; no letter is cut off


def test_official_metrics_per_condition(run_env):
    root, cfg, first = run_env
    con = duckdb.connect(cfg["warehouse"], read_only=True)
    mme = con.execute("""SELECT condition, mode, value, status, unit FROM metrics
                         WHERE benchmark = 'MME' AND metric = 'perception'""").fetchall()
    mmvet = con.execute("""SELECT DISTINCT status FROM metrics
                           WHERE benchmark = 'MMVet' AND metric = 'Overall'""").fetchall()
    demo = con.execute("SELECT DISTINCT metric FROM metrics WHERE benchmark = 'DemoShapes'").fetchall()
    con.close()
    assert len(mme) == 9 and all(r[3] == "ok" and r[4] == "sum" and 0 <= r[2] <= 2000 for r in mme)
    assert mmvet == [("not_computed",)]  # judge-only metric without a judge: never a zero
    assert sorted(demo) == [("accuracy",), ("unparsed_rate",)]
    from flows.cli import app

    out = CliRunner().invoke(app, ["report", "official_metrics", "-w", cfg["warehouse"], "-f", "csv"])
    assert out.exit_code == 0 and "not computed" in out.output and ",perception," in out.output


def test_self_directed_run_on_the_same_store_records_parse_failures(run_env):
    """prompt_source=self with the tiny random model: plans fail to parse and are recorded, not guessed."""
    root, cfg, first = run_env
    from flows.pipeline import g2u_pipeline

    small = {**cfg, "benchmarks": cfg["benchmarks"][:1], "prompt_source": "self", "plan_max_new_tokens": 12,
             "modes": ["baseline", "replace_gated", "concat_conversation"]}
    out = g2u_pipeline(small)
    assert out["plans_ok"] + out["plans_parse_failed"] == 6 and out["failed"] == out["plans_parse_failed"]
    con = duckdb.connect(cfg["warehouse"], read_only=True)
    plans = con.execute("""SELECT plan_status, count(*) FROM thoughts WHERE prompt_source = 'self'
                           GROUP BY ALL""").fetchall()
    template = con.execute("""SELECT count(*) FROM thoughts WHERE prompt_source = 'template'
                              AND (chosen_family IS DISTINCT FROM family OR plan_status IS NOT NULL)""").fetchall()
    reasons = con.execute("SELECT reason FROM quarantine WHERE run_id = ? AND stage = 'predictions'",
                          [out["run_id"]]).fetchall()
    con.close()
    assert dict(plans).get("parse_failed", 0) == out["plans_parse_failed"] and template == [(0,)]
    assert len(reasons) == out["plans_parse_failed"] and all("plan parse failed" in r[0] for r in reasons)


def test_gated_and_conversation_modes_end_to_end(run_env):
    root, cfg, first = run_env
    from flows.pipeline import g2u_pipeline

    small = {**cfg, "benchmarks": cfg["benchmarks"][:1], "families": ["detail_enhancement", "identity"],
             "modes": ["replace_gated", "concat_conversation"]}
    out = g2u_pipeline(small)
    assert out["generated"] == 0 and out["reused"] == 12
    con = duckdb.connect(cfg["warehouse"], read_only=True)
    rows = con.execute("""SELECT p.mode, p.gate_passed, t.psnr_gated FROM predictions p
                          JOIN thoughts t USING (thought_id) WHERE p.run_id = ?""", [out["run_id"]]).fetchall()
    con.close()
    assert len(rows) == 24 and {r[0] for r in rows} == {"replace_gated", "concat_conversation"}
    assert all(r[1] == (r[2] > 25.0) for r in rows if r[0] == "replace_gated")
    assert all(r[1] is None for r in rows if r[0] == "concat_conversation")
