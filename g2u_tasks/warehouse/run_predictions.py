"""A run's predictions scored and validated from their parts (runs/<run_id>/predictions/), without
holding them all: scoring reads only the columns it needs, for the whole run at once (a suite
aggregates over all items of a condition); validation (a row-by-row suite) and the warehouse load
then take consecutive parts a chunk at a time, each with its verdicts attached."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterator

import polars as pl

from g2u_tasks.records import PREDICTIONS_SCHEMA
from g2u_tasks.scoring.judge import JudgeSpec
from g2u_tasks.scoring.stage import VERDICT_COLUMNS, ScoredRun, score_run, with_all_columns
from g2u_tasks.store.thought_store import ThoughtStore
from g2u_tasks.warehouse.quarantine import quarantine_row
from g2u_tasks.warehouse.validation import validate

# what scoring reads of a prediction
SCORING_COLUMNS = ["run_id", "benchmark", "item_id", "condition", "mode", "seed", "raw_output"]
# what validation reads of a prediction (and a quarantine row keeps): all but the prompt, the widest
# column, which only the load reads
VALIDATED_COLUMNS = [c for c in PREDICTIONS_SCHEMA.names if c != "prompt"]
CHUNK_ROWS = 4096  # rows validated and loaded at once (what a chunk costs grows with it)
CONCAT_PARTS = 256  # parts concatenated at once when scoring reads them (see _concat)
_ROW = "_chunk_row"


@dataclass
class CheckedPredictions:
    store: ThoughtStore
    run_id: str
    scored: ScoredRun  # narrow: the scoring columns and verdicts, in parts order
    offsets: list[int] = field(default_factory=lambda: [0])  # first row of each chunk (and the end)
    failed: dict[int, list[int]] = field(default_factory=dict)  # chunk -> its rows failing the suite
    quarantine: list[dict] = field(default_factory=list)  # their quarantine rows

    def chunks(self, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        """Consecutive parts, CHUNK_ROWS rows or more at a time (Great Expectations costs about as
        much per call as per thousands of rows), with their verdicts, in PREDICTIONS_SCHEMA's
        columns (older run files gain the newer ones); `columns`: only those."""
        names = [c for c in PREDICTIONS_SCHEMA.names if columns is None or c in columns]
        offset, held = 0, []
        parts = self.store.iter_run_parts(self.run_id, "predictions",
                                          columns=None if columns is None else [c for c in names if c not in VERDICT_COLUMNS])
        for part in itertools.chain(parts, [None]):
            if part is not None:
                held.append(part)
            rows = sum(p.height for p in held)
            if held and (rows >= CHUNK_ROWS or part is None):
                chunk = pl.concat(held, how="diagonal_relaxed")
                held = []
                verdicts = self.scored.predictions.slice(offset, rows).select(VERDICT_COLUMNS)
                offset += rows
                chunk = chunk.drop([c for c in VERDICT_COLUMNS if c in chunk.columns]).hstack(verdicts)
                yield with_all_columns(chunk).select(names)

    def good_chunks(self) -> Iterator[pl.DataFrame]:
        """The chunks without the rows that failed validation (those are in `quarantine`)."""
        for i, chunk in enumerate(self.chunks()):
            failed = self.failed.get(i)
            yield chunk.filter(~pl.int_range(pl.len()).is_in(failed)) if failed else chunk

    def metrics(self):
        """Metrics over the predictions that passed validation, from the verdicts already made."""
        drop = [self.offsets[i] + r for i, rows in self.failed.items() for r in rows]
        good = self.scored.predictions.filter(~pl.int_range(pl.len()).is_in(drop)) if drop else self.scored.predictions
        return self.scored.metrics(good)


def _concat(parts: Iterator[pl.DataFrame]) -> pl.DataFrame:
    """The parts as one frame in one chunk, concatenated CONCAT_PARTS at a time: a run's thousands of
    small parts kept as chunks cost more than their rows (about 100 MB at 4,500 parts of 16 rows)."""
    merged, held = [], []
    for part in parts:
        held.append(part)
        if len(held) == CONCAT_PARTS:
            merged.append(pl.concat(held, how="diagonal_relaxed", rechunk=True))
            held = []
    if not merged and not held:
        return pl.from_arrow(PREDICTIONS_SCHEMA.empty_table())
    return pl.concat(merged + held, how="diagonal_relaxed", rechunk=True)


def check_predictions(store: ThoughtStore, run_id: str, items: pl.DataFrame,
                      judge: JudgeSpec | None) -> CheckedPredictions:
    """Score every prediction of the run once (each benchmark's own suite), then validate it chunk
    by chunk with the `predictions` suite, keeping only which rows failed and their quarantine rows."""
    frame = _concat(store.iter_run_parts(run_id, "predictions", columns=SCORING_COLUMNS))
    checked = CheckedPredictions(store, run_id, score_run(items, frame, judge))
    del frame
    for i, chunk in enumerate(checked.chunks(VALIDATED_COLUMNS)):
        checked.offsets.append(checked.offsets[-1] + chunk.height)
        _, bad = validate("predictions", chunk.with_row_index(_ROW))
        if bad.is_empty():
            continue
        checked.failed[i] = bad[_ROW].to_list()
        checked.quarantine += [
            quarantine_row(run_id, "predictions", r.get("benchmark"), r.get("item_id"), r["reasons"],
                           {k: v for k, v in r.items() if k not in ("reasons", _ROW)})
            for r in bad.iter_rows(named=True)]
    return checked
