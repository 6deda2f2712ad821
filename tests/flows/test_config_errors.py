"""Config errors: found before any work, one line `error: …`, exit code 2; `--debug` shows the traceback."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from g2u_tasks.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def config(tmp_path):
    cfg = {"store": f"file://{tmp_path / 'store'}", "warehouse": str(tmp_path / "wh.duckdb"),
           "benchmarks": [{"name": "DemoShapes", "source": str(REPO / "data/demo/DemoShapes.tsv"), "limit": 2}],
           "understander": {"backend": "transformers", "model": str(tmp_path / "models/none")}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


CASES = [  # (--set overrides, what the line says)
    (["benchmarks=[]"], "benchmarks: the list is empty"),
    (["benchmarks.1={name: DemoShapes, source: other.tsv}"], "benchmark name(s) listed twice: DemoShapes"),
    (["benchmarks.0.limit=-1"], "benchmarks.0.limit: Input should be greater than or equal to 0"),
    ([], "understander.model: local model folder not found"),  # before materialisation, not after
    (["benchmarks.5.limit=1"], "benchmarks has 1 entry (indices 0..0), no index 5"),
    (["seeds=[0, 1"], "--set seeds=[0, 1: the value is not valid YAML"),
    (["bogus=1"], "bogus: unknown key (known: store, warehouse"),
    (["executor={kind: ray}"], "executor.kind: Input should be 'local' or 'dask'"),
    (["generator.params.api_key=abc123"], "generator: params.api_key looks like a credential"),
]


@pytest.mark.parametrize("overrides,says", CASES, ids=[c[1][:30] for c in CASES])
def test_config_error_is_one_line_before_any_work(config, overrides, says):
    args = ["run", str(config), *[a for o in overrides for a in ("--set", o)]]
    out = CliRunner().invoke(app, args)
    lines = out.output.strip().splitlines()
    assert out.exit_code == 2, out.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], out.output
    assert "Traceback" not in out.output
    assert not (config.parent / "store").exists() and not (config.parent / "wh.duckdb").exists()


def test_debug_shows_the_traceback(config):
    out = CliRunner().invoke(app, ["--debug", "run", str(config), "--set", "benchmarks=[]"])
    assert out.exit_code != 0 and isinstance(out.exception, ConfigError)
    assert "benchmarks: the list is empty" in str(out.exception)


def test_missing_config_file_and_malformed_yaml(tmp_path):
    out = CliRunner().invoke(app, ["materialise", str(tmp_path / "nope.yaml")])
    assert out.exit_code == 2 and out.output.strip() == f"error: config file not found: {tmp_path / 'nope.yaml'}"
    (tmp_path / "bad.yaml").write_text("benchmarks: [\n")
    out = CliRunner().invoke(app, ["understand", str(tmp_path / "bad.yaml"), "--dataset-version", "0"])
    assert out.exit_code == 2 and "not valid YAML" in out.output and len(out.output.strip().splitlines()) == 1
