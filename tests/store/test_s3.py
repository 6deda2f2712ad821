"""S3 stores through a local moto server: credentials policy, `g2u run` end to end, pinning, no leaks.

Credentials only ever come from the environment or a named profile; the secret used here must not
appear in run records, the Delta log, run files, flow parameters or logs."""
from __future__ import annotations

import io
import logging
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from g2u_tasks import jobs
from g2u_tasks.config import RunConfig, load_config
from g2u_tasks.records import THOUGHTS_SCHEMA
from g2u_tasks.store.thought_store import ThoughtStore

REPO = Path(__file__).resolve().parents[2]
SECRET = "wJalr-S3CRET-never-written-4f9c1e"
TOKEN = "session-T0KEN-never-written-8d2b"
BASE = {"benchmarks": [{"name": "B", "source": "b.tsv"}], "understander": {"backend": "transformers"}}


@pytest.fixture()
def moto_endpoint():
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _aws_env(monkeypatch, endpoint: str) -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"AWS_ACCESS_KEY_ID": "AKIATESTKEY", "AWS_SECRET_ACCESS_KEY": SECRET,
                        "AWS_SESSION_TOKEN": TOKEN, "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(name, value)


# ---- credentials policy (fast) --------------------------------------------------------------
@pytest.mark.parametrize("options", [
    {"key": "AKIA", "secret": "x"},
    {"token": "t"},
    {"aws_secret_access_key": "x"},
    {"AWS_SESSION_TOKEN": "t"},
    {"client_kwargs": {"aws_access_key_id": "AKIA"}},
    {"password": "p"},
])
def test_config_refuses_secrets_in_storage_options(options):
    with pytest.raises(ValueError, match=r"must not hold credentials.*environment.*profile"):
        RunConfig.model_validate({**BASE, "storage_options": options})


def test_config_allows_endpoint_region_profile():
    opts = {"endpoint_url": "http://127.0.0.1:9000", "region": "eu-west-1", "profile": "team"}
    got = RunConfig.model_validate({**BASE, "storage_options": opts}).storage_options
    # region is kept in the spelling every fsspec/s3fs reader (benchmarks too) accepts
    assert got == {"endpoint_url": "http://127.0.0.1:9000", "profile": "team",
                   "client_kwargs": {"region_name": "eu-west-1"}}


def test_run_record_masks_secrets_that_bypassed_validation():
    cfg = RunConfig.model_validate(BASE).model_copy(update={"storage_options": {"secret": SECRET, "region": "r"}})
    text = jobs.public_config_json(cfg)
    assert SECRET not in text and '"region":"r"' in text and "<redacted>" in text


