"""Generator interface: `generate(batch of GenerateRequest) -> images`. Loading and the resident
cache live in g2u_tasks.backends.registry."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

from PIL import Image

from g2u_tasks.backends import registry
from g2u_tasks.thoughts.families import EditFamily


@dataclass
class GenerateRequest:
    image: Image.Image
    prompt: str
    seed: int
    family: EditFamily


GEN_TEXT_INFO = "g2u_gen_text"  # PIL info key: text the generator wrote with the image (thoughts.gen_text)


def with_gen_text(image: Image.Image, text: str | None) -> Image.Image:
    """The image carrying the generator's own text (e.g. BAGEL's think-mode plan) to the manifest."""
    if text:
        image.info[GEN_TEXT_INFO] = text
    return image


class Generator(Protocol):
    name: str

    def generate(self, batch: list[GenerateRequest]) -> list[Image.Image]: ...


def register_generator(name: str, params: Iterable[str] = ()):
    """Decorator: `@register_generator("x", params=...)` makes generator backend "x" build it from a
    ModelSpec; `params`: every key it reads from spec.params."""
    return registry.register("generator", name, params)


get_generator = registry.get_generator
