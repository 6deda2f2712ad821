"""Prefect 3 flows: materialise -> understand -> validate & load -> report, and the parent job.

Each stage flow runs the core's own stage sequence (g2u_tasks.*.stage) with a Batching that maps
its batches as Prefect tasks (flows/executor.py: where they run, and the one task policy). Flows
take the run config as a ConfigRef (flows/config_ref.py: Prefect records only the config with its
secrets masked) or as a typed RunConfig: Prefect validates a dict once, at the outermost call; the
parent passes its parameter on, so nested flows do not validate it again.

No flow persists its result, and results that Prefect writes anyway (a failed run's exception)
are JSON, never pickles: FLOW_OPTIONS."""
from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows import executor
from flows.config_ref import ConfigParam, resolve
from g2u_tasks.analysis import reports
from g2u_tasks.thoughts import stage as thought_stage
from g2u_tasks.understanding import stage as understanding_stage
from g2u_tasks.warehouse import database as warehouse
from g2u_tasks.warehouse import stage as load_stage


# Prefect writes a failed flow run's exception to result storage even with persistence off; JSON
# keeps it a type name and message instead of a pickle.
FLOW_OPTIONS = {"log_prints": True, "persist_result": False, "result_serializer": "json"}


@flow(name="materialise_thoughts", **FLOW_OPTIONS)
def materialise_thoughts(config: ConfigParam) -> dict:
    """Generate every missing thought for the config's items and families; one atomic commit."""
    cfg = resolve(config)
    with executor.batch_runner(cfg) as runner:  # the flow's task runner, or Dask workers (executor:)
        return thought_stage.materialise_thoughts(cfg, runner.batching(get_run_logger()))


@flow(name="run_understanding", **FLOW_OPTIONS)
def run_understanding(config: ConfigParam, dataset_version: int | None, materialised: dict | None = None) -> str:
    """Answer every item under baseline and each thought x mode, pinned to one dataset version."""
    cfg = resolve(config)
    with executor.batch_runner(cfg) as runner:
        return understanding_stage.run_understanding(cfg, dataset_version, materialised,
                                                     runner.batching(get_run_logger()))


@flow(name="validate_and_load", **FLOW_OPTIONS)
def validate_and_load(config: ConfigParam, run_id: str, dataset_version: int | None) -> dict:
    """Great Expectations over the run's outputs, then an idempotent load into DuckDB."""
    return load_stage.load_run(resolve(config), run_id, dataset_version, get_run_logger())


@flow(name="report", **FLOW_OPTIONS)
def report(warehouse_path: str, name: str = reports.DEFAULT_REPORT, run_id: str | None = None) -> str:
    """Render one SQL report as Markdown, publish it as a Prefect artifact, return the text."""
    con = warehouse.connect(warehouse_path, read_only=True)
    try:
        header = reports.run_header(con, run_id)
        frame = reports.run_report(con, name, run_id)
    finally:
        con.close()
    text = f"## {name}\n\n{header}\n\n{reports.render(frame, 'md')}\n"
    create_markdown_artifact(markdown=text, key=name.replace("_", "-"), description=f"G2U report {name}")
    return text


@flow(name="g2u_pipeline", **FLOW_OPTIONS)
def g2u_pipeline(config: ConfigParam, report_name: str = reports.DEFAULT_REPORT) -> dict:
    """The main job: materialise -> understand -> validate -> load -> report."""
    cfg = resolve(config)
    executor.executor_spec(cfg)  # a bad `executor:` block fails before any work
    m = materialise_thoughts(config)
    run_id = run_understanding(config, m["dataset_version"], m)
    written = validate_and_load(config, run_id, m["dataset_version"])
    text = report(cfg.warehouse, report_name, run_id)
    return {"run_id": run_id, **m, "loaded": written, "report": text}
