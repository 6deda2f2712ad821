"""How a stage's batches run. The stage sequences (thoughts.stage, understanding.stage) take a
`Batching`; flows/ passes one that maps Prefect tasks (threads or Dask workers), and anything
without Prefect (tests, GPU hosts) uses the default: every batch in this process, in order.

A batch function takes its batch as the keyword `batch` plus fixed keyword arguments, and returns
that batch's result; `map_batches(fn, batches, **fixed)` yields the results in batch order, taking
the batches (`Batches`, built lazily) one at a time as it submits them."""
from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass, replace
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")
MapBatches = Callable[..., Iterable[Any]]

LOG = logging.getLogger("g2u")


class Batches(Generic[T]):
    """`elements` in batches of `size`, each built only when iterated to (once: a stream of elements
    is consumed); its length is the number of batches. `count`: how many elements a stream holds
    (default len(elements)). with_images (ImageSpool.with_images): each element's `item` gets its
    image bytes back as its batch is built (read once per item and batch), so only the batches in
    flight hold them."""

    def __init__(self, elements: Iterable[T], size: int, with_images: Callable[[Any], Any] | None = None,
                 count: int | None = None):
        self.elements, self.size, self.with_images = elements, size, with_images
        self.count = len(elements) if count is None else count

    def __len__(self) -> int:
        return -(-self.count // self.size)

    def __iter__(self) -> Iterator[list[T]]:
        stream = iter(self.elements)
        while batch := list(itertools.islice(stream, self.size)):
            if self.with_images is None:
                yield batch
                continue
            full: dict[str, Any] = {}
            for x in batch:
                if x.item.ref not in full:
                    full[x.item.ref] = self.with_images(x.item)
            yield [dataclasses.replace(x, item=full[x.item.ref]) for x in batch]


def in_batches(elements: Iterable[T], size: int, with_images: Callable[[Any], Any] | None = None,
               count: int | None = None) -> Batches[T]:
    return Batches(elements, size, with_images, count)


def map_in_process(fn: Callable[..., T], batches: Iterable[list], **fixed: Any) -> Iterator[T]:
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

    def each(self, label: str, fn: Callable[..., T], todo: Batches | list[list],
             count_failed: Callable[[T], int] = _none_failed, **fixed: Any) -> Iterator[T]:
        """Every batch's result, in batch order, as it is taken, with progress under `label` (items
        done, and the failures so far as `count_failed(result)` counts them in each batch's result)."""
        if not len(todo):
            return
        sizes = batch_sizes(todo)
        report = self.progress or log_tally(self.log)
        tally = Tally(label, 0, len(todo), 0, sum(sizes), 0)
        report(tally)
        for size, result in zip(sizes, self.map_batches(fn, todo, **fixed)):
            tally = replace(tally, batches_done=tally.batches_done + 1, items_done=tally.items_done + size,
                            failed=tally.failed + count_failed(result))
            report(tally)
            yield result

    def run(self, label: str, fn: Callable[..., T], todo: Batches | list[list],
            count_failed: Callable[[T], int] = _none_failed, **fixed: Any) -> list[T]:
        """Every batch's result, in batch order, with progress under `label`."""
        return list(self.each(label, fn, todo, count_failed, **fixed))


def batch_sizes(todo: Batches | list[list]) -> list[int]:
    """How many elements each batch holds, without building a lazy one."""
    if isinstance(todo, Batches):
        n = len(todo)
        return [todo.size] * (n - 1) + [todo.count - todo.size * (n - 1)] if n else []
    return [len(batch) for batch in todo]
