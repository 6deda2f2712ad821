"""Faults that must not lose a run: a warehouse held by another process (bounded wait, then the
command that finishes the run from the store), a full disk under the warehouse (one clear error,
nothing half-loaded), kill -9 of `g2u run` (no orphan process; concurrent runs keep their own
Prefect state)."""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
import uuid

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.local_server import reap_stale
from g2u_tasks.warehouse import database as warehouse
from tests.flows.conftest import G2U, cli_env, processes_with, small_config, stop, table_counts

HOLD = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(float(sys.argv[2]))"


def _hold_lock(path, seconds: float) -> subprocess.Popen:
    """Another process with the warehouse open for writing (as a notebook would have it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_is_waited_for_with_a_bound(tmp_path):
    path = tmp_path / "wh.duckdb"
    holder = _hold_lock(path, 2)
    try:
        with pytest.raises(warehouse.WarehouseLockedError, match=rf"locked by PID {holder.pid} .*waited 0.3 s"):
            warehouse.connect(path, lock_wait_s=0.3)
        started = time.monotonic()
        con = warehouse.connect(path, lock_wait_s=30)  # the holder lets go after 2 s
        con.close()
        assert time.monotonic() - started > 0.5
    finally:
        stop(holder)


def _g2u(root, *args, **env) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess (its own Prefect home and server, as a user's shell runs it)."""
    return subprocess.run([*G2U, *args], cwd=root, env=cli_env(**env), capture_output=True, text=True, timeout=540)


@pytest.fixture(scope="module")
def locked_run(tmp_path_factory, tiny_llava):
    """`g2u run` while another process holds the warehouse: the run is stored, not loaded."""
    root = tmp_path_factory.mktemp("locked")
    path = small_config(root, tiny_llava)
    holder = _hold_lock(root / "wh.duckdb", 600)
    try:
        out = _g2u(root, "run", str(path), **{warehouse.LOCK_WAIT_ENV: "1"})
    finally:
        stop(holder)
    return root, path, out


@pytest.mark.slow
def test_locked_warehouse_says_how_to_finish_and_load_finishes(locked_run):
    root, path, out = locked_run
    lines = out.stderr.strip().splitlines()
    # Prefect logs the failed flow run above it (with its traceback); the CLI's last word is one line
    assert out.returncode == 1 and lines[-1].startswith("error: run "), out.stdout[-2000:] + out.stderr[-3000:]
    assert "is locked by PID" in lines[-1] and "g2u load " in lines[-1] and f"--config {path}" in lines[-1]
    run_id = lines[-1].split("g2u load ", 1)[1].split()[0]
    assert (root / "store/runs" / run_id).is_dir()

    done = CliRunner().invoke(app, ["load", run_id, "--config", str(path)])
    assert done.exit_code == 0, done.output
    assert table_counts(root / "wh.duckdb")["predictions"] == 2 * 2  # 2 items x (baseline, identity/replace)
    again = _g2u(root, "run", str(path))  # the uninterrupted run, on top: same rows
    assert again.returncode == 0 and "0 thought(s) generated" in again.stdout, again.stdout[-3000:]
    assert table_counts(root / "wh.duckdb")["predictions"] == 4
    missing = CliRunner().invoke(app, ["load", "no-such-run", "--config", str(path)])
    assert missing.exit_code == 2 and "run no-such-run has no stored outputs" in missing.output


def _file_size_limit(limit: int):
    def apply():  # in the child: a write past `limit` bytes fails (EFBIG) instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
def test_full_disk_under_the_warehouse_is_one_clear_error(locked_run):
    root, path, out = locked_run
    run_id = out.stderr.strip().splitlines()[-1].split("g2u load ", 1)[1].split()[0]
    before = table_counts(root / "wh.duckdb")
    (root / "wh.duckdb.wal").unlink(missing_ok=True)
    done = subprocess.run([*G2U, "load", run_id, "--config", str(path)], cwd=root, env=cli_env(),
                          capture_output=True, text=True, timeout=300, preexec_fn=_file_size_limit(4096))
    err = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stdout + done.stderr
    assert err[-1].startswith(f"error: run {run_id} is stored but not loaded: warehouse") and "File too large" in err[-1]
    assert "Traceback" not in done.stderr and "cannot rollback" not in done.stderr
    assert table_counts(root / "wh.duckdb") == before  # nothing half-loaded, nothing lost


@pytest.mark.slow
def test_kill_9_leaves_no_orphan_and_concurrent_runs_keep_their_own_prefect(tmp_path, tiny_llava):
    runs = {}
    for name in ("killed", "survivor"):
        (tmp_path / name).mkdir()
        marker = f"G2U_TEST_RUN={uuid.uuid4().hex}"
        with (tmp_path / f"{name}.log").open("w") as log:  # a file: a full pipe would stall the run
            proc = subprocess.Popen([*G2U, "run", str(small_config(tmp_path / name, tiny_llava))], cwd=tmp_path,
                                    env=cli_env(G2U_TEST_RUN=marker.split("=", 1)[1]), stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        runs[name] = (proc, marker)
    killed, marker = runs["killed"]
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "killed/store").exists():  # mid-run: its flows have started writing
            assert killed.poll() is None and time.monotonic() < deadline, (tmp_path / "killed.log").read_text()
            time.sleep(0.5)
        assert len(processes_with(marker)) >= 2  # the CLI and its Prefect server
        homes = {p.parent.name for p in (tmp_path / ".g2u/prefect").glob("*/pids.json")}
        assert len(homes) == 2  # two runs, two Prefect homes (databases, servers)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=10)
        deadline = time.monotonic() + 15
        while processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert processes_with(marker) == []

        survivor = runs["survivor"][0]
        survivor.wait(timeout=480)
        output = (tmp_path / "survivor.log").read_text()
        assert survivor.returncode == 0, output[-3000:]
        assert "0 failed" in output and processes_with(runs["survivor"][1]) == []
        assert reap_stale(tmp_path / ".g2u/prefect") == []  # the killed run's server already went with it
        assert list((tmp_path / ".g2u/prefect").iterdir()) == []  # and its home is cleaned up
    finally:
        for proc, _ in runs.values():
            stop(proc)