def test_named_profile_serves_s3fs_and_deltalake(tmp_path, monkeypatch, moto_endpoint):
    """No credentials in the environment: a profile in the shared files is resolved at runtime."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "credentials").write_text(f"[g2u-team]\naws_access_key_id = AKIAPROFILE\n"
                                          f"aws_secret_access_key = {SECRET}\n")
    (tmp_path / "config").write_text("[profile g2u-team]\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    cfg = RunConfig.model_validate({**BASE, "store": "s3://g2u-profile/p",
                                    "storage_options": {"profile": "g2u-team", "endpoint_url": moto_endpoint}})
    store = jobs.open_store(cfg)
    assert SECRET not in repr(store) and SECRET not in jobs.public_config_json(cfg)
    delta = store.delta_storage_options
    assert delta["AWS_ACCESS_KEY_ID"] == "AKIAPROFILE" and delta["AWS_REGION"] == "eu-west-1"
    assert delta["AWS_ALLOW_HTTP"] == "true" and delta["AWS_ENDPOINT_URL"] == moto_endpoint
    store.fs.mkdir("g2u-profile")
    sha, uri = store.put_blob(b"img")
    row = {n: None for n in THOUGHTS_SCHEMA.names}
    row.update(thought_id="a", status="ok", blob_uri=uri, blob_sha256=sha)
    assert store.commit(pa.Table.from_pylist([row], schema=THOUGHTS_SCHEMA)) == 0
    assert store.manifest(0)["blob_uri"].to_list() == [uri]


# ---- `g2u run` end to end on S3 (slow) ------------------------------------------------------
def _sets(store: str, wh: Path, model: Path, seeds: str = "[0]") -> list[str]:
    pairs = {"store": store, "warehouse": str(wh), **{f"benchmarks.{i}.limit": "1" for i in range(4)},  # 4 items
             "understander.model": str(model), "understander.params.max_new_tokens": "4", "seeds": seeds}
    return [a for k, v in pairs.items() for a in ("--set", f"{k}={v}")]


def _leaks(text: str | bytes) -> bool:
    data = text.encode() if isinstance(text, str) else text
    return SECRET.encode() in data or TOKEN.encode() in data


@pytest.mark.slow
def test_g2u_run_on_s3_end_to_end(tmp_path, monkeypatch, moto_endpoint, prefect_harness, tiny_llava):
    from flows.cli import app
    from flows.pipeline import g2u_pipeline

    _aws_env(monkeypatch, moto_endpoint)
    monkeypatch.chdir(REPO)  # the demo config's benchmark paths are relative to the repository
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setLevel(logging.DEBUG)
    for name in ("", "prefect"):
        logging.getLogger(name).addHandler(handler)
    try:
        store = ThoughtStore("s3://g2u-e2e/team/thoughts-v1")
        store.fs.mkdir("g2u-e2e")
        wh = tmp_path / "wh.duckdb"
        runner = CliRunner()
        args = ["configs/demo.yaml", *_sets(store.root, wh, tiny_llava)]

        # the main job as `g2u run` starts it (called directly first: Prefect's console handler
        # binds the stderr it first sees, which must outlive the CliRunner calls below)
        cfg = load_config("configs/demo.yaml", [a for a in args[1:] if a != "--set"])
        first = g2u_pipeline(cfg.model_dump(mode="json"))
        assert (first["generated"], first["reused"], first["dataset_version"]) == (16, 0, 0)  # 4 items x 4 families
        assert store.version() == 0
        manifest = store.manifest()
        assert manifest.height == 16 and manifest["thought_id"].n_unique() == 16
        blobs = {p: store.fs.info(p)["ETag"] for p in store.fs.find("g2u-e2e/team/thoughts-v1/thoughts/blobs")}
        assert {p.split("thoughts-v1/", 1)[1] for p in blobs} == set(manifest["blob_uri"])
        assert all(p.endswith(".png") and p.split("/")[-2] == p.split("/")[-1][:2] for p in blobs)
        con = duckdb.connect(str(wh), read_only=True)
        assert con.execute("SELECT count(*) FROM predictions").fetchall() == [(36,)]  # 4 items x 9
        con.close()

        again = runner.invoke(app, ["run", *args])
        assert again.exit_code == 0, (again.exception, again.output[-3000:])
        assert "0 thought(s) generated, 16 reused" in again.output and store.version() == 0
        store.fs.invalidate_cache()
        assert {p: store.fs.info(p)["ETag"] for p in store.fs.find("g2u-e2e/team/thoughts-v1/thoughts/blobs")} == blobs
        con = duckdb.connect(str(wh), read_only=True)
        assert con.execute("SELECT count(*) FROM predictions").fetchall() == [(36,)]
        con.close()

        # pinning: seed-1 thoughts land in version 1; understanding pinned to version 0 must not use them
        two_seeds = ["configs/demo.yaml", *_sets(store.root, wh, tiny_llava, "[0,1]")]
        mat = runner.invoke(app, ["materialise", *two_seeds])
        assert mat.exit_code == 0 and mat.output.strip().splitlines()[-1] == "1", mat.output
        added = set(store.manifest(1)["thought_id"]) - set(store.manifest(0)["thought_id"])
        assert len(added) == 16
        pinned = runner.invoke(app, ["understand", *two_seeds, "--dataset-version", "0"])
        assert pinned.exit_code == 0, pinned.output
        run_id = pinned.output.strip().splitlines()[-1]
        con = duckdb.connect(str(wh), read_only=True)
        used = {r[0] for r in con.execute("SELECT DISTINCT thought_id FROM predictions WHERE run_id = ? "
                                          "AND thought_id IS NOT NULL", [run_id]).fetchall()}
        missing = con.execute("SELECT count(*) FROM quarantine WHERE run_id = ? AND reason LIKE "
                              "'%thought not in this dataset version%'", [run_id]).fetchall()
        configs = [r[0] for r in con.execute("SELECT config_json FROM runs").fetchall()]
        con.close()
        assert used == set(store.manifest(0)["thought_id"]) and used.isdisjoint(added)
        assert missing == [(16,)]

        # the secret is nowhere: run records, Delta log, run files, S3 objects, flow parameters, logs
        assert len(configs) == 2 and not any(_leaks(c) for c in configs)
        assert '"store":"s3://g2u-e2e/team/thoughts-v1"' in configs[0]
        delta_log = store.fs.find("g2u-e2e/team/thoughts-v1/thoughts/manifest/_delta_log")
        assert len([p for p in delta_log if p.endswith(".json")]) == 2
        for path in store.fs.find("g2u-e2e"):
            assert not _leaks(store.fs.cat_file(path)), path
        run_files = store.fs.glob("g2u-e2e/team/thoughts-v1/runs/*/*.parquet")
        parts = store.fs.glob("g2u-e2e/team/thoughts-v1/runs/*/predictions/part-*.parquet")
        assert len(run_files) >= 6 and len(parts) >= 2  # items, quarantine, run + prediction parts, per run
        run_files += parts
        for path in run_files:
            table = pl.read_parquet(io.BytesIO(store.fs.cat_file(path)))
            assert not _leaks(table.write_csv()), path
        assert not store.fs.find("g2u-e2e/team/thoughts-v1/thoughts/pending")
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()
        with get_client(sync_client=True) as client:
            runs = [r for r in client.read_flow_runs(limit=200) if store.root in str(r.parameters)]
            ids = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in runs]))
            api_logs = "\n".join(entry.message for entry in client.read_logs(log_filter=ids, limit=200))
        assert len(runs) >= 10 and not any(_leaks(str(r.parameters)) for r in runs)
        assert "dataset version" in api_logs and not _leaks(api_logs)
        assert not _leaks(first["report"])
        for out in (again, mat, pinned):
            assert not _leaks(out.output)
        assert "thoughts:" in captured.getvalue() and not _leaks(captured.getvalue())
        assert not _leaks(wh.read_bytes())
    finally:
        for name in ("", "prefect"):
            logging.getLogger(name).removeHandler(handler)
