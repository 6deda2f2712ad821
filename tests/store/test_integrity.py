"""Store integrity: blob checksums on read, torn manifest commits, orphan temp files, a full disk.

Every case uses real Delta tables and real blobs; understanding is called as plain functions."""
from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pytest

import g2u_tasks.store.thought_store as store_mod
from g2u_tasks.backends.understanders import register_backend
from g2u_tasks.benchmarks.loaders import load_benchmark
from g2u_tasks.config import ModelSpec, RunConfig
from g2u_tasks.records import THOUGHTS_SCHEMA
from g2u_tasks.store import dataset
from g2u_tasks.store.thought_store import (BlobCorruptError, ManifestLogError, StoreFullError, ThoughtStore)
from g2u_tasks.thoughts.families import load_families
from g2u_tasks.thoughts.materialise import generate_batch, plan_thoughts
from g2u_tasks.understanding.understand import plan_understanding, understand_batch
from test_dataset import LIMITS, REPO, _cli
from tests.moto_s3 import moto_s3

HOUR = 3600


def _row(tid: str, blob: tuple[str, str]) -> dict:
    row = {n: None for n in THOUGHTS_SCHEMA.names}
    row.update(thought_id=tid, benchmark="b", item_id=tid, family="sketch", status="ok", seed=0,
               blob_sha256=blob[0], blob_uri=blob[1])
    return row


def _commit(st: ThoughtStore, *tids: str) -> int | None:
    rows = [_row(t, st.put_blob(f"png of {t}".encode())) for t in tids]
    return st.commit(pa.Table.from_pylist(rows, schema=THOUGHTS_SCHEMA))


def _three_versions(root: Path) -> ThoughtStore:
    st = ThoughtStore(str(root))
    assert [_commit(st, "a", "b"), _commit(st, "c"), _commit(st, "d", "e")] == [0, 1, 2]
    return st


def _log(st: ThoughtStore, version: int) -> Path:
    return Path(st.location(f"thoughts/manifest/_delta_log/{version:020d}.json"))


# ---- 1. blob checksums on read ---------------------------------------------------------------
def test_read_blob_checks_sha256_and_put_blob_repairs(tmp_path):
    st = ThoughtStore(str(tmp_path))
    sha, uri = st.put_blob(b"png-bytes")
    path = Path(st.location(uri))
    path.write_bytes(b"png-bytez")  # same size, one byte flipped
    with pytest.raises(BlobCorruptError, match=rf"blob {uri} is corrupt") as info:
        st.read_blob(uri)
    assert info.value.blob_uri == uri and info.value.actual_sha256 != sha
    with pytest.raises(ValueError, match="not a blob uri"):
        st.read_blob("runs/r/x.png")
    with pytest.raises(ValueError, match="not a blob uri"):
        st.read_blob(f"thoughts/blobs/00/{sha}.png")  # folder does not match the name
    assert st.put_blob(b"png-bytes") == (sha, uri)  # writing the same content again repairs it
    assert st.read_blob(uri) == b"png-bytes"


def test_corrupt_blob_quarantines_its_thought_and_the_rest_is_answered(tmp_path, monkeypatch):
    items = [it for name, n in LIMITS.items()
             for it in load_benchmark(name, str(REPO / f"data/demo/{name}.tsv"), limit=n)]
    cfg = RunConfig.model_validate({
        "benchmarks": [{"name": n, "source": "unused"} for n in LIMITS],
        "understander": {"backend": "transformers", "model": "m"},
        "families": ["detail_enhancement"], "generator": {"backend": "reference"},
    })
    st = ThoughtStore(str(tmp_path / "store"))
    planned = plan_thoughts(items, load_families(cfg.families), cfg)
    assert st.commit(generate_batch(st, cfg.generator, planned)) == 0
    manifest = st.manifest(0)
    by_blob = manifest.group_by("blob_uri").agg("thought_id").sort("blob_uri")
    bad_uri, bad_ids = by_blob.row(0)
    blob = Path(st.location(bad_uri))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))

    class Echo:
        name, notes = "echo", None

        def answer(self, batch):
            return ["A"] * len(batch)

    register_backend("test-echo")(lambda spec: Echo())  # an instant understander that always says "A"
    tasks, missing = plan_understanding(items, planned, ["baseline", "concat", "replace"], manifest, "r1")
    assert not missing
    preds, quarantined = understand_batch(st, ModelSpec(backend="test-echo", model=str(tmp_path)), "r1", tasks)
    bad_tasks = [t for t in tasks if t.thought_id in bad_ids]
    assert len(bad_tasks) == 2 * len(bad_ids)  # concat and replace
    assert len(quarantined) == len(bad_tasks) and preds.num_rows == len(tasks) - len(bad_tasks)
    for q in quarantined:
        assert json.loads(q["record"])["thought_id"] in bad_ids
        assert "inputs unreadable" in q["reason"] and f"blob {bad_uri} is corrupt" in q["reason"]
    answered = {(r["item_id"], r["condition"], r["mode"]) for r in preds.to_pylist()}
    assert answered == {(t.item.item_id, t.condition, t.mode) for t in tasks if t.thought_id not in bad_ids}

    report = dataset.verify_version(st, 0)  # verify still names the thoughts
    assert sorted(m["thought_id"] for m in report.mismatched) == sorted(bad_ids)
    res = _cli("verify", "0", "--store", st.root)
    assert res.exit_code == 1 and "FAILED" in res.stdout


