"""ThoughtStore on the local filesystem (plus one optional moto S3 round trip)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest

import g2u_tasks.store.thought_store as store_mod
from g2u_tasks.store import delta_parts
from g2u_tasks.records import THOUGHTS_SCHEMA
from g2u_tasks.store.thought_store import ThoughtStore
from tests.moto_s3 import moto_s3

REPO = Path(__file__).resolve().parents[2]


def thought_row(tid: str, status: str = "ok", **over) -> dict:
    row = {n: None for n in THOUGHTS_SCHEMA.names}
    row.update(
        thought_id=tid, benchmark="bench", item_id=f"item-{tid}", image_sha256="0" * 64,
        family="sketch", family_version="1", prompt="p", prompt_source="template",
        generator="fake", generator_params="{}", seed=0, key_json="{}", status=status,
        error=None if status == "ok" else "boom", created_at=datetime.now(timezone.utc),
    )
    row.update(over)
    return row


def rows(*dicts: dict) -> pa.Table:
    return pa.Table.from_pylist(list(dicts), schema=THOUGHTS_SCHEMA)


def test_blob_write_once_and_content_addressed(tmp_path):
    st = ThoughtStore(str(tmp_path / "store"))
    sha, uri = st.put_blob(b"png-bytes")
    assert not uri.startswith("/") and uri == f"thoughts/blobs/{sha[:2]}/{sha}.png"
    path = Path(st.location(uri))
    before = path.stat()
    assert st.put_blob(b"png-bytes") == (sha, uri)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert st.has_blob(sha) and st.read_blob(uri) == b"png-bytes"
    assert st.put_blob(b"other")[1] != uri
    assert not list(path.parent.glob("*.tmp-*"))


def test_relative_file_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    st = ThoughtStore("file://data/store")
    assert st.root == f"file://{tmp_path}/data/store"
    _, uri = st.put_blob(b"x")
    assert (tmp_path / "data/store" / uri).read_bytes() == b"x"
    assert st.commit(rows(thought_row("a", blob_uri=uri))) == 0
    monkeypatch.chdir("/")  # the store keeps working once cwd moves
    assert st.manifest()["blob_uri"].to_list() == [uri]


def test_manifest_empty_before_first_commit(tmp_path):
    st = ThoughtStore(str(tmp_path))
    assert st.version() is None and st.history() == []
    df = st.manifest()
    assert df.height == 0 and df.columns == THOUGHTS_SCHEMA.names
    assert st.existing_ok(["a"]).height == 0


def test_commit_versions_dedupe_and_time_travel(tmp_path):
    st = ThoughtStore(f"file://{tmp_path}")
    batch = rows(thought_row("a"), thought_row("b"))
    assert st.commit(batch) == 0
    assert st.commit(batch) is None  # all ok already: no empty commit
    assert st.version() == 0 and st.manifest().height == 2
    assert st.commit(rows(thought_row("a"), thought_row("c"))) == 1
    assert sorted(st.manifest()["thought_id"].to_list()) == ["a", "b", "c"]
    assert sorted(st.manifest(version=0)["thought_id"].to_list()) == ["a", "b"]
    assert st.existing_ok(["a", "c", "zz"], version=0)["thought_id"].to_list() == ["a"]
    hist = st.history()
    assert [h["version"] for h in hist] == [0, 1]
    assert hist[1]["metadata"] == {"g2u.operation": "materialise", "g2u.rows": "1"}


def test_duplicates_within_batch_keep_first_ok(tmp_path):
    st = ThoughtStore(str(tmp_path))
    batch = rows(thought_row("a", "failed"), thought_row("a", seed=1), thought_row("a", seed=2))
    assert st.commit(batch) == 0
    df = st.manifest()
    assert df.height == 1 and df["status"].to_list() == ["ok"] and df["seed"].to_list() == [1]


def test_failed_then_ok_for_same_key(tmp_path):
    st = ThoughtStore(str(tmp_path))
    assert st.commit(rows(thought_row("a", "failed"))) == 0
    assert st.existing_ok(["a"]).height == 0
    assert st.commit(rows(thought_row("a", "failed"))) == 1  # retries may fail again
    assert st.commit(rows(thought_row("a", "ok"))) == 2
    assert st.commit(rows(thought_row("a", "ok"))) is None
    df = st.manifest()
    assert df["status"].to_list().count("ok") == 1 and df.height == 3
    assert st.existing_ok(["a"]).height == 1


def test_commit_rejects_missing_columns(tmp_path):
    st = ThoughtStore(str(tmp_path))
    with pytest.raises(ValueError, match="blob_uri"):
        st.commit(rows(thought_row("a")).drop_columns(["blob_uri"]))
    assert st.version() is None


def _breaking(data: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """A stream that breaks after its first row: data files may land, the commit must not."""
    def batches():
        yield from data.read_all().to_batches(max_chunksize=1)[:1]
        raise RuntimeError("crash mid-write")

    return pa.RecordBatchReader.from_batches(data.schema, batches())


def _data_files(root) -> list[str]:
    return sorted(p.name for p in (root / "thoughts/manifest").glob("*.parquet"))


def test_failed_commit_leaves_no_visible_rows(tmp_path, monkeypatch):
    st = ThoughtStore(str(tmp_path))
    real_write = delta_parts.write_parts

    def breaking_write(fs, folder, schema, batches):
        return real_write(fs, folder, schema, _breaking(batches))

    # the creating commit breaks mid-stream: no table at all, no data file left
    monkeypatch.setattr(delta_parts, "write_parts", breaking_write)
    with pytest.raises(Exception, match="crash mid-write"):
        st.commit(rows(thought_row("a"), thought_row("z")))
    monkeypatch.undo()
    assert st.version() is None and st.manifest().height == 0 and _data_files(tmp_path) == []
    assert st.commit(rows(thought_row("a"))) == 0
    committed = _data_files(tmp_path)
    # a later commit breaks mid-stream: version, rows and data files unchanged
    monkeypatch.setattr(delta_parts, "write_parts", breaking_write)
    with pytest.raises(Exception, match="crash mid-write"):
        st.commit(rows(thought_row("b"), thought_row("c")))
    monkeypatch.undo()
    assert st.version() == 0 and _data_files(tmp_path) == committed
    assert st.manifest()["thought_id"].to_list() == ["a"]


def test_commit_is_one_version_in_bounded_parts(tmp_path, monkeypatch):
    """Rows reach the table as several Parquet parts, added in one transaction: one version."""
    monkeypatch.setattr(delta_parts, "PART_ROWS", 4)
    st = ThoughtStore(str(tmp_path))
    ids = [f"{i:02d}" for i in range(10)]
    assert st.commit(rows(*(thought_row(i) for i in ids))) == 0
    assert len(_data_files(tmp_path)) == 3  # 4 + 4 + 2 rows
    assert sorted(st.manifest()["thought_id"].to_list()) == ids
    assert [h["rows"] for h in st.history()] == [10]


def test_pinned_version_must_exist(tmp_path):
    st = ThoughtStore(str(tmp_path))
    with pytest.raises(ValueError, match="dataset version 0 does not exist"):
        st.manifest(0)
    st.commit(rows(thought_row("a")))
    st.commit(rows(thought_row("b")))
    assert st.manifest(0)["thought_id"].to_list() == ["a"]
    assert [h["rows"] for h in st.history()] == [1, 1]
    with pytest.raises(ValueError, match=r"dataset version 2 does not exist .*latest: 1"):
        st.manifest(2)


def test_commit_retries_a_lost_race(tmp_path, monkeypatch):
    """A conflicting commit is retried against the new version and inserts only what is missing."""
    st = ThoughtStore(str(tmp_path))
    st.commit(rows(thought_row("a")))
    other = ThoughtStore(str(tmp_path))
    real_commit, calls = delta_parts.commit_parts, []

    def race(uri, dt, *args):
        calls.append(dt.version())
        if len(calls) == 1:  # another writer commits "b" between our read and our commit
            other.commit(rows(thought_row("b", seed=9)))
        return real_commit(uri, dt, *args)

    monkeypatch.setattr(delta_parts, "commit_parts", race)
    monkeypatch.setattr(store_mod, "COMMIT_BACKOFF_S", 0.001)
    assert st.commit(rows(thought_row("b"), thought_row("c"))) == 2
    assert calls == [0, 0, 1]  # ours on v0, the other writer's on v0, our retry on v1
    df = st.manifest()
    assert sorted(df["thought_id"].to_list()) == ["a", "b", "c"]
    assert df.filter(df["thought_id"] == "b")["seed"].to_list() == [9]  # the winner's row stays


def test_pending_journal(tmp_path):
    st = ThoughtStore(str(tmp_path))
    good, torn, other = "1" * 64, "2" * 64, "5" * 64
    sha, uri = st.put_blob(b"thought")
    now = datetime.now(timezone.utc)
    sha2, uri2 = st.put_blob(b"other")
    st.put_pending([thought_row(good, blob_sha256=sha, blob_uri=uri, created_at=now),
                    thought_row(torn, blob_sha256=sha2, blob_uri=uri2)])
    st.put_pending([thought_row(other, blob_sha256=sha, blob_uri=uri, created_at=now)])
    pending = tmp_path / "thoughts/pending"
    assert len(list(pending.glob("*.jsonl"))) == 2  # one file per batch
    Path(st.location(uri2)).write_bytes(b"overwritten")  # blob no longer matches its sha
    (pending / ("3" * 64 + ".jsonl")).write_text("{not json\n[1]\n")
    got = st.pending_rows([good, torn, "3" * 64, "4" * 64, other])
    assert [r["thought_id"] for r in got] == [good, other] and got[0]["created_at"] == now
    assert st.commit(pa.Table.from_pylist(got[:1], schema=THOUGHTS_SCHEMA)) == 0
    assert st.clear_pending([good, "4" * 64]) == 1
    assert st.pending_rows([good, other]) == [got[1]]  # the other batch's entry stays
    assert st.clear_pending([torn, other]) == 2 and st.pending_rows([other]) == []
    assert [p.name for p in pending.iterdir()] == ["3" * 64 + ".jsonl"]  # foreign file left as it is
    with pytest.raises(ValueError):
        st.put_pending([thought_row("../x")])


def test_run_tables_round_trip(tmp_path):
    st = ThoughtStore(str(tmp_path))
    table = pa.table({"run_id": ["r1", "r1"], "value": [0.5, 1.0]})
    path = st.write_run_table("r1", "metrics", table)
    assert path == st.run_path("r1", "metrics") == str(tmp_path / "runs/r1/metrics.parquet")
    assert st.read_run_table("r1", "metrics").to_dict(as_series=False) == table.to_pydict()
    st.write_run_json("r1", "run", {"b": 1, "a": [1, 2]})
    assert st.read_run_json("r1", "run") == {"a": [1, 2], "b": 1}
    assert not list((tmp_path / "runs/r1").glob("*.tmp-*"))
    with pytest.raises(ValueError):
        st.run_path("../x", "metrics")


def test_run_parts_in_index_order_replaced_as_a_whole_and_older_single_files_read(tmp_path):
    st = ThoughtStore(str(tmp_path))
    assert st.run_parts("r1", "predictions") == [] and list(st.iter_run_parts("r1", "predictions")) == []
    for index in (10, 2, 0):  # written out of order (batches finish in any order), read in index order
        st.write_run_part("r1", "predictions", index, pa.table({"i": [index], "wide": ["x" * 10]}))
    assert [p.rsplit("/", 1)[-1] for p in st.run_parts("r1", "predictions")] == [
        "part-000000.parquet", "part-000002.parquet", "part-000010.parquet"]
    narrow = list(st.iter_run_parts("r1", "predictions", columns=["i", "not_there"]))
    assert [f.columns for f in narrow] == [["i"]] * 3 and [f["i"][0] for f in narrow] == [0, 2, 10]
    # columns are picked per part: a newer part's column is read though an older part lacks it
    st.write_run_part("r1", "predictions", 11, pa.table({"i": [11], "wide": ["y"], "new": [1]}))
    assert [f.columns for f in st.iter_run_parts("r1", "predictions", columns=["i", "new"])] == [["i"]] * 3 + [["i", "new"]]
    st.clear_run_parts("r1", "predictions")
    assert st.run_parts("r1", "predictions") == []
    # a run stored before parts existed: its one predictions.parquet is its only part
    st.write_run_table("r0", "predictions", pa.table({"i": [7, 8]}))
    assert [f["i"].to_list() for f in st.iter_run_parts("r0", "predictions")] == [[7, 8]]
    st.clear_run_parts("r0", "predictions")
    assert st.run_parts("r0", "predictions") == [] and not (tmp_path / "runs/r0/predictions.parquet").exists()
    st.write_run_table("r0", "run", pa.table({"x": [1]}))
    st.remove_run_file("r0", "run")
    st.remove_run_file("r0", "run")  # gone already: no error
    assert not (tmp_path / "runs/r0/run.parquet").exists()


def test_manifest_columns_are_read_alone(tmp_path):
    st = ThoughtStore(str(tmp_path))
    assert st.manifest(columns=["thought_id", "status"]).columns == ["thought_id", "status"]
    st.commit(rows(thought_row("a"), thought_row("b", status="failed")))
    narrow = st.manifest(columns=["status", "thought_id", "chosen_family"])
    assert narrow.columns == ["thought_id", "status", "chosen_family"]  # in THOUGHTS_SCHEMA's order
    assert narrow.rows() == [("a", "ok", "sketch"), ("b", "failed", "sketch")]  # template: chosen = family
    assert st.manifest().select(narrow.columns).equals(narrow)
    assert st.existing_ok(["a", "b", "c"]).rows() == [("a", "ok")]


def test_subprocess_exits_cleanly(tmp_path):
    """deltalake 1.6.6 can abort at exit after to_pyarrow_table: a process that commits and reads the
    manifest must exit 0."""
    code = textwrap.dedent(
        """
        import sys
        import pyarrow as pa
        from g2u_tasks.records import THOUGHTS_SCHEMA
        from g2u_tasks.store.thought_store import ThoughtStore
        st = ThoughtStore(sys.argv[1])
        st.put_blob(b"img")
        row = {n: None for n in THOUGHTS_SCHEMA.names}
        batch = [dict(row, thought_id=t, status="ok") for t in ("a", "b")]
        assert st.commit(pa.Table.from_pylist(batch, schema=THOUGHTS_SCHEMA)) == 0
        assert st.manifest().height == 2 and st.manifest(version=0).height == 2
        assert st.existing_ok(["a"]).height == 1 and len(st.history()) == 1
        print("done")
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    for i in range(3):  # the abort was intermittent
        root = str(tmp_path / f"store{i}")
        proc = subprocess.run(
            [sys.executable, "-c", code, root], capture_output=True, text=True, timeout=120, env=env
        )
        assert proc.returncode == 0, proc.stderr
        assert "done" in proc.stdout


