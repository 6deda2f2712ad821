"""Progress for long steps: a rich bar on a terminal, and a Prefect log line per step always."""
from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from rich.progress import track

T = TypeVar("T")


def progress(steps: list[T], label: str, log) -> Iterable[T]:
    total = len(steps)
    shown = track(steps, description=label, transient=True) if sys.stderr.isatty() and total > 1 else steps
    for i, step in enumerate(shown, 1):
        yield step
        if total and (i == total or i % max(1, total // 10) == 0):
            log.info("%s: %d/%d", label, i, total)
