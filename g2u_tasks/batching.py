"""How a stage's batches run. The stage sequences (thoughts.stage, understanding.stage) take a
`Batching`; flows/ passes one that maps Prefect tasks (threads or Dask workers), and anything
without Prefect (tests, GPU hosts) uses the default: every batch in this process, in order.

A batch function takes its batch as the keyword `batch` plus fixed keyword arguments, and returns
that batch's result; `map_batches(fn, batches, **fixed)` yields the results in batch order."""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")
MapBatches = Callable[..., Iterable[Any]]

LOG = logging.getLogger("g2u")


def in_batches(seq: Sequence[T], size: int) -> list[list[T]]:
    return [list(seq[i : i + size]) for i in range(0, len(seq), size)]


def map_in_process(fn: Callable[..., T], batches: list[list], **fixed: Any) -> Iterator[T]:
    """Sequential: one batch at a time in this thread (resident models need no sharing)."""
    for batch in batches:
        yield fn(batch=batch, **fixed)


@dataclass(frozen=True)
class Tally:
    """Where a step's batches stand: reported before the first batch and after each one."""

    label: str
    batches_done: int
    batches: int
    items_done: int
    items: int
    failed: int  # items of the finished batches that failed


Progress = Callable[[Tally], None]


def log_tally(log) -> Progress:
    """Progress as log lines: at the start, at every tenth of the batches, and at the last."""
    def report(t: Tally) -> None:
        if t.batches_done == t.batches or t.batches_done % max(1, t.batches // 10) == 0:
            log.info("%s: %d/%d batches, %d/%d items, %d failed", t.label, t.batches_done, t.batches,
                     t.items_done, t.items, t.failed)
    return report


def _none_failed(result: Any) -> int:
    return 0


@dataclass(frozen=True)
class Batching:
    map_batches: MapBatches = map_in_process
    log: Any = LOG  # a logging.Logger or adapter (Prefect's run logger)
    progress: Progress | None = None  # None: log_tally lines on `log`
    # (name, notes) of the understander, loaded where the batches run; None: in this process
    load_understander: Callable[[Any], tuple[str, str | None]] | None = None

    def run(self, label: str, fn: Callable[..., T], todo: list[list],
            count_failed: Callable[[T], int] = _none_failed, **fixed: Any) -> list[T]:
        """Every batch's result, in batch order, with progress under `label` (items done, and the
        failures so far as `count_failed(result)` counts them in each batch's result)."""
        if not todo:
            return []
        report = self.progress or log_tally(self.log)
        tally = Tally(label, 0, len(todo), 0, sum(map(len, todo)), 0)
        report(tally)
        results = []
        for batch, result in zip(todo, self.map_batches(fn, todo, **fixed)):
            results.append(result)
            tally = replace(tally, batches_done=tally.batches_done + 1, items_done=tally.items_done + len(batch),
                            failed=tally.failed + count_failed(result))
            report(tally)
        return results
