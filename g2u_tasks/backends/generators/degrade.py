"""`degrade`: a controlled loss of fidelity applied on top of any generator's output.

Generator param `degrade: {kind: noise|blur, strengths: [..]}` (or `strength: s`). Each strength is
its own thought: the planner puts `degrade: {kind, strength}` into that thought's generator params
(so into its key), and one generator traces a fidelity-gain curve. Kinds: `noise` adds gaussian
noise of sigma `strength` (0-255 units) from an RNG seeded by the thought's seed, so a larger
strength scales the same pattern; `blur` is a gaussian blur of radius `strength` pixels.
The backend itself never sees the param: materialisation strips it (`parse_degrade`) and
`generate_degraded` post-processes the backend's output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageFilter

KINDS = ("noise", "blur")
PARAM = "degrade"


@dataclass(frozen=True)
class Degrade:
    kind: str
    strength: float

    def as_param(self) -> dict[str, Any]:
        return {"kind": self.kind, "strength": self.strength}


def _strength(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"degrade strength must be a number >= 0, got {value!r}")
    return float(value)


def parse_degrade(params: dict[str, Any]) -> tuple[dict[str, Any], list[Degrade | None]]:
    """(backend params without `degrade`, one Degrade per strength; [None] when absent)."""
    if PARAM not in params:
        return dict(params), [None]
    base = {k: v for k, v in params.items() if k != PARAM}
    spec = params[PARAM]
    if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
        raise ValueError(f"generator param degrade needs kind {' or '.join(KINDS)}, got {spec!r}")
    extra = set(spec) - {"kind", "strength", "strengths"}
    if extra or ("strength" in spec) == ("strengths" in spec):
        raise ValueError(f"generator param degrade takes kind plus one of strength / strengths, got {spec!r}")
    raw = spec["strengths"] if "strengths" in spec else [spec["strength"]]
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"degrade strengths must be a non-empty list, got {raw!r}")
    strengths = list(dict.fromkeys(_strength(s) for s in raw))
    return base, [Degrade(spec["kind"], s) for s in strengths]


def thought_params(base: dict[str, Any], degrade: Degrade | None) -> dict[str, Any]:
    """The generator params one thought's key records."""
    return dict(base) if degrade is None else {**base, PARAM: degrade.as_param()}


def degrade_image(img: Image.Image, degrade: Degrade, seed: int) -> Image.Image:
    img = img.convert("RGB")
    if degrade.strength == 0:
        return img.copy()
    if degrade.kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=degrade.strength))
    arr = np.asarray(img, dtype=np.float64)
    noise = np.random.default_rng(seed).standard_normal(arr.shape) * degrade.strength
    return Image.fromarray(np.clip(np.rint(arr + noise), 0, 255).astype(np.uint8))


def generate_degraded(generate: Callable[[list], list[Image.Image]], batch: list, degrades: list[Degrade | None],
                      keys: list) -> list[Image.Image]:
    """`generate` once per distinct request (`keys[i]` identifies request i up to its degrade: same
    key => same undegraded output), then each output degraded as its request asks."""
    first: dict = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    order = list(first.values())
    outs = dict(zip(order, generate([batch[i] for i in order])))
    return [
        outs[first[key]] if d is None else degrade_image(outs[first[key]], d, batch[i].seed)
        for i, (key, d) in enumerate(zip(keys, degrades))
    ]
