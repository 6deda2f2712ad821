"""Understanders: answer benchmark questions about images (with or without visual thoughts)."""
from g2u_tasks.backends.understanders.base import (
    UnderstandRequest,
    Understander,
    get_understander,
    register_backend,
)

__all__ = ["UnderstandRequest", "Understander", "get_understander", "register_backend"]
