"""One resident unified model serving both roles (generator and understander).

The registry keeps one *role object* per role per full spec. A unified backend's role objects share
the heavy part through `get_unified(spec, loader)`, keyed by what changes loading only: backend,
model, revision, build, trust_remote_code and the backend's load params (e.g. dtype, device). Role
params (max_new_tokens, cfg weight, ...) stay out of the key, so a config whose generator and
understander name the same model loads it once, and both roles' calls take that model's one lock.
Load params must match in both specs (or be omitted in both) for the model to be shared.

Adding a unified model is one module: subclass `UnifiedBackend`, declare `load_params` and
`role_params` (together every param it reads), implement `load`, `generate` and `answer`, and
decorate the class with `@register_unified("<backend>")`.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

from PIL import Image

from g2u_tasks.backends import registry
from g2u_tasks.backends.generators.base import GenerateRequest
from g2u_tasks.backends.understanders.base import UnderstandRequest
from g2u_tasks.config import ModelSpec
from g2u_tasks.records import canonical_json

# Params that change how weights are loaded (the rest are per-role call options).
LOAD_PARAMS = ("dtype", "device", "device_map", "attn_implementation")

def load_spec(spec: ModelSpec, load_params: tuple[str, ...] = LOAD_PARAMS) -> ModelSpec:
    """The spec with params reduced to the load params: what the loader sees and the cache keys on."""
    return spec.model_copy(update={"params": {k: spec.params[k] for k in load_params if k in spec.params}})


def unified_key(spec: ModelSpec, load_params: tuple[str, ...] = LOAD_PARAMS) -> str:
    return "unified:" + canonical_json(load_spec(spec, load_params).model_dump())


def get_unified(spec: ModelSpec, loader: Callable[[ModelSpec], Any],
                load_params: tuple[str, ...] = LOAD_PARAMS) -> Any:
    """The resident object `loader(load_spec(spec))`, loaded once per process per load key."""
    lspec = load_spec(spec, load_params)
    return registry.shared(unified_key(spec, load_params), lambda: loader(lspec))


class UnifiedBackend:
    """Both roles of one unified model. Subclasses implement `load`, `generate` and `answer`; the
    registry serialises every call of both roles on the shared model (`model_key`)."""

    load_params: ClassVar[tuple[str, ...]] = LOAD_PARAMS
    role_params: ClassVar[tuple[str, ...]] = ()  # per-call options of either role

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.params = dict(spec.params)
        self.name = spec.label()
        self.notes: str | None = None
        self.model_key = unified_key(spec, self.load_params)
        self.resident = get_unified(spec, type(self).load, self.load_params)  # shared by both roles

    @classmethod
    def load(cls, spec: ModelSpec) -> Any:
        """Load the model; `spec.params` holds only `load_params`."""
        raise NotImplementedError

    def generate(self, batch: list[GenerateRequest]) -> list[Image.Image]:
        raise NotImplementedError

    def answer(self, batch: list[UnderstandRequest]) -> list[str]:
        raise NotImplementedError


def register_unified(name: str):
    """Class decorator: register one UnifiedBackend class as generator AND understander backend `name`."""

    def deco(cls: type[UnifiedBackend]) -> type[UnifiedBackend]:
        accepted = (*cls.load_params, *cls.role_params)  # one class serves both roles: one set
        registry.register("generator", name, accepted)(cls)
        registry.register("understander", name, accepted)(cls)
        return cls

    return deco
