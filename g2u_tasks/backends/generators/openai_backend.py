"""Generator backend "openai": the image-edit endpoint (`POST {base_url}/images/edits`) of an OpenAI-compatible server.

Params (besides the client's): size, response_format, output_format (sent only when given), send_seed
(send the request seed as `seed`), extra_form (further form fields, e.g. quality or steps).
"""
from __future__ import annotations

import base64
import json
from typing import Any

from PIL import Image

from g2u_tasks.config import ModelSpec
from g2u_tasks.backends.generators.base import GenerateRequest, register_generator
from g2u_tasks.images import decode, encode_png
from g2u_tasks.backends.openai_client import OpenAIClient, OpenAIRequestError

_OPTIONAL_FIELDS = ("size", "response_format", "output_format")


def _form_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else json.dumps(v)


@register_generator("openai")
class OpenAIGenerator:
    def __init__(self, spec: ModelSpec):
        if not spec.model:
            raise ValueError("openai generator needs `model` (the served model name)")
        self.model = spec.model
        self.name = f"openai:{spec.model}"
        p = spec.params
        self.send_seed = bool(p.get("send_seed", False))
        self.form = {k: _form_value(v) for k, v in p.get("extra_form", {}).items()}
        self.form.update({k: _form_value(p[k]) for k in _OPTIONAL_FIELDS if p.get(k) is not None})
        self.client = OpenAIClient(p)

    def __repr__(self) -> str:
        return f"OpenAIGenerator(model={self.model!r}, client={self.client!r})"

    def _one(self, index: int, req: GenerateRequest) -> Image.Image:
        data = {**self.form, "model": self.model, "prompt": req.prompt}
        if self.send_seed:
            data["seed"] = str(req.seed)
        files = {"image": ("image.png", encode_png(req.image), "image/png")}
        out = self.client.post_multipart("/images/edits", data, files, index)
        try:
            item = out["data"][0]
        except (KeyError, IndexError, TypeError):
            raise OpenAIRequestError(index, "POST /images/edits", 200, "no data[0] in response", 1) from None
        if item.get("b64_json"):
            return decode(base64.b64decode(item["b64_json"]))
        if item.get("url"):
            return decode(self.client.get_bytes(item["url"], index))
        raise OpenAIRequestError(index, "POST /images/edits", 200, "data[0] has neither b64_json nor url", 1)

    def generate(self, batch: list[GenerateRequest]) -> list[Image.Image]:
        return self.client.map(self._one, batch)
