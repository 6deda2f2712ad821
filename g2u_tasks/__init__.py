"""G2U functional core: records, benchmarks, families, backends, store, scoring, fidelity,
validation and warehouse. Never imports Prefect (GPU workers have none)."""

__version__ = "0.1.0"
