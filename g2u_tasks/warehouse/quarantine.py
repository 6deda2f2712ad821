"""Quarantine rows: what failed, where it was going, and why. Never silently dropped."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from g2u_tasks.records import QUARANTINE_SCHEMA, canonical_json


def quarantine_row(run_id: str, stage: str, benchmark: str | None, item_id: str | None, reason: str,
                   record: dict[str, Any] | None = None) -> dict:
    return {
        "run_id": run_id, "stage": stage, "benchmark": benchmark, "item_id": item_id, "reason": reason,
        "record": canonical_json(record or {}), "recorded_at": datetime.now(timezone.utc),
    }


def quarantine_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA)
