"""What a person watching a CLI run sees, while Prefect's logs keep everything.

- Flows report progress as log lines (g2u_tasks.batching.log_tally), which Prefect's API handler
  stores with every task's state; that never changes.
- Under `terminal()` (the CLI without --verbose) Prefect's console handler stands aside: warnings and
  errors still print, the rest feeds one live status line, and each batched step gets one bar (items
  done / total, rate, ETA, failures so far). Off a terminal (pipes, CI): a few plain lines per step.
- Without `terminal()` (deployments, tests calling flows) the console shows Prefect's lines as usual.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TaskID, TextColumn,
                           TimeRemainingColumn)
from rich.spinner import Spinner
from rich.text import Text

from g2u_tasks.batching import Tally, log_tally

# Settings read by what starts during the run (Dask workers' Prefect logging; transformers, imported
# when the first model loads): Prefect's console handler shows warnings only, model loads draw no bars.
QUIET_CHILDREN = {"PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
# Prefect's telemetry (a first-run notice and usage events from the SDK, heartbeats from a server):
# off unless the user set these, so an offline machine gets no notice and no failed upload.
NO_TELEMETRY = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}

_view: "View | None" = None  # the terminal() in effect, if any


def silence_telemetry() -> None:
    """Before Prefect is imported: its SDK reads DO_NOT_TRACK on import."""
    for key, value in NO_TELEMETRY.items():
        os.environ.setdefault(key, value)


def flow_progress(log) -> Callable[[Tally], None]:
    """A flow's progress: log lines for Prefect's logs, and the bars of terminal() when it is on."""
    logged = log_tally(log)

    def report(t: Tally) -> None:
        logged(t)
        if _view is not None:
            _view.show(t)
    return report


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f}/s" if task.speed else "")


def _plain(t: Tally, elapsed: float) -> str:
    rate = t.items_done / elapsed if elapsed > 0 else 0.0
    if t.batches_done == 0:
        return f"{t.label}: {t.items} items in {t.batches} batches"
    if t.items_done == t.items:
        return f"{t.label}: {t.items}/{t.items} items in {elapsed:.1f} s ({rate:.1f}/s), {t.failed} failed"
    eta = (t.items - t.items_done) / rate if rate else float("nan")
    return f"{t.label}: {t.items_done}/{t.items} items, {rate:.1f}/s, ETA {eta:.0f} s, {t.failed} failed"


class View:
    """One bar per step on a terminal (and a status line while it runs); elsewhere a line at the start
    of a step, at each quarter of its items and at its end."""

    def __init__(self, console: Console):
        self.console = console
        self.bars = Progress(TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("items"), _Rate(), TimeRemainingColumn(elapsed_when_finished=True),
                             TextColumn("{task.fields[failed]} failed"), console=console)
        self.spinner = Spinner("dots", text="starting (Prefect)")
        self.live = Live(Group(self.bars, self.spinner), console=console, refresh_per_second=8) \
            if console.is_terminal else None
        self.steps: dict[str, tuple[TaskID, float, int]] = {}  # label -> (bar, started, quarters shown)

    def status(self, text: str) -> None:
        if self.live is not None:
            self.spinner.update(text=Text(text, overflow="ellipsis", no_wrap=True))

    def show(self, t: Tally) -> None:
        if t.batches_done == 0:  # Batching.run reports each step before its first batch
            bar = self.bars.add_task(t.label, total=t.items, failed=0)
            self.steps[t.label] = (bar, time.monotonic(), -1)
        bar, started, shown = self.steps[t.label]
        self.bars.update(bar, completed=t.items_done, failed=t.failed)
        quarter = 4 * t.items_done // max(1, t.items)
        if self.live is None and quarter > shown:
            self.console.print(_plain(t, time.monotonic() - started), highlight=False)
            self.steps[t.label] = (bar, started, quarter)

    def print(self, line: str) -> None:
        self.console.print(Text(line), soft_wrap=True)

    def start(self) -> None:
        if self.live is not None:
            self.live.start()

    def stop(self) -> None:
        if self.live is not None:
            self.live.update(self.bars)  # the last frame keeps the bars, not the status line
            self.live.stop()


class _TerminalHandler(logging.Handler):
    """Stands in for Prefect's console handler: warnings and errors print above the bars, in one line
    each; a flow's other lines only become the status line."""

    def __init__(self, view: View, formatter: logging.Formatter | None):
        super().__init__(logging.INFO)
        self.view = view
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno >= logging.WARNING:  # the traceback stays in Prefect's logs (and --verbose)
                self.view.print(self.format(logging.makeLogRecord({**record.__dict__, "exc_info": None,
                                                                   "exc_text": None})))
            elif record.name.startswith("prefect.flow_runs") and not record.getMessage().startswith("View at "):
                self.view.status(f"{getattr(record, 'flow_name', '')}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)


@contextmanager
def terminal(verbose: bool = False) -> Iterator[View | None]:
    """A CLI run's terminal; yields its View, or None with `verbose` (Prefect's console lines as they are)."""
    global _view
    if verbose:
        yield None
        return
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()  # Prefect's handlers exist now, so they can be set aside
    root = logging.getLogger()
    consoles = [h for h in root.handlers if isinstance(h, PrefectConsoleHandler)]
    view = View(Console(stderr=True))
    handler = _TerminalHandler(view, consoles[0].formatter if consoles else None)
    saved = {k: os.environ.get(k) for k in QUIET_CHILDREN}
    os.environ.update(QUIET_CHILDREN)
    positions = [root.handlers.index(h) for h in consoles]
    for h in consoles:
        root.removeHandler(h)
    root.addHandler(handler)
    _view = view
    view.start()
    try:
        yield view
    finally:
        view.stop()
        _view = None
        root.removeHandler(handler)
        for pos, h in zip(positions, consoles):  # back where they were, so the handler order is as before
            root.handlers.insert(pos, h)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
