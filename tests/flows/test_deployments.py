"""prefect.yaml on a real Prefect server: start it on loopback, create the work pools, deploy every
deployment, run the demo deployment on a process worker, and find its predictions in the warehouse.

Everything the server, the worker and the flow run write goes under tmp_path (PREFECT_HOME, store,
warehouse); each subprocess is started in its own session and ended by its id."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import pytest
import yaml

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]
POOLS = ("g2u-process", "g2u-gpu")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """End a subprocess we started (its own session) and whatever it spawned."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _wait_healthy(api: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"prefect server not healthy after {timeout_s}s:\n{log.read_text()[-3000:]}")


def _prefect(env: dict, *args: str, timeout: float = 180) -> str:
    out = subprocess.run([*PREFECT, "--no-prompt", *args], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"prefect {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A Prefect server on a free loopback port with its own PREFECT_HOME (and SQLite database)."""
    home = tmp_path_factory.mktemp("prefect-home")
    api = f"http://127.0.0.1:{_free_port()}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_API_URL=api, PREFECT_UI_ENABLED="false",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_WORKER_QUERY_SECONDS="2",
               PREFECT_SERVER_LOGGING_LEVEL="WARNING")
    log = home / "server.log"
    port = api.rsplit(":", 1)[1].split("/")[0]
    with log.open("w") as sink:
        proc = subprocess.Popen([*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", port], cwd=home,
                                env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(api, proc, log)
        yield {"api": api, "env": env, "home": home}
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def deployed(server):
    """Both work pools, then `prefect deploy --all` from the repository root."""
    for pool in POOLS:
        _prefect(server["env"], "work-pool", "create", pool, "--type", "process")
    _prefect(server["env"], "deploy", "--all")
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return server, spec


def _deployments(api: str) -> dict[str, dict]:
    rows = httpx.post(f"{api}/deployments/filter", json={}, timeout=30).raise_for_status().json()
    return {r["name"]: r for r in rows}


def test_every_deployment_is_registered_with_pool_params_and_schedule(deployed):
    server, spec = deployed
    live = _deployments(server["api"])
    assert set(live) == {d["name"] for d in spec["deployments"]}
    for d in spec["deployments"]:
        got = live[d["name"]]
        assert got["work_pool_name"] == d["work_pool"]["name"] and got["work_pool_name"] in POOLS
        assert got["parameters"]["config_path"] == d["parameters"]["config_path"]
        assert got["entrypoint"] == d["entrypoint"]
        crons = [(s["schedule"]["cron"], s["active"]) for s in got["schedules"]]
        assert crons == [(s["cron"], False) for s in d.get("schedules", [])]  # inactive by default
    assert live["understand"]["work_pool_name"] == "g2u-gpu"
    assert {live[n]["work_pool_name"] for n in ("validate-and-load", "report-weekly")} == {"g2u-process"}


def test_demo_deployment_runs_to_completion_on_a_process_worker(deployed, tiny_llava, tmp_path):
    server, _ = deployed
    cfg = yaml.safe_load((REPO / "configs/demo.yaml").read_text())
    cfg.update(store=f"file://{tmp_path / 'store'}", warehouse=str(tmp_path / "wh.duckdb"))
    cfg["benchmarks"] = [{**b, "source": str(REPO / b["source"]), "limit": 3} for b in cfg["benchmarks"]]
    cfg["understander"] = {**cfg["understander"], "model": str(tiny_llava), "params": {"max_new_tokens": 4}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))

    out = _prefect(server["env"], "deployment", "run", "g2u_pipeline_from_config/demo",
                   "--param", f"config_path={tmp_path / 'run.yaml'}")
    flow_run_id = UUID.search(out).group(0)
    log = tmp_path / "worker.log"
    with log.open("w") as sink:
        worker = subprocess.Popen([*PREFECT, "worker", "start", "--pool", "g2u-process", "--run-once"], cwd=tmp_path,
                                  env=server["env"], stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        state = _wait_terminal(server["api"], flow_run_id, timeout_s=150)
        worker.wait(timeout=30)
    finally:
        _stop(worker)
    assert state == "COMPLETED", log.read_text()[-4000:]

    con = duckdb.connect(cfg["warehouse"], read_only=True)
    try:
        n_pred, n_items = con.execute("SELECT count(*), count(DISTINCT benchmark || item_id) FROM predictions").fetchone()
    finally:
        con.close()
    n = 3 * len(cfg["benchmarks"])
    assert n_items == n and n_pred == n * 9  # baseline + 4 families x (concat, replace)


def _wait_terminal(api: str, flow_run_id: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).raise_for_status().json()["state"]["type"]
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return state
        time.sleep(1)
    raise TimeoutError(f"flow run {flow_run_id} not finished after {timeout_s}s (last state {state})")


def test_stage_entry_points_chain_through_the_store(prefect_harness, tiny_llava, tmp_path):
    """materialise -> understand -> validate-and-load -> report as separate deployments would run them:
    each finds the dataset version and the run id from the store and the config alone."""
    from flows import deployments as d

    cfg = yaml.safe_load((REPO / "configs/demo.yaml").read_text())
    cfg.update(store=f"file://{tmp_path / 'store'}", warehouse=str(tmp_path / "wh.duckdb"))
    cfg["benchmarks"] = [{**cfg["benchmarks"][0], "source": str(REPO / cfg["benchmarks"][0]["source"]), "limit": 2}]
    cfg["understander"] = {**cfg["understander"], "model": str(tiny_llava), "params": {"max_new_tokens": 4}}
    path = str(tmp_path / "run.yaml")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    overrides = ["executor={kind: local, task_timeout_s: 600}"]

    assert d.materialise_from_config(path, overrides)["dataset_version"] == 0
    understood = d.understand_from_config(path, overrides)
    loaded = d.validate_and_load_from_config(path, overrides)
    assert loaded["run_id"] == understood["run_id"] and loaded["loaded"]["predictions"] == 2 * 9
    assert cfg["benchmarks"][0]["name"] in d.report_from_config(path, overrides, run_id=understood["run_id"])
    with pytest.raises(ValueError, match="executor.kind: Input should be"):
        d.materialise_from_config(path, ["executor={kind: ray}"])
