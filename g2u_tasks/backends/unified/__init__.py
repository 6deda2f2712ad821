"""Unified models: one loaded network that both generates visual thoughts and answers questions."""
from g2u_tasks.backends.unified.base import UnifiedBackend, get_unified, register_unified

__all__ = ["UnifiedBackend", "get_unified", "register_unified"]
