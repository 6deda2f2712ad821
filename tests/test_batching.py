"""Batching.run: results in batch order, and progress (items done, failures so far) after every batch."""
import logging

from g2u_tasks.batching import Batching, Tally, in_batches


def _square(batch: list[int]) -> list[int]:
    return [x * x for x in batch]


def test_run_reports_items_and_failures_before_and_after_every_batch():
    tallies = []
    out = Batching(progress=tallies.append).run("squaring", _square, [[1, 2], [3], [4, 5, 6]],
                                                count_failed=lambda squares: sum(s > 10 for s in squares))
    assert out == [[1, 4], [9], [16, 25, 36]]
    assert tallies == [Tally("squaring", 0, 3, 0, 6, 0), Tally("squaring", 1, 3, 2, 6, 0),
                       Tally("squaring", 2, 3, 3, 6, 0), Tally("squaring", 3, 3, 6, 6, 3)]
    assert Batching(progress=tallies.append).run("nothing", _square, []) == [] and len(tallies) == 4


def test_default_progress_is_a_log_line_per_tenth_of_the_batches(caplog):
    log = logging.getLogger("g2u.test_batching")
    with caplog.at_level(logging.INFO, logger=log.name):
        Batching(log=log).run("squaring", _square, in_batches(list(range(40)), 2))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 11  # at 0, 2, 4, ..., 20 of 20 batches
    assert lines[0] == "squaring: 0/20 batches, 0/40 items, 0 failed"
    assert lines[-1] == "squaring: 20/20 batches, 40/40 items, 0 failed"
