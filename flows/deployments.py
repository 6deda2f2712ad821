"""Deployment entry points (what prefect.yaml deploys): flows parameterised by a config path.

Each takes `config_path` (relative to the worker's working directory, or absolute) and `overrides`
(`key.sub=value` strings, as `g2u run --set`), loads and validates the config once, then passes
the RunConfig to the stage flow.
Stages run alone resolve what they need from the store: the latest dataset version, and the run id
that config gives on it (run ids are deterministic)."""
from __future__ import annotations

from prefect import flow

from flows import executor
from flows.config_ref import ConfigRef
from flows.pipeline import FLOW_OPTIONS, g2u_pipeline, materialise_thoughts, report, run_understanding, validate_and_load
from g2u_tasks import jobs
from g2u_tasks.analysis import reports
from g2u_tasks.config import check_before_work, load_config


def _config(config_path: str, overrides: list[str] | None, models: bool = True) -> ConfigRef:
    """The config, checked before any work (`executor:`, and local model folders when the flow
    runs models), by reference: the stage flows' parameters then hold no secret."""
    cfg = load_config(config_path, overrides)
    executor.executor_spec(cfg)
    if models:
        check_before_work(cfg)
    return ConfigRef.of(cfg)


def _version(ref: ConfigRef, dataset_version: int | None) -> int | None:
    return dataset_version if dataset_version is not None else jobs.open_store(ref.config()).version()


@flow(name="g2u_pipeline_from_config", **FLOW_OPTIONS)
def pipeline_from_config(config_path: str, overrides: list[str] | None = None) -> dict:
    """The main job: materialise -> understand -> validate -> load -> report."""
    cfg = _config(config_path, overrides)
    result = g2u_pipeline(cfg)
    return {k: v for k, v in result.items() if k != "report"}


@flow(name="materialise_from_config", **FLOW_OPTIONS)
def materialise_from_config(config_path: str, overrides: list[str] | None = None) -> dict:
    """Generate the thoughts new benchmark items (or families, seeds) need; one dataset version."""
    cfg = _config(config_path, overrides)
    return materialise_thoughts(cfg)


@flow(name="understand_from_config", **FLOW_OPTIONS)
def understand_from_config(config_path: str, overrides: list[str] | None = None,
                           dataset_version: int | None = None) -> dict:
    """Understanding passes pinned to a dataset version (default: the latest); returns the run id."""
    cfg = _config(config_path, overrides)
    version = _version(cfg, dataset_version)
    return {"run_id": run_understanding(cfg, version), "dataset_version": version}


@flow(name="validate_and_load_from_config", **FLOW_OPTIONS)
def validate_and_load_from_config(config_path: str, overrides: list[str] | None = None,
                                  dataset_version: int | None = None, run_id: str | None = None) -> dict:
    """Validate a finished understanding run and load it into the warehouse (one DuckDB load)."""
    cfg = _config(config_path, overrides, models=False)
    version = _version(cfg, dataset_version)
    run_id = run_id or jobs.run_id_for(cfg.config(), version)
    return {"run_id": run_id, "loaded": validate_and_load(cfg, run_id, version)}


@flow(name="report_from_config", **FLOW_OPTIONS)
def report_from_config(config_path: str, overrides: list[str] | None = None,
                       name: str = reports.DEFAULT_REPORT, run_id: str | None = None) -> str:
    """One SQL report over the config's warehouse, published as a Prefect artifact."""
    cfg = _config(config_path, overrides, models=False)
    return report(cfg.config().warehouse, name, run_id)
