"""Releases: what `datasets`, DuckDB, Polars and pandas read; checksums; idempotence; S3 (moto)."""
from __future__ import annotations

import glob
import hashlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pytest

from g2u_tasks.store import dataset
from test_dataset import _cli, build_store, store_dir


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel")
    store = build_store(root)
    result = dataset.publish(store, 1, "demo-v1", licence="cc-by-4.0")
    return root, store, result, Path(result.uri)


def _blobs_by_thought(store) -> dict[str, bytes]:
    ok = dataset.ok_thoughts(store, 1)
    return {tid: store.read_blob(uri) for tid, uri in ok.select("thought_id", "blob_uri").iter_rows()}


def test_release_layout_card_and_checksums(published):
    root, store, result, rel = published
    assert result.written and result.rows == 10 and rel == store_dir(store) / "releases" / "demo-v1"
    files = sorted(str(p.relative_to(rel)) for p in rel.rglob("*") if p.is_file())
    assert files == ["README.md", "checksums.sha256", "data/train-00000-of-00001.parquet", "release.json"]
    listed = dict(line.split("  ")[::-1] for line in (rel / "checksums.sha256").read_text().splitlines())
    assert set(listed) == set(files) - {"checksums.sha256"}
    assert all(hashlib.sha256((rel / f).read_bytes()).hexdigest() == sha for f, sha in listed.items())
    assert dataset.verify_release(str(rel)).ok

    card = (rel / "README.md").read_text()
    front = card.split("---\n")[1]
    assert "license: cc-by-4.0" in front and "path: data/train-*.parquet" in front
    assert "| DemoShapes | 3 | 3 | 6 |" in card and "| DemoYesNo | 2 | 2 | 4 |" in card
    for section in ("## What it is", "## How it was generated", "## Schema", "## Counts", "## Licence", "## How to load"):
        assert section in card
    assert "<local>/reference-edit" in card  # the generator's local path is reduced to its last part


def test_no_absolute_path_in_release(published):
    root, store, result, rel = published
    needle = str(root)
    for path in rel.rglob("*"):
        if path.is_file():
            assert needle.encode() not in path.read_bytes(), path
    frame = pl.read_parquet(rel / "data")
    for col in frame.columns:
        if frame[col].dtype == pl.String:
            assert not frame[col].str.contains(needle, literal=True).any(), col
            assert not frame[col].str.starts_with("/").any(), col
    edited = frame.filter(pl.col("generator") == "reference")  # identity thoughts name no generator model
    assert frame["generator_model"].drop_nulls().unique().to_list() == ["<local>/reference-edit"]
    assert json.loads(edited["key_json"][0])["generator"]["model"] == "<local>/reference-edit"


