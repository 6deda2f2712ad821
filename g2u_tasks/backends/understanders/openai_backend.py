"""Understander backend "openai": chat completions on any OpenAI-compatible endpoint.

Images go first as base64 PNG data URLs, then the prompt text; greedy decoding (temperature 0).
"""
from __future__ import annotations

import base64
from typing import Any

from g2u_tasks.config import ModelSpec
from g2u_tasks.images import encode_png
from g2u_tasks.backends.openai_client import OpenAIClient, OpenAIRequestError
from g2u_tasks.backends.understanders.base import UnderstandRequest, register_backend


def image_part(img) -> dict[str, Any]:
    b64 = base64.b64encode(encode_png(img)).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}}


@register_backend("openai")
class OpenAIUnderstander:
    def __init__(self, spec: ModelSpec):
        if not spec.model:
            raise ValueError("openai understander needs `model` (the served model name)")
        self.model = spec.model
        self.name = f"openai:{spec.model}"
        # A remote endpoint cannot be pinned to a revision; say so rather than pretend.
        self.notes = f"revision {spec.revision!r} is not enforced by the endpoint" if spec.revision else None
        self.max_new_tokens = int(spec.params.get("max_new_tokens", 16))
        self.extra_body: dict[str, Any] = dict(spec.params.get("extra_body", {}))  # e.g. vLLM sampling extras
        self.client = OpenAIClient(spec.params)

    def __repr__(self) -> str:
        return f"OpenAIUnderstander(model={self.model!r}, client={self.client!r})"

    def _body(self, req: UnderstandRequest) -> dict[str, Any]:
        content = [image_part(img) for img in req.images] + [{"type": "text", "text": req.prompt}]
        return {**self.extra_body, "model": self.model, "messages": [{"role": "user", "content": content}],
                "max_tokens": self.max_new_tokens, "temperature": 0}

    def _one(self, index: int, req: UnderstandRequest) -> str:
        data = self.client.post_json("/chat/completions", self._body(req), index)
        try:
            text = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            detail = "no choices[0].message in response"
            raise OpenAIRequestError(index, "POST /chat/completions", 200, detail, 1) from None
        return (text or "").strip()

    def answer(self, batch: list[UnderstandRequest]) -> list[str]:
        return self.client.map(self._one, batch)
