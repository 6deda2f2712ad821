"""Generators: `generate(batch of (image, prompt, seed)) -> images`."""
from g2u_tasks.backends.generators.base import GenerateRequest, Generator, get_generator

__all__ = ["GenerateRequest", "Generator", "get_generator"]