def test_datasets_reads_release_as_is(published, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, store, result, rel = published
    files = sorted(glob.glob(str(rel / "data" / "*.parquet")))
    ds = datasets.load_dataset("parquet", data_files={"train": files}, cache_dir=str(tmp_path / "hf"))["train"]
    assert isinstance(ds.features["image"], datasets.Image) and ds.num_rows == 10
    first = ds[0]
    assert first["image"].format == "PNG" and first["image"].size == (first["width"], first["height"])
    assert first["question"] and first["dataset_version"] == 1

    raw = ds.cast_column("image", datasets.Image(decode=False))
    blobs = _blobs_by_thought(store)
    for row in raw:
        assert row["image"]["bytes"] == blobs[row["thought_id"]]  # byte-identical to the store
        assert row["image"]["path"] == f"{row['blob_sha256']}.png"


def test_duckdb_polars_pandas_read_release(published):
    root, store, result, rel = published
    blobs = _blobs_by_thought(store)
    con = duckdb.connect()
    rows = con.execute(f"SELECT thought_id, image.bytes FROM read_parquet('{rel}/data/*.parquet')").fetchall()
    assert {tid: bytes(b) for tid, b in rows} == blobs
    counts = con.execute(f"SELECT family, count(*) FROM read_parquet('{rel}/data/*.parquet') GROUP BY 1 ORDER BY 1").fetchall()
    assert counts == [("detail_enhancement", 5), ("identity", 5)]

    frame = pl.read_parquet(f"{rel}/data/*.parquet")
    assert dict(zip(frame["thought_id"], frame["image"].struct.field("bytes"))) == blobs
    assert frame.filter(pl.col("benchmark") == "DemoShapes")["options"].str.contains('"A"').all()

    df = pd.read_parquet(rel / "data")
    assert {r["thought_id"]: r["image"]["bytes"] for _, r in df.iterrows()} == blobs
    assert set(df["family"]) == {"identity", "detail_enhancement"}


def test_publish_is_idempotent_and_guards_other_releases(published, tmp_path):
    root, store, result, rel = published
    before = {p: p.stat().st_mtime_ns for p in rel.rglob("*") if p.is_file()}
    again = dataset.publish(store, 1, "demo-v1", licence="cc-by-4.0")
    assert not again.written and again.files == result.files
    assert {p: p.stat().st_mtime_ns for p in rel.rglob("*") if p.is_file()} == before
    with pytest.raises(FileExistsError):
        dataset.publish(store, 0, "demo-v1")
    # same content to another place: byte-identical files
    other = dataset.publish(store, 1, "demo-v1", to_uri=str(tmp_path / "copy"), licence="cc-by-4.0")
    for f in ["README.md", "checksums.sha256", *result.files]:
        assert (Path(other.uri) / f).read_bytes() == (rel / f).read_bytes()


def test_sharded_release_overwrite_and_tamper(published, tmp_path):
    root, store, result, rel = published
    target = str(tmp_path / "sharded")
    small = dataset.publish(store, 1, "demo-v1", to_uri=target, max_shard_bytes=40_000)
    assert len(small.files) > 1 and small.files[0].endswith(f"-of-{len(small.files):05d}.parquet")
    assert pl.read_parquet(f"{target}/data/*.parquet").height == 10
    # a different release at the same place needs overwrite; stale shards go away
    single = dataset.publish(store, 0, "demo-v0", to_uri=target, overwrite=True)
    assert single.files == ["data/train-00000-of-00001.parquet"]
    assert sorted(p.name for p in Path(target, "data").iterdir()) == ["train-00000-of-00001.parquet"]
    assert dataset.verify_release(target).ok

    Path(target, "README.md").write_text("edited")
    Path(target, "extra.txt").write_text("x")
    report = dataset.verify_release(target)
    assert report.mismatched == ["README.md"] and report.unlisted == ["extra.txt"] and not report.ok
    res = _cli("verify", "--release", target, "--store", store.root)
    assert res.exit_code == 1 and "README.md" in res.stdout
    with pytest.raises(FileExistsError, match="extra.txt"):  # never writes over foreign files
        dataset.publish(store, 0, "demo-v0", to_uri=target)
    Path(target, "extra.txt").unlink()
    # a publish that died before its checksums is finished by the next one
    Path(target, "checksums.sha256").unlink()
    Path(target, "release.json").unlink()
    assert dataset.publish(store, 0, "demo-v0", to_uri=target).written and dataset.verify_release(target).ok


def test_cli_publish(published, tmp_path):
    root, store, result, rel = published
    target = tmp_path / "cli-release"
    res = _cli("publish", "latest", "--name", "cli", "--to", str(target), "--licence", "mit", "--store", store.root)
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines()[-1] == str(target)
    assert "license: mit" in (target / "README.md").read_text()
    res = _cli("verify", "1", "--release", str(target), "--store", store.root)
    assert res.exit_code == 0 and "OK" in res.stdout


def test_publish_to_s3_with_moto(published, monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    root, store, result, rel = published
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for key, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(key, value)
        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        fs.mkdir("g2u-releases")
        uri = "s3://g2u-releases/thoughts/demo-v1"
        out = dataset.publish(store, 1, "demo-v1", to_uri=uri, licence="cc-by-4.0")
        assert out.written and out.uri == uri
        assert dataset.verify_release(uri).ok
        assert not dataset.publish(store, 1, "demo-v1", to_uri=uri, licence="cc-by-4.0").written
        for f in ["README.md", "checksums.sha256", *result.files]:  # same bytes as the local release
            assert fs.cat_file(f"{uri}/{f}") == (rel / f).read_bytes()

        opts = {"aws_endpoint_url": endpoint, "aws_access_key_id": "testing", "aws_secret_access_key": "testing",
                "aws_region": "us-east-1", "aws_allow_http": "true"}
        frame = pl.read_parquet(f"{uri}/data/*.parquet", storage_options=opts)
        assert dict(zip(frame["thought_id"], frame["image"].struct.field("bytes"))) == _blobs_by_thought(store)
        con = duckdb.connect()
        con.register_filesystem(fs)
        n = con.execute(f"SELECT count(*) FROM read_parquet('{uri}/data/*.parquet')").fetchall()[0][0]
        assert n == 10
        assert "testing" not in fs.cat_file(f"{uri}/README.md").decode()

    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


@pytest.fixture
def moto_process():
    """moto in its own process: deltalake's DeltaTable.history() keeps the GIL during S3 calls, so an
    in-process (threaded) moto server cannot answer it and the call stalls until its timeout."""
    pytest.importorskip("moto.server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_store_on_s3_publishes_under_its_root(tmp_path, moto_process):
    s3fs = pytest.importorskip("s3fs")
    opts = {"key": "testing", "secret": "testing", "endpoint_url": moto_process}
    s3fs.S3FileSystem(skip_instance_cache=True, **opts).mkdir("g2u-store")
    store = build_store(tmp_path, "s3://g2u-store/prefix", opts)
    out = dataset.publish(store, 1, "v1", licence="cc-by-4.0")
    assert out.uri == "s3://g2u-store/prefix/releases/v1" and out.written
    assert dataset.verify_release(out.uri, opts).ok
    assert dataset.verify_version(store, 1).ok
    polars_opts = {"aws_endpoint_url": moto_process, "aws_access_key_id": "testing",
                   "aws_secret_access_key": "testing", "aws_region": "us-east-1", "aws_allow_http": "true"}
    frame = pl.read_parquet(f"{out.uri}/data/*.parquet", storage_options=polars_opts)
    assert frame["question"].is_not_null().all()  # items found under the S3 store's runs/
    assert dict(zip(frame["thought_id"], frame["image"].struct.field("bytes"))) == _blobs_by_thought(store)
    assert [v["rows"] for v in dataset.list_versions(store).to_dicts()] == [5, 10]
