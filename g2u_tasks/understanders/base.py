"""Understander protocol, backend registry and the per-process resident instance cache."""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Callable, Protocol

from PIL import Image

from g2u_tasks.config import ModelSpec


@dataclass
class UnderstandRequest:
    images: list[Image.Image]
    prompt: str


class Understander(Protocol):
    name: str  # e.g. "transformers:<model>"
    notes: str | None  # e.g. "random weights: numbers are not meaningful"

    def answer(self, batch: list[UnderstandRequest]) -> list[str]: ...


# Backends register themselves on import; modules listed here are imported on first use.
_BACKENDS: dict[str, Callable[[ModelSpec], Understander]] = {}
_BACKEND_MODULES = {
    "transformers": "g2u_tasks.understanders.transformers_backend",
    "openai": "g2u_tasks.understanders.openai_backend",
    "janus": "g2u_tasks.unified.janus",
    "bagel": "g2u_tasks.unified.bagel",
}

_instances: dict[str, Understander] = {}
_lock = threading.RLock()


def register_backend(name: str):
    """Class/factory decorator: `@register_backend("x")` makes backend "x" build it from a ModelSpec."""

    def deco(factory):
        _BACKENDS[name] = factory
        return factory

    return deco


def known_backends() -> list[str]:
    return sorted(set(_BACKENDS) | set(_BACKEND_MODULES))


def _factory(backend: str) -> Callable[[ModelSpec], Understander]:
    if backend not in _BACKENDS and backend in _BACKEND_MODULES:
        importlib.import_module(_BACKEND_MODULES[backend])
    if backend not in _BACKENDS:
        raise ValueError(f"unknown understander backend {backend!r}; known: {known_backends()}")
    return _BACKENDS[backend]


def get_understander(spec: ModelSpec) -> Understander:
    """One loaded instance per process per spec (kept resident across batches)."""
    key = spec.cache_key()
    with _lock:
        inst = _instances.get(key)
        if inst is None:
            inst = _factory(spec.backend)(spec)
            _instances[key] = inst
        return inst


def clear_understanders() -> None:
    """Drop resident instances (tests, memory pressure)."""
    with _lock:
        _instances.clear()
