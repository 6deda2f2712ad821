"""One resident unified model serving both roles (generator and understander).

`get_generator(spec)` and `get_understander(spec)` each keep one *role object* per full spec. A
unified backend's role objects share the heavy part through `get_unified(spec, loader)`, keyed by
what changes loading only: backend, model, revision, build, trust_remote_code and the backend's
load params (e.g. dtype, device). Role params (max_new_tokens, cfg weight, ...) stay out of the key,
so a config whose generator and understander name the same model loads it once. Load params must
match in both specs (or be omitted in both) for the model to be shared.

Adding a unified model is one module: subclass `UnifiedBackend`, implement `load`, `_generate`
and `_answer`, and decorate the class with `@register_unified("<backend>")`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from PIL import Image, ImageOps

from g2u_tasks.config import ModelSpec
from g2u_tasks.backends.generators.base import GenerateRequest, register_generator
from g2u_tasks.records import canonical_json
from g2u_tasks.backends.understanders.base import UnderstandRequest, register_backend

# Params that change how weights are loaded (the rest are per-role call options).
LOAD_PARAMS = ("dtype", "device", "device_map", "attn_implementation")


@dataclass
class _Resident:
    value: Any
    lock: threading.RLock = field(default_factory=threading.RLock)  # serialises both roles' calls


_RESIDENT: dict[str, _Resident] = {}
_LOCK = threading.Lock()


def load_spec(spec: ModelSpec, load_params: tuple[str, ...] = LOAD_PARAMS) -> ModelSpec:
    """The spec with params reduced to the load params: what the loader sees and the cache keys on."""
    return spec.model_copy(update={"params": {k: spec.params[k] for k in load_params if k in spec.params}})


def _resident(spec: ModelSpec, loader: Callable[[ModelSpec], Any], load_params: tuple[str, ...]) -> _Resident:
    lspec = load_spec(spec, load_params)
    key = canonical_json(lspec.model_dump())
    with _LOCK:  # held while loading: the second role waits and then reuses the first load
        if key not in _RESIDENT:
            _RESIDENT[key] = _Resident(loader(lspec))
        return _RESIDENT[key]


def get_unified(spec: ModelSpec, loader: Callable[[ModelSpec], Any],
                load_params: tuple[str, ...] = LOAD_PARAMS) -> Any:
    """The resident object `loader(load_spec(spec))`, loaded once per process per load key."""
    return _resident(spec, loader, load_params).value


def clear_unified() -> None:
    """Drop resident models (tests, memory pressure). Role objects in the registries keep theirs."""
    with _LOCK:
        _RESIDENT.clear()


class UnifiedBackend:
    """Both roles of one unified model. Subclasses implement `load`, `_generate` and `_answer`."""

    load_params: ClassVar[tuple[str, ...]] = LOAD_PARAMS

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.params = dict(spec.params)
        self.name = spec.label()
        self.notes: str | None = None
        entry = _resident(spec, type(self).load, self.load_params)
        self.resident = entry.value  # shared by every role object of the same load key
        self._lock = entry.lock

    @classmethod
    def load(cls, spec: ModelSpec) -> Any:
        """Load the model; `spec.params` holds only `load_params`."""
        raise NotImplementedError

    def generate(self, batch: list[GenerateRequest]) -> list[Image.Image]:
        with self._lock:
            return self._generate(batch)

    def answer(self, batch: list[UnderstandRequest]) -> list[str]:
        with self._lock:
            return self._answer(batch)

    def _generate(self, batch: list[GenerateRequest]) -> list[Image.Image]:
        raise NotImplementedError

    def _answer(self, batch: list[UnderstandRequest]) -> list[str]:
        raise NotImplementedError


def register_unified(name: str):
    """Class decorator: register one UnifiedBackend class as generator AND understander backend `name`."""

    def deco(cls: type[UnifiedBackend]) -> type[UnifiedBackend]:
        register_generator(name)(cls)
        register_backend(name)(cls)
        return cls

    return deco


FIT_MODES = ("crop", "pad", "stretch")


def fit_to_source(img: Image.Image, size: tuple[int, int], mode: str = "crop") -> Image.Image:
    """Bring a model's output to the source's (width, height).

    crop: centre-crop to the source aspect, then resize (no distortion, no bars; the inverse of the
    pad-to-square that square-input processors apply). pad: letterbox the whole output (black bars).
    stretch: plain resize (distorts when aspects differ).
    """
    img = img.convert("RGB")
    if img.size == tuple(size):
        return img
    if mode == "crop":
        return ImageOps.fit(img, size, Image.Resampling.LANCZOS)
    if mode == "pad":
        return ImageOps.pad(img, size, Image.Resampling.LANCZOS, color=(0, 0, 0))
    if mode == "stretch":
        return img.resize(size, Image.Resampling.LANCZOS)
    raise ValueError(f"unknown fit mode {mode!r}; use one of {', '.join(FIT_MODES)}")
