"""Generator interface and the per-process resident cache of loaded generators."""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Callable, Protocol

from PIL import Image

from g2u_tasks.config import ModelSpec
from g2u_tasks.thoughts.families import EditFamily


@dataclass
class GenerateRequest:
    image: Image.Image
    prompt: str
    seed: int
    family: EditFamily


class Generator(Protocol):
    name: str

    def generate(self, batch: list[GenerateRequest]) -> list[Image.Image]: ...


# backend name -> module that registers it (imported lazily: heavy deps load only when used)
_BACKEND_MODULES = {
    "reference": "g2u_tasks.backends.generators.reference",
    "diffusers": "g2u_tasks.backends.generators.diffusers_backend",
    "openai": "g2u_tasks.backends.generators.openai_backend",
    "janus": "g2u_tasks.backends.unified.janus",
    "bagel": "g2u_tasks.backends.unified.bagel",
}
_FACTORIES: dict[str, Callable[[ModelSpec], Generator]] = {}
_LOADED: dict[str, Generator] = {}
_LOCK = threading.Lock()


def register_generator(name: str):
    def deco(factory: Callable[[ModelSpec], Generator]):
        _FACTORIES[name] = factory
        return factory

    return deco


def get_generator(spec: ModelSpec) -> Generator:
    """One loaded generator per process per spec, reused across batches."""
    key = spec.cache_key()
    with _LOCK:
        if key not in _LOADED:
            if spec.backend not in _FACTORIES and spec.backend in _BACKEND_MODULES:
                importlib.import_module(_BACKEND_MODULES[spec.backend])
            if spec.backend not in _FACTORIES:
                raise ValueError(
                    f"unknown generator backend {spec.backend!r}; known: {', '.join(sorted(_BACKEND_MODULES))}"
                )
            _LOADED[key] = _FACTORIES[spec.backend](spec)
        return _LOADED[key]
