"""Deployment entry points: flows parameterised by a config path (what prefect.yaml schedules)."""
from __future__ import annotations

from prefect import flow

from flows.pipeline import g2u_pipeline
from g2u_tasks.config import load_config


@flow(name="g2u_pipeline_from_config")
def pipeline_from_config(config_path: str, overrides: list[str] | None = None) -> dict:
    """The main job for a config file (relative to the working directory)."""
    cfg = load_config(config_path, overrides)
    result = g2u_pipeline(cfg.model_dump(mode="json"))
    return {k: v for k, v in result.items() if k != "report"}
