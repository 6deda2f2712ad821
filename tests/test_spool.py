"""ImageSpool: items held without their image bytes, which come back only as each batch is built."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from g2u_tasks.batching import in_batches
from g2u_tasks.benchmarks.loaders import load_benchmark
from g2u_tasks.spool import ImageSpool
from g2u_tasks.thoughts.planning import PlanJob

REPO = Path(__file__).resolve().parents[1]


def _items():
    return load_benchmark("DemoShapes", str(REPO / "data/demo/DemoShapes.tsv"), limit=5)


def test_slim_items_drop_their_bytes_and_get_them_back_exactly():
    items = _items()
    with ImageSpool() as spool:
        slim = [spool.slim(it) for it in items]
        assert all(it.images == () for it in slim)
        assert [dataclasses.replace(it, images=()) for it in items] == slim  # nothing else changes
        assert [spool.with_images(it) for it in reversed(slim)] == list(reversed(items))
        other = dataclasses.replace(items[0], item_id="never-spooled")
        assert spool.with_images(other) is other


def test_batches_are_built_as_they_are_taken_with_the_images_of_their_items():
    items = _items()
    with ImageSpool() as spool:
        jobs = [PlanJob(spool.slim(it), seed, f"plan-{it.item_id}-{seed}") for it in items for seed in (0, 1)]
        taken = []

        def stream():  # a stream of elements is consumed once, as batches are built
            for job in jobs:
                taken.append(job)
                yield job

        batches = in_batches(stream(), 4, spool.with_images, count=len(jobs))
        assert len(batches) == 3 and taken == []  # nothing built before it is iterated to
        it = iter(batches)
        first = next(it)
        assert len(taken) == 4 and [j.plan_id for j in first] == [j.plan_id for j in jobs[:4]]
        assert [j.item for j in first] == [items[0], items[0], items[1], items[1]]
        assert first[0].item is first[1].item  # read once per item and batch
        rest = list(it)
        assert [len(b) for b in rest] == [4, 2] and rest[-1][-1].item == items[-1]
    assert all(j.item.images == () for j in jobs)  # the held elements never gained the bytes
