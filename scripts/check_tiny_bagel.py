"""How faithful the tests' BAGEL checkout is: the same random weights answered by it and by the official code.

    python scripts/check_tiny_bagel.py --official-code .bagel/Bagel --official-python /path/to/venv/bin/python

The weights folder is written once with the tests' checkout (tests/backends/tiny_bagel_code; its parameter
names and shapes are the official ones). Each code then loads it through the `bagel` backend in a process of
its own (the two checkouts have the same top-level module names) and answers the same requests one at a
time (the official inferencer path, greedy, bf16 under CPU autocast: the official code casts to bf16 inside
attention whatever the weights' dtype). Prints how many answers agree and how much of each they share.
Answers only: the tests' VAE is its own tiny one (the official one is FLUX's), so edits are not compared.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def requests():
    from PIL import Image, ImageDraw

    from g2u_tasks.records import Item
    from g2u_tasks.thoughts.families import load_family
    from g2u_tasks.understanding.prompts import build_request

    fam = load_family("detail_enhancement")
    out = []
    for i, (w, h) in enumerate([(64, 48), (40, 80), (56, 56), (96, 64)]):
        img = Image.new("RGB", (w, h), (200, 220, 240))
        ImageDraw.Draw(img).ellipse((w // 4, h // 4, w // 2, h // 2), fill=(50 * i, 30, 220 - 50 * i))
        item = Item(benchmark="check", item_id=str(i), question=f"Which colour is shape {i}?",
                    options={"A": "red", "B": "blue"}, answer="A", category="colour", question_type="mcq",
                    image_sha256="", images=())
        thought = img.rotate(90, expand=True)
        out += [build_request(item, [img], mode, thought, fam)[0]
                for mode in ("baseline", "concat", "concat_conversation")]
    return out


def answer(code: str, model: str, max_new_tokens: int) -> list[str]:
    """Each answer, one request at a time through the backend."""
    import torch

    from g2u_tasks.backends.understanders import get_understander
    from g2u_tasks.config import ModelSpec

    torch.set_num_threads(1)
    und = get_understander(ModelSpec(backend="bagel", model=model, params={
        "code": code, "device": "cpu", "batched": False, "max_new_tokens": max_new_tokens}))
    return und.answer(requests())


def run_worker(python: str, code: str, model: str, max_new_tokens: int) -> list[str]:
    cmd = [python, __file__, "--worker", "--code", code, "--model", model, "--max-new-tokens", str(max_new_tokens)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode:
        raise SystemExit(f"{code}: worker failed\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--official-code", help="checkout of github.com/ByteDance-Seed/Bagel")
    ap.add_argument("--official-python", default=sys.executable, help="a Python that runs the official code")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--code", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(answer(a.code, a.model, a.max_new_tokens)))
        return
    from perf.bagel_random import write_random_bagel
    from tests.backends.tiny_bagel import CODE

    with tempfile.TemporaryDirectory() as tmp:
        model = str(Path(tmp) / "tiny-bagel")
        write_random_bagel(str(CODE), Path(model), "tiny", "cpu")
        ours = run_worker(sys.executable, str(CODE), model, a.max_new_tokens)
        theirs = run_worker(a.official_python, str(Path(a.official_code).resolve()), model, a.max_new_tokens)
    shared = [next((i for i, (x, y) in enumerate(zip(o, t)) if x != y), min(len(o), len(t))) / max(len(o), len(t), 1)
              for o, t in zip(ours, theirs)]
    print(f"| answers | identical | answer text shared before the first difference (mean) |\n|---:|---:|---:|\n"
          f"| {len(ours)} | {sum(o == t for o, t in zip(ours, theirs))} | {100 * sum(shared) / len(shared):.0f}% |")


if __name__ == "__main__":
    main()
