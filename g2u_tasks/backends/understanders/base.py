"""Understander interface: `answer(batch of UnderstandRequest) -> texts`. Loading and the resident
cache live in g2u_tasks.backends.registry."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol

from PIL import Image

from g2u_tasks.backends import registry


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


def register_backend(name: str, params: Iterable[str] = ()):
    """Decorator: `@register_backend("x", params=...)` makes understander backend "x" build it from a
    ModelSpec; `params`: every key it reads from spec.params."""
    return registry.register("understander", name, params)


get_understander = registry.get_understander
