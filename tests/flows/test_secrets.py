"""A canary secret in every config field that could carry it is refused, or, where a run needs it
(an HTTP header in storage_options), reaches no file the run leaves: store, manifest, release,
warehouse, Prefect's database and result storage, logs, CLI output. Failed flow runs leave no pickle."""
from __future__ import annotations

import json
import secrets
import subprocess

import duckdb
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.flows.conftest import G2U, cli_env, small_config

CANARY = f"G2UCANARY{secrets.token_hex(8)}"
TOKEN = f"Bearer {CANARY}"

REFUSED = [  # fields that end up in thought keys, the manifest, releases or run records: refused
    "generator.params.api_key=" + CANARY,
    "generator.params.note=sk-" + CANARY,
    "understander.params.headers={Authorization: '" + TOKEN + "'}",
    "understander.params.hf_token=" + CANARY,
    "similarity_model={backend: transformers, model: m, params: {token: " + CANARY + "}}",
    "planner={backend: openai, model: m, params: {api_key: " + CANARY + "}}",
    "judge={base_url: 'http://user:" + CANARY + "@127.0.0.1:9/v1'}",
    "judge={base_url: 'http://127.0.0.1:9/v1', api_key_env: 'sk-" + CANARY + "'}",
    "benchmarks.0.source=https://example.org/x.tsv?X-Amz-Signature=" + CANARY,
    "storage_options.secret=" + CANARY,
    "storage_options.aws_session_token=" + CANARY,
]


@pytest.mark.parametrize("override", REFUSED, ids=[o.split("=", 1)[0] for o in REFUSED])
def test_secret_in_a_recorded_field_is_refused(tmp_path, override):
    path = small_config(tmp_path, tmp_path / "no-model-needed")
    out = CliRunner().invoke(app, ["run", str(path), "--set", override])
    assert out.exit_code == 2 and out.output.startswith("error: "), out.output
    assert CANARY not in out.output and not (tmp_path / "store").exists()


def _files_with(root, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.slow
def test_header_secret_reaches_no_record_and_failures_leave_no_pickle(tmp_path, tiny_llava):
    opts = {"headers": {"Authorization": TOKEN, "X-Trace": "a8Fj2kLm9Qp4Rs7Tv1Wx3Yz5" + CANARY[-8:]}}
    path = small_config(tmp_path, tiny_llava, storage_options=opts)
    env = cli_env(G2U_KEEP_PREFECT_HOME="1")
    outputs = []

    def g2u(*args, ok=True):
        out = subprocess.run([*G2U, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
        outputs.append(out.stdout + out.stderr)
        assert (out.returncode == 0) == ok, out.stdout[-3000:] + out.stderr[-3000:]
        return out

    g2u("run", str(path))
    g2u("dataset", "publish", "0", "--name", "rel", "--config", str(path))
    g2u("query", "SELECT config_json FROM runs", "-w", str(tmp_path / "wh.duckdb"), "-f", "json")
    # a failing run: the benchmark file is gone once the flows have started
    failing = g2u("run", str(path), "--set", f"benchmarks.0.source={tmp_path / 'gone.tsv'}", ok=False)
    assert "gone.tsv" in failing.stdout + failing.stderr

    (tmp_path / "cli-output.txt").write_text("\n".join(outputs))
    homes = sorted((tmp_path / ".g2u/prefect").iterdir())
    assert len(homes) == 2 and all((h / "prefect.db").exists() for h in homes)  # each run its own Prefect
    assert (tmp_path / "store/releases/rel").is_dir()
    # every file but the config itself: store, manifest, release, warehouse, Prefect, logs, CLI output
    assert [f for f in _files_with(tmp_path, CANARY.encode()) if f != str(path)] == []

    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    config_json = json.loads(con.execute("SELECT config_json FROM runs").fetchall()[0][0])
    con.close()
    assert config_json["storage_options"]["headers"] == {"Authorization": "<redacted>", "X-Trace": "<redacted>"}

    stored = [p for h in homes for p in (h / "storage").rglob("*") if p.is_file()]
    assert stored, "the failing run's exception is expected in result storage, as JSON"
    for p in stored:  # JSON: the exception as its type name and message, never a pickle
        record = json.loads(p.read_bytes())
        assert record["__exc_type__"] == "builtins.FileNotFoundError" and "gone.tsv" in record["message"], p
