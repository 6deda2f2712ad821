"""Helpers for tests that run the real `g2u` CLI as a subprocess (its own Prefect home and server)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import yaml

REPO = Path(__file__).resolve().parents[2]
G2U = [sys.executable, "-m", "flows.cli"]


def small_config(root: Path, model: Path, **extra) -> Path:
    """A two-item run (reference generator, the tiny LLaVA) with its store and warehouse under root."""
    cfg = {
        "store": f"file://{root / 'store'}",
        "warehouse": str(root / "wh.duckdb"),
        "benchmarks": [{"name": "DemoShapes", "source": str(REPO / "data/demo/DemoShapes.tsv"), "limit": 2}],
        "families": ["identity"],
        "modes": ["baseline", "replace"],
        "understander": {"backend": "transformers", "model": str(model), "params": {"max_new_tokens": 2}},
        "batch_size": 2,
        **extra,
    }
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli_env(**extra: str) -> dict:
    """The environment of a CLI subprocess: no Prefect settings of this process (the harness's server),
    so the CLI starts its own; the repository on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def stop(proc: subprocess.Popen) -> None:
    """End a subprocess we started in its own session, and whatever it spawned."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment holds `marker` (every process a CLI run started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                status = (entry / "status").read_text()
                if "State:\tZ" not in status:  # a zombie waits for its reaper, it runs nothing
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def table_counts(warehouse: str | Path) -> dict:
    """Rows per warehouse table, read through a plain read-only connection."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                for t in ("items", "thoughts", "predictions", "metrics", "runs", "quarantine")}
    finally:
        con.close()


def run_in_terminal(args: list[str], cwd: Path, env: dict, cols: int = 120, timeout_s: float = 540) -> list[str]:
    """Run a command on a pseudo-terminal of `cols` columns, as a person's shell would; returns the
    screen it leaves (pyte emulates the terminal: live bars redraw in place, as they would on screen)."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    import pyte

    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 50, cols, 0, 0))
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=child, stdout=child, stderr=child, start_new_session=True)
    os.close(child)
    screen = pyte.HistoryScreen(cols, 50, history=100_000)
    stream = pyte.ByteStream(screen)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if select.select([main], [], [], 1)[0]:
                try:
                    data = os.read(main, 65536)
                except OSError:  # EIO: the command closed the terminal
                    break
                if not data:
                    break
                stream.feed(data)
            elif proc.poll() is not None:
                break
        else:
            raise TimeoutError(f"{args} still running after {timeout_s} s")
        assert proc.wait(timeout=30) == 0, "\n".join(_screen_lines(screen))
    finally:
        stop(proc)
        os.close(main)
    return _screen_lines(screen)


def _screen_lines(screen) -> list[str]:
    """Every line the terminal showed, scrolled off or on screen, without trailing blank lines."""
    lines = ["".join(row[x].data for x in range(screen.columns)).rstrip() for row in screen.history.top]
    lines += [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines
