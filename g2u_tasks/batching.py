"""How a stage's batches run. The stage sequences (thoughts.stage, understanding.stage) take a
`Batching`; flows/ passes one that maps Prefect tasks (threads or Dask workers), and anything
without Prefect (tests, GPU hosts) uses the default: every batch in this process, in order.

A batch function takes its batch as the keyword `batch` plus fixed keyword arguments, and returns
that batch's result; `map_batches(fn, batches, **fixed)` yields the results in batch order."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")
MapBatches = Callable[..., Iterable[Any]]
Progress = Callable[[Iterable[T], int, str], Iterable[T]]

LOG = logging.getLogger("g2u")


def in_batches(seq: Sequence[T], size: int) -> list[list[T]]:
    return [list(seq[i : i + size]) for i in range(0, len(seq), size)]


def map_in_process(fn: Callable[..., T], batches: list[list], **fixed: Any) -> Iterator[T]:
    """Sequential: one batch at a time in this thread (resident models need no sharing)."""
    for batch in batches:
        yield fn(batch=batch, **fixed)


def log_progress(steps: Iterable[T], total: int, label: str, log) -> Iterator[T]:
    """A log line at every tenth of the steps, and at the last."""
    for i, step in enumerate(steps, 1):
        yield step
        if total and (i == total or i % max(1, total // 10) == 0):
            log.info("%s: %d/%d", label, i, total)


@dataclass(frozen=True)
class Batching:
    map_batches: MapBatches = map_in_process
    log: Any = LOG  # a logging.Logger or adapter (Prefect's run logger)
    progress: Progress | None = None  # None: log_progress lines on `log`
    # (name, notes) of the understander, loaded where the batches run; None: in this process
    load_understander: Callable[[Any], tuple[str, str | None]] | None = None

    def run(self, label: str, fn: Callable[..., T], todo: list[list], **fixed: Any) -> list[T]:
        """Every batch's result, in batch order, with progress under `label`."""
        results = self.map_batches(fn, todo, **fixed) if todo else []
        if self.progress is not None:
            return list(self.progress(results, len(todo), label))
        return list(log_progress(results, len(todo), label, self.log))
