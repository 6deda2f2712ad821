"""Run configuration: YAML validated by pydantic, with `--set key=value` overrides."""
from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from g2u_tasks.images import DEFAULT_MAX_PIXELS
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


# Secrets anywhere else in a config: model specs and the judge go into thought keys, the manifest,
# releases and run records, where nothing can be masked afterwards, so there they are refused.
# Key names are matched on whole segments so that e.g. max_new_tokens is not a "token".
_SECRET_KEY_SEGMENTS = {"secret", "password", "passwd", "pwd", "token", "credential", "credentials",
                        "authorization", "auth", "cookie", "apikey", "signature", "sas", "bearer"}
_SECRET_KEY_PARTS = ("api_key", "apikey", "access_key", "private_key", "secret")
# Keys whose values are HTTP header values or auth material: long random strings there are secrets.
_AUTHISH_KEYS = {"headers", "header", "authorization", "auth", "x-api-key", "api-key", "cookie", "proxy-authorization"}
_SECRET_VALUE_PATTERNS = [
    re.compile(r"^\s*(bearer|basic|token)\s+\S{8,}", re.I),  # an Authorization header value
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),  # OpenAI-style API keys
    re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"),  # AWS access key ids
    re.compile(r"\b(ghp|gho|ghs|github_pat|hf|xox[abp])_[A-Za-z0-9_]{20,}"),  # GitHub, Hugging Face, Slack
    re.compile(r"^[a-z][a-z0-9+.\-]*://[^/@\s:]+:[^/@\s]+@", re.I),  # user:password@ in a URL
    re.compile(r"[?&](x-amz-signature|x-amz-credential|sig|signature|token|access_token)=", re.I),  # signed URLs
]
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_secret_key(name: Any) -> bool:
    """A key that names secret material (api_key, hf_token, Authorization …), not one that counts
    tokens (max_new_tokens) or names an environment variable (api_key_env)."""
    low = str(name).lower()
    if low.endswith("_env"):
        return False
    segments = set(re.split(r"[^a-z0-9]+", low))
    return bool(segments & _SECRET_KEY_SEGMENTS) or any(p in low for p in _SECRET_KEY_PARTS) \
        or low in _SECRET_OPTION_KEYS


def _entropy_bits(text: str) -> float:
    counts = Counter(text)
    return -sum(c / len(text) * math.log2(c / len(text)) for c in counts.values())


def is_secret_value(value: Any, under_auth_key: bool = False) -> bool:
    """A value shaped like a credential: Bearer/Basic headers, sk-… keys, AWS key ids, tokens,
    passwords in URLs, signed URLs; under header/auth-ish keys also any long high-entropy string."""
    if not isinstance(value, str):
        return False
    if any(p.search(value) for p in _SECRET_VALUE_PATTERNS):
        return True
    word = value.strip()
    return under_auth_key and len(word) >= 20 and " " not in word and _entropy_bits(word) >= 3.5


def secret_paths(node: Any, prefix: str = "", under_auth_key: bool = False) -> list[str]:
    """Dotted paths of secret-named keys (holding a value) and secret-shaped values in a nested config."""
    found: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{prefix}{k}"
            if str(k).lower().endswith("_env") and isinstance(v, str) and not _ENV_NAME.match(v):
                found.append(path)  # *_env names a variable; anything else is the secret itself
            elif is_secret_key(k) and v not in (None, "", True, False) and not isinstance(v, (dict, list)):
                found.append(path)
            else:
                found += secret_paths(v, f"{path}.", under_auth_key or str(k).lower() in _AUTHISH_KEYS)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += secret_paths(v, f"{prefix}{i}.", under_auth_key)
    elif is_secret_value(node, under_auth_key):
        found.append(prefix.rstrip("."))
    return found


REDACTED = "<redacted>"


def redact_secrets(node: Any, under_auth_key: bool = False) -> Any:
    """A copy with secret-named keys' values and secret-shaped values masked (for records and logs)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if is_secret_key(k) and v not in (None, "", True, False):
                out[k] = REDACTED
            else:
                out[k] = redact_secrets(v, under_auth_key or str(k).lower() in _AUTHISH_KEYS)
        return out
    if isinstance(node, list):
        return [redact_secrets(v, under_auth_key) for v in node]
    return REDACTED if is_secret_value(node, under_auth_key) else node


class ConfigError(ValueError):
    """A run config that cannot run, in one line naming the key (the CLI prints it as `error: …`)."""


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    pass


def one_line(err: ValidationError, known: Any = (), prefix: str = "") -> str:
    """A pydantic ValidationError as one line: `key.path: reason; …` (`known`: the top-level keys,
    `prefix`: the key path of the validated block)."""
    parts = []
    for e in err.errors():
        loc = prefix + ".".join(str(x) for x in e["loc"]) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown key (known: {', '.join(known)})" if known and len(e["loc"]) == 1 else "unknown key"
        elif e["type"] == "missing":
            msg = "required key missing"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


# Backends that load weights from `model` (a local folder or a hub id) in this process.
LOCAL_MODEL_BACKENDS = frozenset({"transformers", "diffusers", "janus", "bagel"})


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

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        # On the raw mapping, so that a credential under an unknown key (api_key: ...) is named as one
        # rather than reported as merely "unknown"; a ModelSpec passed in was checked when built.
        bad = secret_paths({k: v for k, v in data.items() if k != "backend"}) if isinstance(data, dict) else []
        if bad:
            raise ValueError(
                f"{', '.join(bad)} looks like a credential: model specs are written into thought keys, the "
                "manifest and releases. Give the backend the name of an environment variable (api_key_env) instead")
        return data

    def looks_like_path(self) -> bool:
        """`model` names a local folder (absolute, ./, ../, ~, or deeper than a hub id's org/name)."""
        m = self.model or ""
        return m.startswith(("/", ".", "~")) or "\\" in m or m.count("/") >= 2

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

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        bad = secret_paths(data) if isinstance(data, dict) else []  # raw: api_key is named, not "unknown"
        if bad:
            raise ValueError(f"{', '.join(bad)} looks like a credential: the judge's key comes from the "
                             "environment variable named by api_key_env only")
        return data


class ImagesConfig(BaseModel):
    """What image references in a benchmark file may reach, and how large an image may be.

    The defaults are the safe policy; the loaders apply them too when no config is passed."""

    model_config = ConfigDict(extra="forbid")

    # Folders (paths or fsspec URIs) that path values may resolve into, besides the benchmark
    # file's own folder; relative paths are taken from the working directory.
    roots: list[str] = Field(default_factory=list)
    allow_remote: bool = False  # http(s) image URLs are fetched only when this is on
    remote_max_bytes: int = Field(32 * 1024 * 1024, ge=1)
    remote_timeout_s: float = Field(20.0, gt=0)  # for the whole download, not per read
    # Pixel budget per image, checked on the header before decoding. It may only be lowered: the
    # later decodes (thoughts, understanding) apply the same default budget.
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, le=DEFAULT_MAX_PIXELS)
    oversize: Literal["refuse", "downscale"] = "refuse"


class BenchmarkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    source: str
    question_type: Literal["mcq", "yes_no", "open", "numeric"] | None = None
    limit: int | None = Field(None, ge=0)

    @field_validator("source")
    @classmethod
    def _no_secret_in_source(cls, v: str) -> str:
        if is_secret_value(v):
            raise ValueError("the source URL carries a credential (user:password@ or a signature); "
                             "use storage_options: {profile: NAME} or the environment")
        return v


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
    images: ImagesConfig = Field(default_factory=ImagesConfig)

    @field_validator("benchmarks")
    @classmethod
    def _unique_benchmarks(cls, v: list[BenchmarkSpec]) -> list[BenchmarkSpec]:
        if not v:
            raise ValueError("the list is empty; name at least one: benchmarks: [{name: NAME, source: FILE}]")
        twice = sorted(n for n, c in Counter(b.name for b in v).items() if c > 1)
        if twice:  # item ids are unique per benchmark only: two sources under one name would collide
            raise ValueError(f"benchmark name(s) listed twice: {', '.join(twice)}; give each source its own name")
        return v

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

    @field_validator("generator", "understander", "planner", "similarity_model")
    @classmethod
    def _backend_accepts_its_params(cls, spec: ModelSpec | None, info) -> ModelSpec | None:
        """The spec's backend exists and reads every param given (a typo or an unread key would
        otherwise be ignored yet still land in thought keys and releases)."""
        from g2u_tasks.backends.registry import check_spec  # backends import this module

        role = {"generator": "generator", "similarity_model": "similarity"}.get(info.field_name, "understander")
        return spec if spec is None else check_spec(role, spec)

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


_FINGERPRINT_NEUTRAL = {"planner": None, "plan_max_new_tokens": 128, "gate_psnr_db": 25.0, "similarity_model": None,
                        "images": ImagesConfig().model_dump()}


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node: Any = data
    parts = dotted.split(".")
    for depth, p in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[:depth]) or "the config"
        if isinstance(node, list):
            if not p.lstrip("-").isdigit():
                raise ConfigError(f"--set {dotted}: {where} is a list; expected an index, got {p!r}")
            i = int(p)
            if last and i == len(node):  # one past the end appends: --set benchmarks.2={...}
                node.append(value)
                return
            if not 0 <= i < len(node):
                raise ConfigError(f"--set {dotted}: {where} has {len(node)} entr{'y' if len(node) == 1 else 'ies'} "
                                  f"(indices 0..{len(node) - 1}), no index {i}")
            if last:
                node[i] = value
            else:
                node = node[i]
        elif isinstance(node, dict):
            if last:
                node[p] = value
            else:
                if node.get(p) is None:  # absent or null (e.g. `executor: null`): a new mapping
                    node[p] = {}
                node = node[p]
        else:
            raise ConfigError(f"--set {dotted}: {where} is a value ({node!r}), not a mapping or list")


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config and apply `key.sub=value` overrides (values parsed as YAML).

    Every problem is a ConfigError (a ValueError) with a one-line message naming the key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigFileNotFoundError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(err)}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run config is a mapping of keys, got {type(data).__name__}")
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"--set expects key=value, got {ov!r}")
        key, raw = ov.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {ov}: the value is not valid YAML: {_yaml_problem(err)}") from None
        _set_dotted(data, key.strip(), value)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{path}: {one_line(err, RunConfig.model_fields)}") from None


def check_before_work(cfg: RunConfig) -> RunConfig:
    """What a config names on this machine, checked before any work: local model folders exist
    (or are built: `build`). Hub ids (org/name) are left to the backend."""
    specs = {"generator": cfg.generator, "understander": cfg.understander, "planner": cfg.planner,
             "similarity_model": cfg.similarity_model}
    for key, spec in specs.items():
        if spec is None or spec.build or spec.backend not in LOCAL_MODEL_BACKENDS and key != "similarity_model":
            continue
        if spec.model and spec.looks_like_path() and not Path(spec.model).expanduser().exists():
            raise ConfigError(f"{key}.model: local model folder not found: {spec.model}")
    return cfg
