"""Understander backend "openai": chat completions on any OpenAI-compatible endpoint.

One user message with the request's images as base64 PNG data URLs and the prompt text; greedy
decoding (temperature 0). Param `api` picks the message layout from `CHAT_APIS`:

  chat             images first, then the prompt as it is (OpenAI, vLLM, SGLang, LMDeploy).
  vllm-omni-bagel  vLLM-Omni's documented img2text request for BAGEL-7B-MoT: the text part first,
                   written in BAGEL's own chat tokens with one `<|image_pad|>` line per image,
                   then the images, and `modalities: ["text"]`.

Params (besides the client's): api ("chat"), max_new_tokens (16), extra_body (further JSON keys).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from g2u_tasks.config import ModelSpec
from g2u_tasks.backends.openai_client import CLIENT_PARAMS, OpenAIClient, OpenAIRequestError, data_url
from g2u_tasks.backends.understanders.base import UnderstandRequest, register_backend

PARAMS = CLIENT_PARAMS | {"api", "max_new_tokens", "extra_body"}


@dataclass(frozen=True)
class ChatAPI:
    """How the images and the prompt go into the one user message."""

    text_first: bool = False
    template: str = "{prompt}"  # {images}: `image_token` once per image
    image_token: str = ""
    modalities: tuple[str, ...] | None = None  # sent when set

    def text(self, prompt: str, n_images: int) -> str:
        return self.template.replace("{images}", self.image_token * n_images).replace("{prompt}", prompt)


CHAT_APIS = {
    "chat": ChatAPI(),
    "vllm-omni-bagel": ChatAPI(text_first=True, image_token="<|image_pad|>\n", modalities=("text",),
                               template="<|im_start|>user\n{images}{prompt}<|im_end|>\n<|im_start|>assistant\n"),
}


def image_part(img) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": data_url(img)}}


@register_backend("openai", PARAMS)
class OpenAIUnderstander:
    def __init__(self, spec: ModelSpec):
        if not spec.model:
            raise ValueError("openai understander needs `model` (the served model name)")
        self.model = spec.model
        self.name = f"openai:{spec.model}"
        # A remote endpoint cannot be pinned to a revision; say so rather than pretend.
        self.notes = f"revision {spec.revision!r} is not enforced by the endpoint" if spec.revision else None
        api = spec.params.get("api", "chat")
        if api not in CHAT_APIS:
            raise ValueError(f"openai understander: unknown api {api!r}; known: {', '.join(CHAT_APIS)}")
        self.api = CHAT_APIS[api]
        self.max_new_tokens = int(spec.params.get("max_new_tokens", 16))
        self.extra_body: dict[str, Any] = dict(spec.params.get("extra_body", {}))  # e.g. vLLM sampling extras
        self.client = OpenAIClient(spec.params)

    def __repr__(self) -> str:
        return f"OpenAIUnderstander(model={self.model!r}, client={self.client!r})"

    def _body(self, req: UnderstandRequest) -> dict[str, Any]:
        images = [image_part(img) for img in req.images]
        text = [{"type": "text", "text": self.api.text(req.prompt, len(req.images))}]
        content = text + images if self.api.text_first else images + text
        body = {**self.extra_body, "model": self.model, "messages": [{"role": "user", "content": content}],
                "max_tokens": self.max_new_tokens, "temperature": 0}
        if self.api.modalities:
            body["modalities"] = list(self.api.modalities)
        return body

    def _one(self, index: int, req: UnderstandRequest) -> str:
        data = self.client.post_json("/chat/completions", self._body(req), index)
        try:
            text = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            detail = "no choices[0].message in response"
            raise OpenAIRequestError(index, "POST /chat/completions", 200, detail, 1) from None
        if isinstance(text, list):  # content parts: keep the text ones
            text = "".join(p.get("text") or "" for p in text if isinstance(p, dict) and p.get("type") == "text")
        return (text or "").strip()

    def answer(self, batch: list[UnderstandRequest]) -> list[str]:
        return self.client.map(self._one, batch)
