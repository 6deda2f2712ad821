"""Semantic fidelity of a thought against its source: cosine similarity of image embeddings.

`EmbeddingSimilarity` loads a contrastive image-text model (CLIPModel, SiglipModel, ... anything whose
AutoModel has `get_image_features`) and its image processor from a local path or hub id. The image
processor is always the PIL backend, so results do not depend on whether torchvision is installed.

Similarity backend "transformers": load it with `registry.get_similarity(spec)` (one resident instance
per process per spec; only `model`, `revision` and `params.device` / `params.batch_size` are used).
"""
from __future__ import annotations

from PIL import Image

from g2u_tasks.backends import registry
from g2u_tasks.backends.common import default_device
from g2u_tasks.config import ModelSpec


class EmbeddingSimilarity:
    """Cosine similarity of L2-normalised image embeddings (source vs thought), batched."""

    def __init__(self, model: str, revision: str | None = None, device: str | None = None,
                 batch_size: int = 32) -> None:
        from transformers import AutoImageProcessor, AutoModel

        self.model_id, self.revision, self.device = model, revision, default_device(device)
        self.name = f"similarity:{model}"
        self.batch_size = max(int(batch_size), 1)
        self.processor = AutoImageProcessor.from_pretrained(model, revision=revision, backend="pil")
        self.model = AutoModel.from_pretrained(model, revision=revision).to(self.device).eval()
        if not hasattr(self.model, "get_image_features"):
            raise ValueError(f"similarity model {model!r} ({type(self.model).__name__}) has no get_image_features")

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> "EmbeddingSimilarity":
        if not spec.model:
            raise ValueError("similarity_model needs a `model` (local path or hub id)")
        params = spec.params or {}
        return cls(spec.model, spec.revision, params.get("device"), params.get("batch_size", 32))

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


registry.register("similarity", "transformers", {"device", "batch_size"})(EmbeddingSimilarity.from_spec)
