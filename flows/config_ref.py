"""Run configs passed to flows by reference, so that no secret reaches Prefect's records.

Prefect stores every flow-run parameter in its database (and shows it in the UI). A config may
hold a secret the run needs under an innocent name (storage_options.headers.Authorization), so the
flows take a `ConfigRef`: Prefect records only `public` (the config with secrets masked, as run
records keep it); the full RunConfig travels beside it as a private attribute, in this process
only. Flows also accept a RunConfig or a plain dict (tests, notebooks): those are recorded as given."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

from g2u_tasks import jobs
from g2u_tasks.config import RunConfig


class ConfigRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    public: dict[str, Any]
    _config: RunConfig | None = PrivateAttr(default=None)

    @classmethod
    def of(cls, cfg: RunConfig) -> "ConfigRef":
        ref = cls(public=jobs.public_config(cfg))
        ref._config = cfg
        return ref

    def config(self) -> RunConfig:
        if self._config is None:  # rebuilt from its public form (a Prefect retry of a stored run)
            raise ValueError("this ConfigRef has lost its config (configs are passed in-process only); "
                             "rerun from the config file: g2u run CONFIG, or a deployment with config_path")
        return self._config


ConfigParam = RunConfig | ConfigRef


def resolve(config: ConfigParam) -> RunConfig:
    return config.config() if isinstance(config, ConfigRef) else config
