"""The run's own Prefect server: services with nothing to act on are off, task runs are still recorded."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.flows.conftest import cli_env

SNIPPET = r"""
import json, time
from pathlib import Path
import httpx
from prefect import flow, task
from flows.local_server import isolated_prefect

@task
def double(x):
    return 2 * x

@flow
def tiny():
    return double(21)

with isolated_prefect(Path("homes")) as url:
    services = httpx.get(f"{url}/admin/settings").json()["server"]["services"]
    answer = tiny()
    deadline, recorded = time.monotonic() + 60, []
    while not recorded and time.monotonic() < deadline:  # the recorder writes task runs from events
        recorded = httpx.post(f"{url}/task_runs/filter", json={}).json()
        time.sleep(0.2)
    print(json.dumps({"enabled": {k: v["enabled"] for k, v in services.items() if isinstance(v, dict)},
                      "answer": answer, "task_runs": [(r["name"], r["state_type"]) for r in recorded]}))
"""


@pytest.mark.slow
def test_run_server_skips_unused_services_and_still_records_task_runs(tmp_path):
    out = subprocess.run([sys.executable, "-c", SNIPPET], cwd=tmp_path, env=cli_env(), capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    enabled = got["enabled"]
    off = ["scheduler", "late_runs", "foreman", "pause_expirations", "triggers", "event_persister"]
    assert [name for name in off if enabled[name]] == []
    assert enabled["task_run_recorder"] and enabled["repossessor"]  # task-run history, concurrency leases
    assert got["answer"] == 42
    assert [state for name, state in got["task_runs"] if name.startswith("double")] == ["COMPLETED"]
