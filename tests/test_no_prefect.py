"""g2u_tasks must import and work where Prefect is absent (the GPU machines), and its stage
sequences are the ones the Prefect flows run: the same config gives the same warehouse either way."""
import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from g2u_tasks.batching import Batching, in_batches, map_in_process
from g2u_tasks.config import RunConfig
from g2u_tasks.store.thought_store import ThoughtStore
from g2u_tasks.thoughts import stage as thought_stage

REPO = Path(__file__).resolve().parents[1]

BLOCK_PREFECT = r"""
import sys
class BlockPrefect:
    def find_spec(self, name, path=None, target=None):
        if name == "prefect" or name.startswith("prefect."):
            raise ImportError("prefect is blocked in this test")
sys.meta_path.insert(0, BlockPrefect())
"""

IMPORT_ALL = BLOCK_PREFECT + r"""
import importlib, pkgutil
import g2u_tasks
mods = [m.name for m in pkgutil.walk_packages(g2u_tasks.__path__, "g2u_tasks.")]
for m in mods:
    importlib.import_module(m)
assert not any(k == "prefect" or k.startswith("prefect.") for k in sys.modules)
print(len(mods))
"""

# materialise -> understand -> validate & load for each config given, in one process without Prefect
RUN_STAGES = BLOCK_PREFECT + r"""
import json
from g2u_tasks.config import RunConfig
from g2u_tasks.thoughts.stage import materialise_thoughts
from g2u_tasks.understanding.stage import run_understanding
from g2u_tasks.warehouse.stage import load_run
out = []
for raw in json.loads(sys.argv[1]):
    cfg = RunConfig.model_validate(raw)
    m = materialise_thoughts(cfg)
    run_id = run_understanding(cfg, m["dataset_version"], m)
    load_run(cfg, run_id, m["dataset_version"])
    out.append({"run_id": run_id, **m})
assert not any(k == "prefect" or k.startswith("prefect.") for k in sys.modules)
print(json.dumps(out))
"""


def _python(script: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_core_imports_without_prefect():
    assert int(_python(IMPORT_ALL)) >= 15  # every module was imported


# ---- the stage sequences take their batch mapping from the caller ---------------------------------

def _config(root: Path, **extra) -> RunConfig:
    return RunConfig.model_validate({
        "store": f"file://{root / 'store'}", "warehouse": str(root / "wh.duckdb"),
        "benchmarks": [{"name": "DemoShapes", "source": str(REPO / "data/demo/DemoShapes.tsv"), "limit": 2},
                       {"name": "DemoYesNo", "source": str(REPO / "data/demo/DemoYesNo.tsv"), "limit": 2}],
        "understander": {"backend": "transformers", "model": "unused"}, "batch_size": 4, **extra,
    })


def test_materialise_stage_maps_its_batches_with_the_callers_function(tmp_path):
    calls = []

    def recording(fn, batches, **fixed):
        calls.append((fn, [len(b) for b in batches], sorted(fixed)))
        return map_in_process(fn, batches, **fixed)

    cfg = _config(tmp_path, batch_size=3)
    m = thought_stage.materialise_thoughts(cfg, Batching(map_batches=recording))
    assert calls == [(thought_stage.generate_thoughts, [3, 3, 3, 3, 3, 1], ["generator_spec", "similarity_spec",
                                                                              "store"])]
    assert (m["planned"], m["generated"], m["failed"], m["dataset_version"]) == (16, 16, 0, 0)
    assert ThoughtStore(cfg.store).manifest()["status"].to_list() == ["ok"] * 16
    again = thought_stage.materialise_thoughts(cfg, Batching(map_batches=recording))
    assert (again["generated"], again["reused"], again["dataset_version"]) == (0, 16, 0) and len(calls) == 1


def test_in_batches_and_in_process_mapping_keep_order():
    assert list(in_batches(list(range(5)), 2)) == [[0, 1], [2, 3], [4]]
    assert list(map_in_process(lambda batch, k: [x * k for x in batch], in_batches([1, 2, 3], 2), k=10)) == [
        [10, 20], [30]]


# ---- the same warehouse with and without Prefect --------------------------------------------------

KEYS = {  # per table: the columns that identify a row, plus what the stages computed for it
    "items": "benchmark, item_id, image_sha256",
    "thoughts": "thought_id, benchmark, item_id, family, prompt_source, blob_sha256, status, dataset_version",
    "predictions": "run_id, benchmark, item_id, condition, mode, seed, thought_id, raw_output, correct",
    "metrics": "run_id, benchmark, condition, mode, metric, value, n",
    "runs": "run_id, dataset_version, n_items, n_thoughts_generated, n_thoughts_reused, status",
    "quarantine": "run_id, stage, benchmark, item_id, reason",
}


def _warehouse(path: str, labels: dict[str, str]) -> dict[str, list]:
    """Every table's key rows, run ids replaced by the config they came from (stores differ)."""
    con = duckdb.connect(path, read_only=True)
    try:
        out = {}
        for table, cols in KEYS.items():
            rows = con.execute(f"SELECT {cols} FROM {table}").fetchall()
            if cols.startswith("run_id"):
                rows = [(labels[r[0]], *r[1:]) for r in rows]
            out[table] = sorted(rows, key=repr)
        return out
    finally:
        con.close()


def _configs(root: Path, model: Path) -> list[dict]:
    base = _config(root, understander={"backend": "transformers", "model": str(model),
                                       "params": {"max_new_tokens": 4}}).model_dump(mode="json")
    self_directed = {**base, "benchmarks": base["benchmarks"][:1], "prompt_source": "self",
                     "plan_max_new_tokens": 12, "modes": ["baseline", "replace"]}
    return [base, self_directed]


@pytest.mark.slow
def test_stages_without_prefect_give_the_prefect_pipelines_warehouse(prefect_harness, tiny_llava, tmp_path):
    plain_cfgs, flow_cfgs = _configs(tmp_path / "plain", tiny_llava), _configs(tmp_path / "flow", tiny_llava)
    plain = json.loads(_python(RUN_STAGES, json.dumps(plain_cfgs)))
    from flows.pipeline import g2u_pipeline

    flowed = [g2u_pipeline(cfg) for cfg in flow_cfgs]
    for a, b in zip(plain, flowed):
        assert {k: v for k, v in a.items() if k != "run_id"} == {
            k: v for k, v in b.items() if k not in ("run_id", "loaded", "report")}
    assert plain[1]["plans_parse_failed"] > 0  # the self-directed run planned (and recorded its failures)

    a = _warehouse(plain_cfgs[0]["warehouse"], {r["run_id"]: label for r, label in zip(plain, "TS")})
    b = _warehouse(flow_cfgs[0]["warehouse"], {r["run_id"]: label for r, label in zip(flowed, "TS")})
    assert len(a["predictions"]) == 4 * 9 + 2 + plain[1]["plans_ok"] and len(a["thoughts"]) == 4 * 4 + 2
    assert {r[0] for r in a["quarantine"]} == {"S"}  # the self run's parse-failed plans
    for table in KEYS:
        assert a[table] == b[table], table
