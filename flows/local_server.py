"""A Prefect home and temporary server of a run's own, for CLI runs without a configured server.

Prefect's own temporary server is shared through its one local database (~/.prefect): two runs on
one machine contend for it (concurrency-slot 503s), and after kill -9 of the CLI the server lives on.
So, unless the user configured PREFECT_API_URL, each CLI run gets:

- its own PREFECT_HOME under .g2u/prefect/<pid>-<time>/ (database, result storage, logs);
- its own server on a free loopback port, started as our child with a parent-death signal (Linux):
  when the CLI dies, even by kill -9, the kernel ends the server with it;
- a pidfile per home; the next run ends any server whose CLI is gone (where the signal is
  unavailable) and deletes stale homes.

The home is deleted when the run ends, unless G2U_KEEP_PREFECT_HOME=1 (to inspect what Prefect kept)."""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

HOMES = Path(".g2u/prefect")
KEEP_ENV = "G2U_KEEP_PREFECT_HOME"
# Server services with nothing to act on in a run's own server (deployments and their schedules, late
# runs, workers, paused runs, automations) or that only feed the UI's event feed: off, they save about
# 2 ms of CPU per item of a sweep (docs/PERFORMANCE.md). Task runs, their states and the logs are still
# recorded (task_run_recorder stays on); the environment can turn any of them back on.
UNUSED_SERVICES = {f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in (
    "SCHEDULER", "LATE_RUNS", "FOREMAN", "PAUSE_EXPIRATIONS", "TRIGGERS", "EVENT_PERSISTER")}
_PR_SET_PDEATHSIG = 1


def configured_api_url() -> str | None:
    """The API URL the user configured (environment or Prefect profile), if any."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()  # its own group: a ctrl-C in the terminal reaches the CLI, which stops it in order
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale(homes: Path = HOMES) -> list[int]:
    """End servers whose CLI is gone and delete their homes; returns the server pids ended."""
    ended = []
    for pidfile in sorted(homes.glob("*/pids.json")):
        try:
            pids = json.loads(pidfile.read_text())
        except (OSError, ValueError):
            continue
        if _alive(pids.get("owner", 0)):
            continue
        server = pids.get("server", 0)
        if server and _alive(server):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(server, signal.SIGKILL)  # the server leads its own group
            ended.append(server)
        shutil.rmtree(pidfile.parent, ignore_errors=True)
    return ended


def _wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float, log_path: Path) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the run's Prefect server exited with code {proc.returncode} before it was "
                               f"ready; its log: {log_path}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the run's Prefect server did not answer at {url} within {timeout_s:.0f} s")


def _drain_to(url: str) -> None:
    """Send the logs and events still queued while the server is up (else they fail at exit)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=10, at_exit=False)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def isolated_prefect(homes: Path = HOMES, startup_timeout_s: float = 120) -> Iterator[str | None]:
    """Run the body against a Prefect home and server of its own; yields the API URL (None when
    the user configured a server, which is then used as it is)."""
    if configured_api_url():
        yield None
        return
    homes.mkdir(parents=True, exist_ok=True)
    reap_stale(homes)
    home = (homes / f"{os.getpid()}-{time.time_ns()}").resolve()
    home.mkdir()
    settings = {"PREFECT_HOME": str(home), "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
                "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}"}
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    import prefect

    log = open(home / "server.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent), "--factory",
         "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "error", "--lifespan", "on"],
        env={**UNUSED_SERVICES, **os.environ, **settings, "PREFECT_UI_ENABLED": "0",
             "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT__SERVER_EPHEMERAL": "1",
             "PREFECT__SERVER_FINAL": "1"},
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=_die_with_parent)
    (home / "pids.json").write_text(json.dumps({"owner": os.getpid(), "server": proc.pid}))
    from prefect.settings import (PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_API_URL, PREFECT_HOME,
                                  PREFECT_LOCAL_STORAGE_PATH, temporary_settings)

    saved = {k: os.environ.get(k) for k in (*settings, "PREFECT_API_URL")}
    try:
        _wait_healthy(proc, url, startup_timeout_s, home / "server.log")
        os.environ.update({**settings, "PREFECT_API_URL": url})  # Dask workers and subprocesses inherit it
        with temporary_settings(updates={
            PREFECT_HOME: str(home), PREFECT_LOCAL_STORAGE_PATH: str(home / "storage"),
            PREFECT_API_DATABASE_CONNECTION_URL: settings["PREFECT_API_DATABASE_CONNECTION_URL"],
            PREFECT_API_URL: url,
        }):
            try:
                yield url
            finally:
                _drain_to(url)
    finally:
        _stop(proc)
        log.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if os.environ.get(KEEP_ENV) == "1":
            (home / "pids.json").unlink(missing_ok=True)  # kept for inspection; no server to reap
        else:
            shutil.rmtree(home, ignore_errors=True)
