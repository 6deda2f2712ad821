"""Generator backend "openai": image edits on an OpenAI-compatible server, in one of the wire formats
of `EDIT_APIS` (param `api`):

  images           `POST {base_url}/images/edits`, multipart: `image` (PNG file), `prompt`, `model`, the
                   optional fields; answer `data[0].b64_json` or `data[0].url` (OpenAI; vLLM-Omni's
                   Image Edit API, which also takes seed, num_inference_steps, guidance_scale,
                   negative_prompt as form fields and size "auto" = the source's size).
  chat             `POST {base_url}/chat/completions`, JSON: one user message with the prompt text and the
                   source as an `image_url` data URL, `modalities: ["image"]`, generation params as
                   top-level keys; the image comes back as an `image_url` part of a choice's message
                   content (vLLM-Omni's image output through chat).
  vllm-omni-bagel  `chat` with the prompt wrapped as `<|im_start|>{prompt}<|im_end|>`: vLLM-Omni's
                   documented img2img request for BAGEL-7B-MoT.

Params (besides the client's): api ("images"), size ("WxH" or "auto"; for chat APIs sent as width and
height, "auto" = the source's), response_format and output_format (images API only), send_seed (send
the request seed as `seed`), num_inference_steps / guidance_scale / negative_prompt (sent when set),
extra_form (further form fields, images API) or extra_body (further JSON keys, chat APIs).
Every API sends the source image, so the thoughts record `conditioning: source_pixels`: what the
served model does with it is the server's; a text-to-image model behind it would not edit.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from PIL import Image

from g2u_tasks.config import ModelSpec
from g2u_tasks.backends.generators.base import GenerateRequest, register_generator
from g2u_tasks.images import decode, png_bytes
from g2u_tasks.backends.openai_client import CLIENT_PARAMS, OpenAIClient, OpenAIRequestError, data_url


@dataclass(frozen=True)
class EditAPI:
    """One wire format for an image edit."""

    path: str
    chat: bool  # JSON chat completion with image output; else a multipart image edit
    template: str = "{prompt}"  # how the edit prompt is written into the request text


EDIT_APIS = {
    "images": EditAPI("/images/edits", chat=False),
    "chat": EditAPI("/chat/completions", chat=True),
    "vllm-omni-bagel": EditAPI("/chat/completions", chat=True, template="<|im_start|>{prompt}<|im_end|>"),
}
_IMAGES_ONLY = ("response_format", "output_format")  # form fields only the images API takes
_GEN_FIELDS = ("num_inference_steps", "guidance_scale", "negative_prompt")  # sent when set, any API
PARAMS = CLIENT_PARAMS | {"api", "size", *_IMAGES_ONLY, *_GEN_FIELDS, "send_seed", "extra_form", "extra_body"}


def _form_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else json.dumps(v)


def _parse_size(size: str) -> tuple[int, int] | None:
    """(width, height) of "WxH"; None for "auto"."""
    if size == "auto":
        return None
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise ValueError(f"openai generator: size must be 'WxH' or 'auto', got {size!r}") from None
    return w, h


@register_generator("openai", PARAMS)
class OpenAIGenerator:
    conditioning = "source_pixels"  # every API sends the source image (thoughts.conditioning)

    def __init__(self, spec: ModelSpec):
        if not spec.model:
            raise ValueError("openai generator needs `model` (the served model name)")
        self.model = spec.model
        self.name = f"openai:{spec.model}"
        p = spec.params
        api = p.get("api", "images")
        if api not in EDIT_APIS:
            raise ValueError(f"openai generator: unknown api {api!r}; known: {', '.join(EDIT_APIS)}")
        self.api = EDIT_APIS[api]
        wrong = [k for k in (("extra_body", *_IMAGES_ONLY) if not self.api.chat else ("extra_form",)) if k in p]
        if wrong:
            raise ValueError(f"openai generator: api {api!r} does not take {', '.join(wrong)}")
        self.send_seed = bool(p.get("send_seed", False))
        self.size = None if p.get("size") is None else str(p["size"])
        if self.api.chat:
            _parse_size(self.size or "auto")  # refuse a bad size before any request
            self.body: dict[str, Any] = dict(p.get("extra_body", {}))
            self.body.update({k: p[k] for k in _GEN_FIELDS if p.get(k) is not None})
        else:
            self.form = {k: _form_value(v) for k, v in p.get("extra_form", {}).items()}
            self.form.update({k: _form_value(p[k]) for k in ("size", *_IMAGES_ONLY, *_GEN_FIELDS)
                              if p.get(k) is not None})
        self.client = OpenAIClient(p)

    def __repr__(self) -> str:
        return f"OpenAIGenerator(model={self.model!r}, api={self.api.path!r}, client={self.client!r})"

    def _fail(self, index: int, detail: str) -> OpenAIRequestError:
        return OpenAIRequestError(index, f"POST {self.api.path}", 200, detail, 1)

    def _one(self, index: int, req: GenerateRequest) -> Image.Image:
        return self._chat(index, req) if self.api.chat else self._edit(index, req)

    def _edit(self, index: int, req: GenerateRequest) -> Image.Image:
        data = {**self.form, "model": self.model, "prompt": self.api.template.replace("{prompt}", req.prompt)}
        if self.send_seed:
            data["seed"] = str(req.seed)
        files = {"image": ("image.png", png_bytes(req.image), "image/png")}
        out = self.client.post_multipart(self.api.path, data, files, index)
        try:
            item = out["data"][0]
        except (KeyError, IndexError, TypeError):
            raise self._fail(index, "no data[0] in response") from None
        if item.get("b64_json"):
            return decode(base64.b64decode(item["b64_json"]))
        if item.get("url"):
            return decode(self.client.get_bytes(item["url"], index))
        raise self._fail(index, "data[0] has neither b64_json nor url")

    def _chat(self, index: int, req: GenerateRequest) -> Image.Image:
        content = [{"type": "text", "text": self.api.template.replace("{prompt}", req.prompt)},
                   {"type": "image_url", "image_url": {"url": data_url(req.image)}}]
        body = {**self.body, "model": self.model, "messages": [{"role": "user", "content": content}],
                "modalities": ["image"]}
        if self.size is not None:
            body["width"], body["height"] = _parse_size(self.size) or req.image.size
        if self.send_seed:
            body["seed"] = req.seed
        out = self.client.post_json(self.api.path, body, index)
        url = _image_url(out)
        if url is None:
            raise self._fail(index, "no image_url part in any choice's message content")
        return decode(self.client.get_bytes(url, index))

    def generate(self, batch: list[GenerateRequest]) -> list[Image.Image]:
        return self.client.map(self._one, batch)


def _image_url(out: Any) -> str | None:
    """The first image part's URL over all choices (a server may put text and image in separate choices)."""
    choices = out.get("choices") if isinstance(out, dict) else None
    for choice in choices if isinstance(choices, list) else []:
        content = (choice.get("message") or {}).get("content") if isinstance(choice, dict) else None
        for part in content if isinstance(content, list) else []:
            url = (part.get("image_url") or {}).get("url") if isinstance(part, dict) else None
            if url:
                return url
    return None
