"""Understander protocol, backend registry and the per-process resident instance cache."""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol

from PIL import Image

from g2u_tasks.config import ModelSpec


@dataclass
class Turn:
    """One conversation turn: role user | assistant, its images (shown first), then its text."""

    role: str
    images: list[Image.Image] = field(default_factory=list)
    text: str = ""


@dataclass
class UnderstandRequest:
    """One call: images + prompt as one user turn, or a multi-turn conversation in `turns`.

    With `turns`, `images` is every turn's images in order and `prompt` a plain-text transcript, so
    a backend that does not read `turns` still sees every image and word (build with `from_turns`).
    `seed`/`temperature` are for backends that sample; greedy backends ignore them."""

    images: list[Image.Image]
    prompt: str
    turns: list[Turn] | None = None
    seed: int | None = None
    temperature: float | None = None

    @classmethod
    def from_turns(cls, turns: list[Turn], **kw) -> "UnderstandRequest":
        if not turns or turns[-1].role != "user":
            raise ValueError("a conversation must end with a user turn")
        images = [im for t in turns for im in t.images]
        transcript = "\n".join(f"{t.role.upper()}: {'<image> ' * len(t.images)}{t.text}".rstrip() for t in turns)
        return cls(images=images, prompt=transcript, turns=list(turns), **kw)


class Understander(Protocol):
    name: str  # e.g. "transformers:<model>"
    notes: str | None  # e.g. "random weights: numbers are not meaningful"

    def answer(self, batch: list[UnderstandRequest]) -> list[str]: ...


# Backends register themselves on import; modules listed here are imported on first use.
_BACKENDS: dict[str, Callable[[ModelSpec], Understander]] = {}
_BACKEND_MODULES = {
    "transformers": "g2u_tasks.backends.understanders.transformers_backend",
    "openai": "g2u_tasks.backends.understanders.openai_backend",
    "janus": "g2u_tasks.backends.unified.janus",
    "bagel": "g2u_tasks.backends.unified.bagel",
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
