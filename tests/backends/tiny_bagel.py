"""The tests' BAGEL: the project-written checkout beside this file and random weights for it.

`perf/bagel_random.py` writes the weights folder exactly as it does for the official code (configs,
Qwen2 tokenizer files, ae.safetensors, ema.safetensors, a model card), so the backend loads the pair
through the same `load_official` users take.
"""
from pathlib import Path

from perf.bagel_random import write_random_bagel

CODE = Path(__file__).resolve().parent / "tiny_bagel_code"


def build_tiny_bagel(out: Path) -> Path:
    write_random_bagel(str(CODE), out, "tiny", "cpu")
    return out
