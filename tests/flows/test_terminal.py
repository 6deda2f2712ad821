"""What `g2u run` shows a person: live bars and a short summary on a terminal, a few plain lines off
one, telemetry off; Prefect's own logs of the same run still hold every task's state."""
from __future__ import annotations

import io
import logging
import os
import sqlite3

import pytest
from rich.console import Console

from flows.progress import NO_TELEMETRY, View, silence_telemetry, terminal
from g2u_tasks.batching import Tally
from tests.flows.conftest import G2U, REPO, cli_env, run_in_terminal, small_config


def _tallies(label: str, batches: int, size: int, failing_batch: int) -> list[Tally]:
    return [Tally(label, i, batches, i * size, batches * size, size if i > failing_batch else 0)
            for i in range(batches + 1)]


def test_off_a_terminal_a_step_prints_a_few_plain_lines():
    out = io.StringIO()
    view = View(Console(file=out, force_terminal=False, width=200))
    view.start()
    for t in _tallies("answering", 100, 4, failing_batch=10):
        view.show(t)
    view.stop()
    lines = out.getvalue().splitlines()
    assert lines[0] == "answering: 400 items in 100 batches"
    assert [line.split(",")[0] for line in lines[1:4]] == [f"answering: {n}/400 items" for n in (100, 200, 300)]
    assert lines[4].startswith("answering: 400/400 items in ") and lines[4].endswith(", 4 failed")
    assert len(lines) == 5


def test_on_a_terminal_each_step_is_one_bar():
    out = io.StringIO()
    view = View(Console(file=out, force_terminal=True, width=120))
    view.start()
    for label in ("generating thoughts", "answering"):
        for t in _tallies(label, 20, 8, failing_batch=19):
            view.show(t)
    view.stop()
    text = out.getvalue()
    assert "generating thoughts" in text and "160/160" in text and "8 failed" in text
    assert "answering: " not in text  # no plain lines while bars draw


def test_task_lines_leave_the_console_and_warnings_stay(capsys):
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import APILogHandler, PrefectConsoleHandler

    ensure_logging_setup()
    root, tasks = logging.getLogger(), logging.getLogger("prefect.task_runs")
    before = list(root.handlers)
    local = {"send_to_api": False, "task_run_name": "answer-batch-1"}  # what a task run's records carry
    with terminal() as view:
        assert view is not None and not any(isinstance(h, PrefectConsoleHandler) for h in root.handlers)
        assert any(isinstance(h, APILogHandler) for h in tasks.handlers)  # Prefect's logs get everything
        tasks.info("Finished in state Completed()", extra=local)
        tasks.warning("a batch is slow", extra=local)
        try:
            raise ValueError("boom")
        except ValueError:
            tasks.error("a batch failed", exc_info=True, extra=local)
    err = capsys.readouterr().err
    assert "Task run 'answer-batch-1' - a batch is slow" in err and "Finished in state" not in err
    assert "a batch failed" in err and "Traceback" not in err  # one line; the traceback stays in Prefect's logs
    assert "Logging error" not in err
    assert root.handlers == before
    with terminal(verbose=True) as view:
        assert view is None and root.handlers == before
        # Prefect's console handler writes to the stream it was made with (an earlier test's, in a full
        # run): read what it prints from its own console
        console = next(h for h in root.handlers if isinstance(h, PrefectConsoleHandler)).console
        printed, console.file = console.file, io.StringIO()
        try:
            tasks.info("Finished in state Completed()", extra=local)
        finally:
            printed, console.file = console.file, printed
    assert "Finished in state Completed()" in printed.getvalue()


def test_telemetry_is_off_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("DO_NOT_TRACK", raising=False)
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")
    silence_telemetry()
    assert os.environ["DO_NOT_TRACK"] == NO_TELEMETRY["DO_NOT_TRACK"]
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"


@pytest.mark.slow
def test_run_on_a_terminal_is_short_and_prefect_keeps_every_task_state(tmp_path, tiny_llava):
    benchmarks = [{"name": n, "source": str(REPO / f"data/demo/{n}.tsv"), "limit": 4} for n in ("DemoShapes", "DemoYesNo")]
    path = small_config(tmp_path, tiny_llava, benchmarks=benchmarks, families=["identity", "detail_enhancement"],
                        modes=["baseline", "concat", "replace"])  # 16 thoughts, 40 answers, batches of 2
    # HOME: a machine where Prefect never ran (its first-run telemetry notice would print here)
    env = cli_env(G2U_KEEP_PREFECT_HOME="1", HOME=str(tmp_path))
    screen = run_in_terminal([*G2U, "run", str(path)], cwd=tmp_path, env=env, cols=200)

    head = screen[:next(i for i, line in enumerate(screen) if line.startswith("gain_over_baseline — "))]
    shown = "\n".join(screen)
    assert len(head) <= 30, shown
    assert any(line.startswith("generating thoughts") and "16/16 items" in line and "0 failed" in line
               for line in head), shown
    assert any(line.startswith("answering") and "40/40 items" in line for line in head), shown
    assert "dataset v0: 16 thought(s) generated, 0 reused, 0 failed · run " in shown
    assert f"40 prediction(s), 0 quarantined row(s) · warehouse {tmp_path / 'wh.duckdb'}" in shown
    assert "Task run" not in shown and "telemetry" not in shown.lower()

    (home,) = (tmp_path / ".g2u/prefect").iterdir()
    con = sqlite3.connect(home / "prefect.db")
    try:
        batches = dict(con.execute("SELECT id, name FROM task_run WHERE name LIKE 'generate-thoughts-%' "
                                   "OR name LIKE 'answer-batch-%'").fetchall())
        finished = {r[0] for r in con.execute("SELECT task_run_id FROM log WHERE message = "
                                              "'Finished in state Completed()'")}
        progress = [r[0] for r in con.execute("SELECT message FROM log WHERE message LIKE 'answering: %'")]
    finally:
        con.close()
    # 8 + 20 batches, 8 to a task run (executor.batches_per_task): every task run's state, in Prefect's logs
    assert len(batches) == 1 + 3 and set(batches) <= finished
    assert progress[-1] == "answering: 20/20 batches, 40/40 items, 0 failed"