def test_journal_entry_with_corrupt_blob_is_regenerated(tmp_path):
    st = ThoughtStore(str(tmp_path))
    row = _row("f" * 64, st.put_blob(b"journaled"))
    row["created_at"] = "2026-12-01T00:00:00+00:00"
    st.put_pending([row])
    assert [r["thought_id"] for r in st.pending_rows(["f" * 64])] == ["f" * 64]
    Path(st.location(row["blob_uri"])).write_bytes(b"journalex")
    assert st.pending_rows(["f" * 64]) == []


# ---- 2. a torn newest commit -------------------------------------------------------------------
def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _drop_add(p: Path) -> None:
    p.write_text("".join(line for line in p.read_text().splitlines(True) if not line.startswith('{"add"')))


DAMAGE = {
    "truncated": (_truncate, "not valid JSON"),
    "empty": (lambda p: p.write_bytes(b""), "empty"),
    "garbage": (lambda p: p.write_bytes(b'{"foo": 1}\n'), "not a Delta action"),
    "mangled action": (lambda p: p.write_text(p.read_text().replace('{"add"', '{"adX"')), "not a Delta action"),
    "lost add line": (_drop_add, r"hold 0 row\(s\)"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_torn_newest_commit_keeps_older_versions_readable(tmp_path, damage):
    st = _three_versions(tmp_path / "store")
    before = {v: sorted(st.manifest(v)["thought_id"]) for v in (0, 1)}
    hurt, why = DAMAGE[damage]
    hurt(_log(st, 2))

    for v in (0, 1):  # pinned older versions load, with their history
        assert sorted(st.manifest(v)["thought_id"]) == before[v]
        assert [h["version"] for h in st.history(v)] == list(range(v + 1))
        assert dataset.verify_version(st, v).ok
    for read in (st.version, st.manifest, st.history, lambda: st.manifest(2), lambda: _commit(st, "z")):
        with pytest.raises(ManifestLogError, match=why) as info:
            read()
        assert str(_log(st, 2)) in str(info.value) and info.value.version == 2
        assert "move this file out of _delta_log" in str(info.value)
    with pytest.raises(ValueError, match=r"dataset version 5 does not exist .*latest: 2"):
        st.manifest(5)

    res = _cli("verify", "0", "--store", st.root)
    assert res.exit_code == 0 and "OK" in res.stdout, res.output
    res = _cli("verify", "latest", "--store", st.root)
    assert res.exit_code == 1 and str(_log(st, 2)) in res.stderr, res.output
    assert "Traceback" not in res.output

    # what the message says to do: move the file aside, then the store works from version 1 on
    shutil.move(_log(st, 2), tmp_path / "torn-00002.json")
    assert st.version() == 1 and _commit(st, "d", "e") == 2
    assert sorted(st.manifest()["thought_id"]) == ["a", "b", "c", "d", "e"]


def test_torn_first_commit_says_there_is_no_older_version(tmp_path):
    st = ThoughtStore(str(tmp_path))
    _commit(st, "a")
    _truncate(_log(st, 0))
    with pytest.raises(ManifestLogError, match="No earlier version exists"):
        st.manifest()


def test_torn_middle_commit_is_named_for_versions_after_it(tmp_path):
    st = _three_versions(tmp_path)
    _truncate(_log(st, 1))
    assert sorted(st.manifest(0)["thought_id"]) == ["a", "b"]
    for v in (1, 2, None):
        with pytest.raises(ManifestLogError, match="dataset version 1"):
            st.manifest(v)


# ---- 3. orphan temp files: verify lists them, vacuum removes the old ones -----------------------
def _temp(st: ThoughtStore, rel: str, age_s: float) -> Path:
    path = Path(st.location(rel + ".tmp-" + "0123456789abcdef" * 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"partial")
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def test_verify_lists_and_vacuum_removes_orphan_temp_files(tmp_path):
    st = ThoughtStore(str(tmp_path))
    row = _row("e" * 64, st.put_blob(b"committed"))
    st.commit(pa.Table.from_pylist([row], schema=THOUGHTS_SCHEMA))
    live = _row("d" * 64, st.put_blob(b"journaled"))
    live["created_at"] = "2026-12-01T00:00:00+00:00"
    st.put_pending([live])
    journal = list((tmp_path / "thoughts/pending").glob("*.jsonl"))
    assert len(journal) == 1
    old = [_temp(st, st.blob_uri("ab" * 32), 2 * HOUR), _temp(st, f"thoughts/pending/{'c' * 64}.jsonl", 3 * HOUR),
           _temp(st, "runs/r1/predictions.parquet", 5 * HOUR)]
    young = _temp(st, st.blob_uri("cd" * 32), 60)
    keep = [Path(st.location(row["blob_uri"])), Path(st.location(live["blob_uri"])),
            *journal]

    assert {t.path for t in st.temp_files()} == {str(p.relative_to(tmp_path)) for p in old + [young]}
    res = _cli("verify", "0", "--store", st.root)
    assert res.exit_code == 0 and "4 orphan temp file(s)" in res.stdout and "3 older than 1h" in res.stdout
    assert all(str(p.relative_to(tmp_path)) in res.stdout for p in old + [young])
    res = _cli("verify", "0", "--store", st.root, "--format", "json")
    assert len(json.loads(res.stdout)["temp_files"]) == 4

    res = _cli("vacuum", "--store", st.root, "--dry-run")
    assert res.exit_code == 0 and "would remove 3" in res.stdout and all(p.exists() for p in old)
    res = _cli("vacuum", "--store", st.root, "--format", "json")
    out = json.loads(res.stdout)
    assert res.exit_code == 0 and len(out["removed"]) == 3 and len(out["kept"]) == 1
    assert not any(p.exists() for p in old) and young.exists() and all(p.exists() for p in keep)
    assert [r["thought_id"] for r in st.pending_rows(["d" * 64])] == ["d" * 64]  # journal entry intact
    assert dataset.verify_version(st, 0).ok
    res = _cli("vacuum", "--store", st.root, "--older-than", "30s")
    assert res.exit_code == 0 and not young.exists() and all(p.exists() for p in keep)
    assert _cli("vacuum", "--store", st.root, "--older-than", "soon").exit_code == 2


def test_vacuum_and_torn_commit_on_s3(monkeypatch):
    with moto_s3(monkeypatch):
        st = ThoughtStore("s3://g2u-vacuum/p")
        st.fs.mkdir("g2u-vacuum")
        assert _commit(st, "a") == 0 and _commit(st, "b") == 1
        _, uri = st.put_blob(b"kept")
        st.fs.pipe_file(f"g2u-vacuum/p/{uri}.tmp-{'0' * 32}", b"partial")
        assert [t.path for t in st.temp_files()] == [f"{uri}.tmp-{'0' * 32}"]
        assert st.remove_temp_files()[0] == []  # younger than the default grace period
        removed, kept = st.remove_temp_files(older_than_s=0)
        assert [t.path for t in removed] == [f"{uri}.tmp-{'0' * 32}"] and kept == []
        assert st.temp_files() == [] and st.read_blob(uri) == b"kept"

        # a torn newest commit on S3: the older version still loads
        log = f"g2u-vacuum/p/thoughts/manifest/_delta_log/{1:020d}.json"
        st.fs.pipe_file(log, st.fs.cat_file(log)[:40])
        assert st.manifest(0)["thought_id"].to_list() == ["a"]
        with pytest.raises(ManifestLogError, match=f"s3://{log}"):
            st.manifest()


# ---- 4. a full disk --------------------------------------------------------------------------
def _no_space(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_is_one_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    st = ThoughtStore(str(tmp_path))
    monkeypatch.setattr(store_mod.os, "fsync", _no_space)  # the temp file exists, its data does not land
    with pytest.raises(StoreFullError, match="no space left on the device") as info:
        st.put_blob(b"a thought")
    blob_path = st.location(st.blob_uri(store_mod.sha256_hex(b"a thought")))
    assert info.value.errno == errno.ENOSPC and info.value.filename == blob_path
    assert blob_path in str(info.value) and "nothing partial was kept" in str(info.value)
    with pytest.raises(StoreFullError, match="pending"):
        st.put_pending([_row("a" * 64, ("0" * 64, st.blob_uri("0" * 64))) | {"created_at": None}])
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no blob, no journal entry, no temp file

    monkeypatch.undo()
    _commit(st, "a")
    monkeypatch.setattr(store_mod.delta_parts, "commit_parts", lambda *a: _raise_delta_full())
    with pytest.raises(StoreFullError, match=r"while writing .*thoughts/manifest"):
        _commit(st, "b")
    monkeypatch.undo()
    assert st.version() == 0


def _raise_delta_full():
    raise OSError("Generic LocalFileSystem error: Unable to write: No space left on device (os error 28)")


def test_full_object_store_is_one_clear_error(monkeypatch):
    st = ThoughtStore("memory://g2u-full")
    monkeypatch.setattr(st.fs, "pipe_file", _no_space)
    with pytest.raises(StoreFullError, match="memory://g2u-full/thoughts/blobs/"):
        st.put_blob(b"x")
    assert not st.fs.exists("/g2u-full/thoughts/blobs")
