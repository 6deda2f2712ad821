"""Dataset versions: list / show / diff / verify, as functions and through `g2u dataset`.

build_store() is shared with tests/test_release.py."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from flows.cli_dataset import dataset_app
from g2u_tasks.store import dataset
from g2u_tasks.benchmarks.loaders import load_benchmark
from g2u_tasks.config import RunConfig
from g2u_tasks.thoughts.families import load_families
from g2u_tasks.thoughts.materialise import generate_batch, plan_thoughts
from g2u_tasks.records import items_table
from g2u_tasks.store.thought_store import ThoughtStore

REPO = Path(__file__).resolve().parents[2]
LIMITS = {"DemoShapes": 3, "DemoYesNo": 2}


def build_store(root: Path, uri: str | None = None, storage_options: dict | None = None) -> ThoughtStore:
    """v0: identity on 5 items; v1 adds detail_enhancement. The generator model is a local path
    (a release must not leak it); the items land in runs/run1/items.parquet."""
    items = [it for name, n in LIMITS.items()
             for it in load_benchmark(name, str(REPO / f"data/demo/{name}.tsv"), limit=n)]
    generator = {"backend": "reference", "model": str(root / "models" / "reference-edit")}
    store = ThoughtStore(uri or f"file://{root / 'store'}", storage_options=storage_options)
    for version, families in enumerate((["identity"], ["identity", "detail_enhancement"])):
        cfg = RunConfig.model_validate({
            "benchmarks": [{"name": n, "source": "unused"} for n in LIMITS],
            "understander": {"backend": "transformers", "model": "m"},
            "families": families, "generator": generator,
        })
        rows = generate_batch(store, cfg.generator, plan_thoughts(items, load_families(families), cfg))
        assert store.commit(rows) == version
    store.write_run_table("run1", "items", items_table(items))
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ThoughtStore:
    return build_store(tmp_path_factory.mktemp("ds"))


def store_dir(store: ThoughtStore) -> Path:
    return Path(store.root.removeprefix("file://"))


def _cli(*args: str):
    app = typer.Typer()
    app.add_typer(dataset_app, name="dataset")

    @app.callback()
    def main() -> None:
        """g2u (test harness)."""

    return CliRunner().invoke(app, ["dataset", *args])


def test_list_versions(store):
    frame = dataset.list_versions(store)
    assert frame["version"].to_list() == [0, 1]
    assert frame["rows"].to_list() == [5, 10] and frame["rows_added"].to_list() == [5, 5]
    assert frame["families"].to_list() == ["identity", "detail_enhancement,identity"]
    assert frame["benchmarks"].to_list() == ["DemoShapes,DemoYesNo"] * 2
    # identity thoughts are their source image (generator "identity"); the rest come from the reference backend
    assert all(g == "identity" or g.startswith("reference:") for v in frame["generators"] for g in v.split(","))
    assert str(frame["date"].dtype) == "Datetime(time_unit='us', time_zone='UTC')"


def test_show_version(store):
    detail = dataset.show_version(store, 1)
    s = detail["summary"]
    assert (s["ok"], s["failed"], s["items"]) == (10, 0, 5)
    assert s["families"] == ["detail_enhancement", "identity"]
    counts = {(b, f, st): n for b, f, st, n in detail["counts"].iter_rows()}
    assert counts[("DemoShapes", "detail_enhancement", "ok")] == 3 and counts[("DemoYesNo", "identity", "ok")] == 2
    assert detail["prompts"]["prompt_source"].to_list() == ["template", "template"]
    fid = dict(zip(detail["fidelity"]["family"], detail["fidelity"]["psnr_mean"]))
    assert fid["identity"] == 100.0 and fid["detail_enhancement"] < 100.0
    with pytest.raises(ValueError, match="dataset version 7 does not exist"):
        dataset.show_version(store, 7)


def test_diff_versions(store):
    d = dataset.diff_versions(store, 0, 1)
    assert (d["added"], d["removed"]) == (5, 0) and len(d["added_ids"]) == 5
    rows = {(b, f): (a, r) for b, f, a, r in d["by_benchmark_family"].iter_rows()}
    assert rows == {("DemoShapes", "detail_enhancement"): (3, 0), ("DemoYesNo", "detail_enhancement"): (2, 0)}
    back = dataset.diff_versions(store, 1, 0)
    assert back["removed_ids"] == d["added_ids"] and back["added"] == 0


def test_cli_list_show_diff(store):
    res = _cli("list", "--store", store.root, "--format", "json")
    assert res.exit_code == 0, res.output
    assert [v["rows"] for v in json.loads(res.stdout)] == [5, 10]
    res = _cli("list", "--store", store.root)
    assert res.exit_code == 0 and "detail_enhancement" in res.stdout
    res = _cli("show", "latest", "--store", store.root, "--format", "json")
    assert res.exit_code == 0 and json.loads(res.stdout)["summary"]["version"] == 1
    res = _cli("show", "0", "--store", store.root)
    assert res.exit_code == 0 and "identity" in res.stdout
    res = _cli("diff", "0", "1", "--store", store.root, "--format", "json")
    assert res.exit_code == 0 and json.loads(res.stdout)["added"] == 5
    res = _cli("diff", "0", "1", "--store", store.root, "--ids")
    assert res.exit_code == 0 and res.stdout.count("\n+ ") == 5
    res = _cli("show", "9", "--store", store.root)
    assert res.exit_code == 2 and "dataset version 9 does not exist" in res.stderr


def test_cli_reads_store_from_config(store, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"store: {store.root}\nbenchmarks: [{{name: DemoShapes, source: {REPO}/data/demo/DemoShapes.tsv}}]\n"
                   "understander: {backend: transformers, model: org/m}\n")
    res = _cli("list", "--config", str(cfg), "--format", "json")
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)) == 2


def test_verify_reports_missing_and_corrupt_blobs(store, tmp_path):
    report = dataset.verify_version(store, 1)
    ok = dataset.ok_thoughts(store, 1)
    assert report.ok and report.checked == 10 and report.blobs == ok["blob_sha256"].n_unique()
    assert _cli("verify", "1", "--store", store.root).exit_code == 0

    shutil.copytree(store_dir(store), tmp_path / "copy")
    copy = ThoughtStore(str(tmp_path / "copy"))
    blobs = ok.group_by("blob_uri").agg("thought_id").sort("blob_uri")  # a blob may serve several thoughts
    (corrupt_uri, corrupt_ids), (gone_uri, gone_ids) = blobs.row(0), blobs.row(1)
    Path(copy.location(corrupt_uri)).write_bytes(b"not the png it was")
    Path(copy.location(gone_uri)).unlink()

    report = dataset.verify_version(copy, 1)
    assert not report.ok and report.checked == 10
    assert sorted(m["thought_id"] for m in report.mismatched) == sorted(corrupt_ids)
    assert sorted(m["thought_id"] for m in report.missing) == sorted(gone_ids)
    assert all(m["actual_sha256"] != m["blob_sha256"] for m in report.mismatched)
    res = _cli("verify", "latest", "--store", copy.root, "--format", "json")
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert out["ok"] is False and {m["thought_id"] for m in out["version"]["missing"]} == set(gone_ids)
    res = _cli("verify", "1", "--store", copy.root)
    assert res.exit_code == 1 and "FAILED" in res.stdout
