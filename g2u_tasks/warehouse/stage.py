"""The load stage: a finished understanding run's files, validated with Great Expectations and
loaded into the DuckDB warehouse (jobs.validate_and_load); the flow and plain callers share it."""
from __future__ import annotations

from g2u_tasks import jobs
from g2u_tasks.batching import LOG
from g2u_tasks.config import RunConfig


def load_run(cfg: RunConfig, run_id: str, dataset_version: int | None, log=LOG) -> dict[str, int]:
    """Rows written per warehouse table (an idempotent load: a rerun replaces the run's rows)."""
    run = jobs.open_store(cfg).read_run_table(run_id, "run").to_arrow()
    written = jobs.validate_and_load(cfg, run_id, dataset_version, run)
    log.info("warehouse %s: %s", cfg.warehouse, ", ".join(f"{k}={v}" for k, v in written.items()))
    return written
