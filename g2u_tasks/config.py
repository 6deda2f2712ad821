"""Run configuration (DESIGN §7): YAML validated by pydantic, with `--set key=value` overrides."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from g2u_tasks.records import DEFAULT_MODES, canonical_json, sha256_hex


# Storage options never carry secrets: they end up in flow parameters, run records and logs.
_SECRET_OPTION_KEYS = {
    "key", "secret", "token", "password", "passwd", "access_key", "secret_key", "session_token",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "access_key_id",
    "secret_access_key", "account_key", "sas_token", "client_secret", "credentials",
}
_SECRET_OPTION_WORDS = ("secret", "password", "token", "credential", "access_key")


def is_secret_option(name: str) -> bool:
    low = str(name).lower()
    return low in _SECRET_OPTION_KEYS or any(w in low for w in _SECRET_OPTION_WORDS)


def secret_option_paths(options: Any, prefix: str = "") -> list[str]:
    """Dotted paths of secret-bearing keys anywhere in a (nested) options mapping."""
    if not isinstance(options, dict):
        return []
    found = []
    for k, v in options.items():
        path = f"{prefix}{k}"
        if is_secret_option(k):
            found.append(path)
        found += secret_option_paths(v, f"{path}.")
    return found


class ModelSpec(BaseModel):
    """A generator or understander: backend + model id (local path or hub id) + params."""

    model_config = ConfigDict(extra="forbid")

    backend: str
    model: str | None = None
    revision: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    # Name of a small offline model the project can build at `model` when the path is missing.
    build: str | None = None
    trust_remote_code: bool = False

    def cache_key(self) -> str:
        return canonical_json(self.model_dump())

    def label(self) -> str:
        return f"{self.backend}:{self.model}" if self.model else self.backend


class JudgeConfig(BaseModel):
    """An optional LLM judge on an OpenAI-compatible endpoint; its key comes from `api_key_env` only."""

    model_config = ConfigDict(extra="forbid")

    base_url: str
    model: str | None = None  # None: the reference judge model for each benchmark
    api_key_env: str = "OPENAI_API_KEY"
    max_retries: int = 2
    timeout_s: float = 300.0
    concurrency: int = 4


class BenchmarkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    source: str
    question_type: Literal["mcq", "yes_no", "open", "numeric"] | None = None
    limit: int | None = None


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store: str = "file://.g2u/store"
    warehouse: str = ".g2u/warehouse.duckdb"
    benchmarks: list[BenchmarkSpec]
    families: list[str] = ["detail_enhancement", "context_expansion", "structural_visualisation", "identity"]
    families_dir: str | None = None  # extra family YAML files, searched before the built-ins
    modes: list[Literal["baseline", "concat", "replace", "replace_gated", "concat_conversation"]] = list(DEFAULT_MODES)
    prompt_source: Literal["template", "self", "planner"] = "template"
    # prompt_source=planner: the external model that picks the family and writes the instruction
    # (e.g. {backend: openai, model: gpt-4o, params: {base_url: ...}}; its key comes from the environment).
    planner: ModelSpec | None = None
    plan_max_new_tokens: int = Field(128, ge=8)  # answer budget of a planning call (self; planner default)
    gate_psnr_db: float = 25.0  # replace_gated: the thought replaces the original only above this PSNR
    seeds: list[int] = [0]
    generator: ModelSpec = ModelSpec(backend="reference")
    understander: ModelSpec
    batch_size: int = Field(16, ge=1)
    judge: JudgeConfig | None = None
    run_id: str | None = None
    storage_options: dict[str, Any] = Field(default_factory=dict)
    # Where batches run (flows/executor.py validates it): {kind: local|dask, address, n_workers, gpus_per_worker, ...}
    executor: dict[str, Any] | None = None
    # Optional semantic fidelity per thought (thoughts.embed_sim): a CLIP/SigLIP-style model; only
    # model, revision and params.device are used (backend ignored, e.g. "transformers").
    similarity_model: ModelSpec | None = None

    @field_validator("families")
    @classmethod
    def _unique_families(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"families listed twice: {v}")
        return v

    @field_validator("modes")
    @classmethod
    def _unique_modes(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"modes listed twice: {v}")
        return v

    @model_validator(mode="after")
    def _planner_when_needed(self) -> "RunConfig":
        if self.prompt_source == "planner" and self.planner is None:
            raise ValueError("prompt_source: planner needs a `planner` model spec, e.g. "
                             "planner: {backend: openai, model: NAME, params: {base_url: URL}}")
        return self

    @field_validator("storage_options")
    @classmethod
    def _no_secrets_in_storage_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = secret_option_paths(v)
        if bad:
            raise ValueError(
                f"storage_options must not hold credentials ({', '.join(bad)}): they would be written into "
                "flow parameters, run records and logs. Put them in the environment (AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) or name a profile: storage_options: {profile: NAME}; "
                "endpoint_url, region and profile are allowed here"
            )
        if "region" in v:  # s3fs/botocore spell it client_kwargs.region_name; every fsspec reader gets v
            v = dict(v)
            region = v.pop("region")
            client = dict(v.get("client_kwargs") or {})
            if client.setdefault("region_name", region) != region:
                raise ValueError(f"storage_options: region {region!r} contradicts client_kwargs.region_name")
            v["client_kwargs"] = client
        return v

    def fingerprint(self) -> str:
        """Hash of everything that changes results (the run id is derived from it)."""
        body = self.model_dump(exclude={"run_id", "warehouse", "executor"})  # executor: where, not what
        for key, default in _FINGERPRINT_NEUTRAL.items():  # keys added later: at their default they
            if body.get(key) == default:  # leave older configs' run ids unchanged
                body.pop(key)
        return sha256_hex(canonical_json(body))[:12]


_FINGERPRINT_NEUTRAL = {"planner": None, "plan_max_new_tokens": 128, "gate_psnr_db": 25.0, "similarity_model": None}


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node: Any = data
    parts = dotted.split(".")
    for p in parts[:-1]:
        if isinstance(node, list):
            node = node[int(p)]
        else:
            node = node.setdefault(p, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config and apply `key.sub=value` overrides (values parsed as YAML)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    for ov in overrides or []:
        if "=" not in ov:
            raise ValueError(f"--set expects key=value, got {ov!r}")
        key, raw = ov.split("=", 1)
        _set_dotted(data, key.strip(), yaml.safe_load(raw))
    return RunConfig.model_validate(data)