def test_s3_round_trip_with_moto(monkeypatch):
    with moto_s3(monkeypatch) as endpoint:
        st = ThoughtStore("s3://g2u-test/prefix/")
        assert "testing-secret" not in repr(st) and "testing-secret" not in repr(st._s3)
        opts = st.delta_storage_options
        assert opts["AWS_ENDPOINT_URL"] == endpoint and opts["AWS_ALLOW_HTTP"] == "true"
        assert opts["AWS_SECRET_ACCESS_KEY"] == "testing-secret" and opts["aws_conditional_put"] == "etag"
        st.fs.mkdir("g2u-test")
        assert st.root == "s3://g2u-test/prefix"
        sha, uri = st.put_blob(b"img")
        assert st.has_blob(sha) and st.read_blob(uri) == b"img"
        assert st.commit(rows(thought_row("a", blob_uri=uri))) == 0
        assert st.commit(rows(thought_row("a"), thought_row("b"))) == 1
        assert st.manifest().height == 2 and st.manifest(version=0).height == 1
        st.write_run_table("r1", "preds", pa.table({"x": [1]}))
        assert st.read_run_table("r1", "preds")["x"].to_list() == [1]
        assert st.fs.exists("g2u-test/prefix/thoughts/manifest/_delta_log/00000000000000000001.json")
        tid = "5" * 64
        st.put_pending([thought_row(tid, blob_sha256=sha, blob_uri=uri)])
        assert [r["thought_id"] for r in st.pending_rows([tid])] == [tid]
        assert st.clear_pending([tid]) == 1 and st.pending_rows([tid]) == []
