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
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")
MapBatches = Callable[..., Iterable[Any]]
Progress = Callable[[Iterable[T], int, str], Iterable[T]]

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

    def each(self, label: str, fn: Callable[..., T], todo: Batches | list[list], **fixed: Any) -> Iterator[T]:
        """Every batch's result, in batch order, as it is taken, with progress under `label`."""
        results = self.map_batches(fn, todo, **fixed) if len(todo) else []
        if self.progress is not None:
            return iter(self.progress(results, len(todo), label))
        return log_progress(results, len(todo), label, self.log)

    def run(self, label: str, fn: Callable[..., T], todo: Batches | list[list], **fixed: Any) -> list[T]:
        """Every batch's result, in batch order, with progress under `label`."""
        return list(self.each(label, fn, todo, **fixed))
