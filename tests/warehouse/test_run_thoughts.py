"""A run's thoughts validated and loaded slice by slice, straight from the manifest's files."""
from __future__ import annotations

import json

import polars as pl

from g2u_tasks.store import thought_store as store_mod
from g2u_tasks.store.thought_store import ThoughtStore
from g2u_tasks.warehouse import database as warehouse
from g2u_tasks.warehouse.run_thoughts import check_thoughts
from tests.store.test_thought_store import rows, thought_row

BLOB = "thoughts/blobs/00/" + "0" * 64 + ".png"


def _row(tid: str, status: str = "ok", **over) -> dict:
    return thought_row(tid, status, blob_uri=BLOB if status == "ok" else None, **over)


def _store(tmp_path) -> ThoughtStore:
    """Ten ok thoughts and one ("x") recorded failed at v0, then ok at v1: two rows with one id."""
    st = ThoughtStore(str(tmp_path / "store"))
    st.commit(rows(*(_row(f"t{i}") for i in range(10)), _row("x", "failed")))
    st.commit(rows(_row("x")))
    return st


def _items(*tids: str) -> pl.DataFrame:
    return pl.DataFrame({"benchmark": ["bench"] * len(tids), "item_id": [f"item-{t}" for t in tids]})


def test_manifest_slices_are_bounded_and_keep_each_thought_id_in_one_slice(tmp_path):
    st = _store(tmp_path)
    slices = list(st.manifest_slices(slice_rows=3))
    assert len(slices) == 4  # 12 rows, 3 at a time
    ids = [t for s in slices for t in s["thought_id"].to_list()]
    assert sorted(ids) == sorted(st.manifest()["thought_id"].to_list())  # every row once
    assert sum("x" in s["thought_id"].to_list() for s in slices) == 1  # both "x" rows in one slice
    assert slices[0].columns == st.manifest().columns
    narrow = list(st.manifest_slices(slice_rows=3, columns=["status", "chosen_family"]))
    assert [s.columns for s in narrow] == [["status", "chosen_family"]] * 4  # sliced by thought_id all the same
    assert [s.height for s in narrow] == [s.height for s in slices]
    assert pl.concat(narrow).sort("status").equals(st.manifest().select("status", "chosen_family").sort("status"))
    pinned = [t for s in st.manifest_slices(0, where=pl.col("thought_id") != "t0", slice_rows=3)
              for t in s["thought_id"].to_list()]
    assert sorted(pinned) == sorted([f"t{i}" for i in range(1, 10)] + ["x"])  # v0: "x" once


def test_check_thoughts_sees_duplicates_across_slices_and_loads_the_rest(tmp_path, monkeypatch):
    st = _store(tmp_path)
    monkeypatch.setattr(store_mod, "SLICE_ROWS", 2)
    items = _items(*(f"t{i}" for i in range(8)), "x")  # t8, t9 belong to no item of the run
    checked = check_thoughts(st, "r1", None, items)
    assert checked.failed == {"x"}
    assert [q["item_id"] for q in checked.quarantine] == ["item-x", "item-x"]
    assert all("thought id appears twice" in q["reason"] for q in checked.quarantine)
    # a quarantine row keeps the row as validated: without the wide prompt and key (both in the manifest)
    kept = json.loads(checked.quarantine[0]["record"])
    assert kept["thought_id"] == "x" and kept["status"] in ("ok", "failed")
    assert "prompt" not in kept and "key_json" not in kept

    con = warehouse.connect(tmp_path / "wh.duckdb")
    try:
        for _ in range(2):  # a second load replaces, never duplicates
            written = warehouse.load(con, {}, keyed_parts={"thoughts": checked.good_slices()})
            assert written == {"thoughts": 8}
            got = con.execute("SELECT thought_id, dataset_version FROM thoughts ORDER BY 1").fetchall()
            assert got == [(f"t{i}", None) for i in range(8)]
    finally:
        con.close()
