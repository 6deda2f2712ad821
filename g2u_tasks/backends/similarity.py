"""Semantic fidelity of a thought against its source: cosine similarity of image embeddings.

`EmbeddingSimilarity` loads a contrastive image-text model (CLIPModel, SiglipModel, ... anything whose
AutoModel has `get_image_features`) and its image processor from a local path or hub id. The image
processor is always the PIL backend, so results do not depend on whether torchvision is installed.
One resident instance per process per (model, revision, device): `EmbeddingSimilarity.get(...)`.
"""
from __future__ import annotations

import threading
from typing import Any

from PIL import Image

_LOCK = threading.Lock()
_RESIDENT: dict[tuple[str, str | None, str], "EmbeddingSimilarity"] = {}


def _default_device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class EmbeddingSimilarity:
    """Cosine similarity of L2-normalised image embeddings (source vs thought), batched."""

    def __init__(self, model: str, revision: str | None = None, device: str | None = None,
                 batch_size: int = 32) -> None:
        from transformers import AutoImageProcessor, AutoModel

        self.model_id, self.revision, self.device = model, revision, _default_device(device)
        self.batch_size = max(int(batch_size), 1)
        self.processor = AutoImageProcessor.from_pretrained(model, revision=revision, backend="pil")
        self.model = AutoModel.from_pretrained(model, revision=revision).to(self.device).eval()
        if not hasattr(self.model, "get_image_features"):
            raise ValueError(f"similarity model {model!r} ({type(self.model).__name__}) has no get_image_features")

    @classmethod
    def get(cls, model: str, revision: str | None = None, device: str | None = None) -> "EmbeddingSimilarity":
        """The process's resident instance for (model, revision, device), loaded on first use."""
        key = (model, revision, _default_device(device))
        with _LOCK:
            inst = _RESIDENT.get(key)
            if inst is None:
                inst = _RESIDENT[key] = cls(model, revision, key[2])
            return inst

    @classmethod
    def from_spec(cls, spec: Any) -> "EmbeddingSimilarity":
        """From a ModelSpec: only `model`, `revision` and `params.device` are used."""
        if not spec.model:
            raise ValueError("similarity_model needs a `model` (local path or hub id)")
        return cls.get(spec.model, spec.revision, (spec.params or {}).get("device"))

    def embed(self, images: list[Image.Image]):
        """L2-normalised image embeddings, shape (n, d), float32 on CPU."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                chunk = [im.convert("RGB") for im in images[i : i + self.batch_size]]
                pixels = self.processor(images=chunk, return_tensors="pt")["pixel_values"]
                feats = self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype))
                if not isinstance(feats, torch.Tensor):  # transformers 5: an output object
                    emb = getattr(feats, "image_embeds", None)
                    feats = emb if emb is not None else feats.pooler_output
                out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, 0)

    def similarity(self, sources: list[Image.Image], thoughts: list[Image.Image]) -> list[float]:
        """Cosine similarity in [-1, 1] of each thought to its source."""
        if len(sources) != len(thoughts):
            raise ValueError(f"{len(sources)} sources but {len(thoughts)} thoughts")
        if not sources:
            return []
        emb = self.embed(list(sources) + list(thoughts))
        n = len(sources)
        sims = (emb[:n] * emb[n:]).sum(dim=-1).clamp(-1.0, 1.0)
        return [float(s) for s in sims]
