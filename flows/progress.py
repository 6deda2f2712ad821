"""Progress for long steps: a rich bar on a terminal, and a log line per tenth of the steps always."""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

from rich.progress import track

from g2u_tasks.batching import log_progress

T = TypeVar("T")


def progress(steps: Iterable[T], total: int, label: str, log) -> Iterator[T]:
    logged = log_progress(steps, total, label, log)
    if sys.stderr.isatty() and total > 1:
        return iter(track(logged, total=total, description=label, transient=True))
    return logged
