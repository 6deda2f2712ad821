"""Scale-out: the pipeline on a dask.distributed cluster of 2 worker processes gives exactly the
single-process results; workers get their own GPU slice; batch tasks retry transient errors only."""
from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest
from distributed import Client
from prefect import flow, task

from flows import executor
from g2u_tasks import jobs
from g2u_tasks.config import RunConfig
from g2u_tasks.store.thought_store import ThoughtStore

REPO = Path(__file__).resolve().parents[2]


# ---- cluster layout (no Prefect) ----------------------------------------------------------------

def test_cuda_slices():
    assert executor.cuda_slices(2, 1, None) == ["0", "1"]
    assert executor.cuda_slices(2, 2, "3,5,6,7") == ["3,5", "6,7"]
    assert executor.cuda_slices(3, 0, "0,1") == ["", "", ""]  # CPU workers see no GPU
    with pytest.raises(ValueError, match="need 4 devices"):
        executor.cuda_slices(2, 2, "0,1")


def _worker_view(dask_worker):
    return os.environ["CUDA_VISIBLE_DEVICES"], os.getpid(), dask_worker.state.nthreads


@pytest.mark.slow
def test_local_cluster_one_process_per_gpu_slice(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6,7")
    with executor.local_cluster(n_workers=2, gpus_per_worker=2) as cluster, Client(cluster) as client:
        seen = client.run(_worker_view)
        resources = {w["name"]: w["resources"] for w in client.scheduler_info()["workers"].values()}
    assert sorted(v[0] for v in seen.values()) == ["3,5", "6,7"]
    assert len({v[1] for v in seen.values()}) == 2 and all(v[2] == 1 for v in seen.values())
    assert resources == {"worker-0": {"GPU": 2}, "worker-1": {"GPU": 2}}


# ---- the same results on 2 worker processes --------------------------------------------------------

def _config(root: Path, model: Path, executor_block: dict | None) -> dict:
    cfg = {
        "store": f"file://{root / 'store'}",
        "warehouse": str(root / "wh.duckdb"),
        "benchmarks": [{"name": "DemoShapes", "source": str(REPO / "data/demo/DemoShapes.tsv"), "limit": 4},
                       {"name": "DemoYesNo", "source": str(REPO / "data/demo/DemoYesNo.tsv"), "limit": 4}],
        "understander": {"backend": "transformers", "model": str(model), "params": {"max_new_tokens": 4}},
        "batch_size": 8,
    }
    return cfg | ({"executor": executor_block} if executor_block else {})


def _results(cfg: dict) -> dict:
    con = duckdb.connect(cfg["warehouse"], read_only=True)
    try:
        q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        out = {
            "predictions": q("""SELECT benchmark, item_id, condition, mode, seed, thought_id, raw_output,
                                       extracted_answer, correct FROM predictions ORDER BY ALL"""),
            "metrics": q("SELECT benchmark, condition, mode, metric, value, n FROM metrics ORDER BY ALL"),
            "quarantine": q("SELECT count(*) FROM quarantine"),
        }
    finally:
        con.close()
    manifest = ThoughtStore(cfg["store"]).manifest()
    out["thoughts"] = sorted(zip(manifest["thought_id"], manifest["blob_sha256"], manifest["status"]))
    return out


def _resident_understanders() -> int:
    from g2u_tasks.backends import registry
    return registry.resident_count("understander")


@pytest.mark.slow
def test_two_dask_workers_give_the_single_process_results(prefect_harness, tiny_llava, tmp_path):
    from flows.pipeline import g2u_pipeline

    single = _config(tmp_path / "single", tiny_llava, None)
    g2u_pipeline(single)
    with executor.local_cluster(n_workers=2, gpus_per_worker=0) as cluster, Client(cluster) as client:
        spread = _config(tmp_path / "dask", tiny_llava, {"kind": "dask", "address": cluster.scheduler_address})
        out = g2u_pipeline(spread)
        resident = client.run(_resident_understanders)
    assert sorted(resident.values()) == [1, 1]  # both worker processes loaded the model once and answered

    a, b = _results(single), _results(spread)
    assert len(a["predictions"]) == 8 * 9 and len(a["thoughts"]) == 8 * 4
    assert len({r[6] for r in a["predictions"]}) > 1  # outputs differ between items: a real comparison
    for key in ("predictions", "thoughts", "metrics", "quarantine"):
        assert a[key] == b[key], key
    # where batches run is no part of the run's identity: the run id ignores `executor:`
    without = RunConfig.model_validate({k: v for k, v in spread.items() if k != "executor"})
    assert out["run_id"] == jobs.run_id_for(without, out["dataset_version"])


# ---- the per-stage cluster and the task policy ---------------------------------------------------

@task
def where_task(batch):
    return [(item, os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")) for item in batch]


@flow
def where_flow(cfg: dict):
    with executor.batch_runner(RunConfig.model_validate(cfg)) as runner:
        return [f.result() for f in runner.map(where_task, [[i] for i in range(6)])]


@pytest.mark.slow
def test_stage_cluster_maps_batches_in_order_over_worker_processes(prefect_harness, tmp_path):
    cfg = _config(tmp_path, tmp_path, {"kind": "dask", "n_workers": 2, "gpus_per_worker": 0})
    out = [row for batch in where_flow(cfg) for row in batch]
    assert [r[0] for r in out] == list(range(6))
    assert {r[2] for r in out} == {""} and os.getpid() not in {r[1] for r in out}


def task_run_of(batch, tag):
    from prefect.runtime import task_run

    return [(x, tag, task_run.id) for x in batch]


@flow
def grouped_flow(cfg: dict):
    with executor.batch_runner(RunConfig.model_validate(cfg)) as runner:
        return list(runner.map_batches(task_run_of, [[i] for i in range(7)], tag="t"))


@pytest.mark.slow
def test_batches_go_several_to_a_task_run_and_come_back_one_by_one_in_order(prefect_harness, tmp_path):
    cfg = _config(tmp_path, tmp_path, {"batches_per_task": 3, "max_in_flight": 1})
    out = grouped_flow(cfg)
    assert [batch[0][:2] for batch in out] == [(i, "t") for i in range(7)]  # one result per batch, in order
    runs = [batch[0][2] for batch in out]
    assert runs[0] == runs[1] == runs[2] != runs[3] == runs[4] == runs[5] != runs[6]  # 3 + 3 + 1
    assert executor.ExecutorSpec().batches_per_task == 8 and executor.ExecutorSpec().in_flight() == 2


CALLS: list[str] = []


@task
def flaky_task(batch, error):
    CALLS.append(error)
    if CALLS.count(error) == 1:
        raise {"connection": ConnectionResetError("peer reset"), "data": ValueError("bad row")}[error]
    return batch


@flow
def flaky_flow(cfg: dict, error: str):
    with executor.batch_runner(RunConfig.model_validate(cfg)) as runner:
        result = runner.map(flaky_task, [[1]], error=error)[0].result(raise_on_failure=False)
    return result if isinstance(result, list) else type(result).__name__


@pytest.mark.slow
def test_batch_tasks_retry_transient_errors_only(prefect_harness, tmp_path):
    cfg = _config(tmp_path, tmp_path, {"retries": 2, "retry_delay_s": 0, "retry_jitter": 0})
    assert flaky_flow(cfg, "connection") == [1] and CALLS.count("connection") == 2
    assert flaky_flow(cfg, "data") == "ValueError" and CALLS.count("data") == 1


def test_policy_tags_timeout_and_transient_classes():
    spec = executor.ExecutorSpec(task_timeout_s=600, retries=3, retry_delay_s=2)
    t = executor.with_policy(where_task, spec)
    assert "gpu" in t.tags and t.timeout_seconds == 600 and t.retries == 3
    assert t.retry_delay_seconds == [2, 4, 8] and t.retry_jitter_factor == 0.5
    from prefect.cache_policies import NO_CACHE

    from g2u_tasks.understanding.stage import answer_batch

    plain = executor.with_policy(answer_batch, spec)  # a core batch function gets the same policy
    assert plain.name == "answer-batch" and plain.fn is answer_batch and plain.retries == 3
    assert all(x.cache_policy is NO_CACHE and x.persist_result is False for x in (t, plain))
    import httpx
    from botocore.exceptions import ClientError, EndpointConnectionError
    from prefect.task_engine import TaskRunTimeoutError

    throttled = ClientError({"Error": {"Code": "SlowDown"}}, "PutObject")
    denied = ClientError({"Error": {"Code": "AccessDenied"}}, "PutObject")
    try:
        raise RuntimeError("write failed") from EndpointConnectionError(endpoint_url="http://s3")
    except RuntimeError as exc:
        wrapped = exc
    response = httpx.Response(503, request=httpx.Request("GET", "http://x"))
    assert all(executor.is_transient(e) for e in (
        ConnectionResetError(), TimeoutError(), httpx.ConnectTimeout("t"), throttled, wrapped,
        httpx.HTTPStatusError("busy", request=response.request, response=response)))
    assert not any(executor.is_transient(e) for e in (
        ValueError(), FileNotFoundError(), PermissionError(), denied, TaskRunTimeoutError("slow batch")))
    with pytest.raises(ValueError, match="address needs"):
        executor.ExecutorSpec(address="tcp://h:8786")


@task
def nap_task(batch):
    import time
    start = time.monotonic()
    time.sleep(0.5)
    return start, time.monotonic()


@flow
def nap_flow(cfg: dict):
    with executor.batch_runner(RunConfig.model_validate(cfg)) as runner:
        return [f.result() for f in runner.map(nap_task, [[i] for i in range(3)])]


@pytest.mark.slow
def test_gpu_tag_concurrency_limit_holds_batches_to_one_at_a_time(prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client

    tag = f"gpu-{tmp_path.name}"  # fresh tag: the server briefly caches "no limit" for tags it has seen
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag=tag, concurrency_limit=1)
        try:
            spans = sorted(nap_flow(_config(tmp_path, tmp_path, {"gpu_tag": tag})))
        finally:
            client.delete_concurrency_limit_by_tag(tag)
    assert all(later[0] >= earlier[1] - 0.01 for earlier, later in zip(spans, spans[1:]))
