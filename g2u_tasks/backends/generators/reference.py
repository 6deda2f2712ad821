"""The `reference` generator: deterministic, weight-free image operators, one per edit family.

They are controls, not models: crop-zoom (detail enhancement), border outpainting by reflection
(context expansion), an edge/structure map (structural visualisation) and identity. The family's
YAML names the operator and its parameters under `reference:`. The prompt and seed are part of the
thought key but do not change these operators' output. The spec takes no params of its own (only
the generic `degrade`): any other key is refused, never silently keyed into the thoughts.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from g2u_tasks.config import ModelSpec
from g2u_tasks.backends.generators.base import GenerateRequest, register_generator


def crop_zoom(img: Image.Image, keep: float = 0.6, sharpen_percent: int = 150) -> Image.Image:
    w, h = img.size
    cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
    left, top = (w - cw) // 2, (h - ch) // 2
    zoomed = img.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.LANCZOS)
    return zoomed.filter(ImageFilter.UnsharpMask(radius=2, percent=sharpen_percent, threshold=3))


def border_outpaint(img: Image.Image, margin: float = 0.25) -> Image.Image:
    w, h = img.size
    mx, my = max(1, round(w * margin)), max(1, round(h * margin))
    arr = np.asarray(img)
    mode = "reflect" if min(w, h) > max(mx, my) else "edge"
    padded = np.pad(arr, ((my, my), (mx, mx), (0, 0)), mode=mode)
    out = Image.fromarray(padded).filter(ImageFilter.GaussianBlur(radius=max(1, min(mx, my) // 3)))
    out.paste(img, (mx, my))
    return out


def edge_map(img: Image.Image, blend: float = 0.35) -> Image.Image:
    edges = ImageOps.invert(ImageOps.autocontrast(ImageOps.grayscale(img).filter(ImageFilter.FIND_EDGES)))
    return Image.blend(edges.convert("RGB"), img, blend)


def identity(img: Image.Image) -> Image.Image:
    return img.copy()


OPERATORS = {"crop_zoom": crop_zoom, "border_outpaint": border_outpaint, "edge_map": edge_map, "identity": identity}


class ReferenceGenerator:
    conditioning = "source_pixels"  # operators on the source image (thoughts.conditioning)

    def __init__(self, spec: ModelSpec):
        self.name = "reference"

    def generate(self, batch: list[GenerateRequest]) -> list[Image.Image]:
        out = []
        for req in batch:
            op_name = req.family.reference.get("op")
            if op_name not in OPERATORS:
                raise ValueError(
                    f"family {req.family.name}: reference generator has no operator {op_name!r}; "
                    f"known: {', '.join(OPERATORS)}"
                )
            out.append(OPERATORS[op_name](req.image.convert("RGB"), **req.family.reference.get("params", {})))
        return out


@register_generator("reference")
def _make(spec: ModelSpec) -> ReferenceGenerator:
    return ReferenceGenerator(spec)
