"""BAGEL full item sweeps: the official inferencer one request at a time vs the `bagel` backend's batched,
context-sharing path, side by side in one run on the same resident model.

    python perf/bagel_sweep.py --model .bagel/random-7b --code .bagel/Bagel --items 24 --json out.json

A sweep per item: one edit per family (same seed), then the answers of every mode: baseline, concat,
replace and concat_conversation per family (prompts built by the project's own prompt builder). Both
paths get the same requests; the report gives items/s, peak GPU memory, and how far the outputs agree
(identical answer text; identical edited images, and the PSNR between the two paths' images).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from g2u_tasks.backends.generators.base import GEN_TEXT_INFO, GenerateRequest  # noqa: E402
from g2u_tasks.backends.registry import get_generator, get_understander  # noqa: E402
from g2u_tasks.config import ModelSpec  # noqa: E402
from g2u_tasks.images import encode_png  # noqa: E402
from g2u_tasks.records import Item  # noqa: E402
from g2u_tasks.thoughts.families import load_families  # noqa: E402
from g2u_tasks.understanding.prompts import build_request  # noqa: E402

FAMILIES = ["detail_enhancement", "context_expansion", "structural_visualisation"]
MODES = ["baseline", "concat", "replace", "concat_conversation"]


def scene(i: int, size: int) -> Image.Image:
    rng = np.random.default_rng(i)
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = (int(v) for v in rng.integers(0, size - 40, 2))
        d.ellipse([x, y, x + 40, y + 40], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return img


def items(n: int, size: int) -> list[tuple[Item, Image.Image]]:
    out = []
    for i in range(n):
        img = scene(i, size)
        item = Item(benchmark="sweep", item_id=str(i), question=f"Which colour is circle {i % 6}?",
                    options={"A": "red", "B": "blue", "C": "green", "D": "yellow"}, answer="A", category="colour",
                    question_type="multiple_choice", image_sha256="", images=(encode_png(img),))
        out.append((item, img))
    return out


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def sweep(gen, und, data, families, seed: int) -> tuple[list[Image.Image], list[str], float, float]:
    t0 = time.perf_counter()
    edits = gen.generate([GenerateRequest(img, fam.render(item), seed, fam) for item, img in data for fam in families])
    reqs, k = [], 0
    for item, img in data:
        for mode in MODES:
            for fam in (families if mode != "baseline" else [None]):
                thought = edits[k + families.index(fam)] if fam else None
                reqs.append(build_request(item, [img], mode, thought, fam)[0])
        k += len(families)
    _sync()
    t1 = time.perf_counter()
    answers = und.answer(reqs)
    _sync()
    return edits, answers, t1 - t0, time.perf_counter() - t1


def psnr(a: Image.Image, b: Image.Image) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mse = float(((x - y) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def compare(load: dict, role: dict, model: str, data, n_official: int, families) -> dict:
    """Official one at a time on the first n_official items, batched on all; speeds and agreement."""
    specs = {name: ModelSpec(backend="bagel", model=model, params={**load, **role, "batched": batched})
             for name, batched in (("official", False), ("batched", True))}
    gens = {n: get_generator(s) for n, s in specs.items()}
    unds = {n: get_understander(s) for n, s in specs.items()}
    sweep(gens["batched"], unds["batched"], data[:1], families, seed=7)  # warm-up (kernels, allocator)
    results = {}
    for name, subset in (("official", data[:n_official]), ("batched", data)):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        edits, answers, edit_s, answer_s = sweep(gens[name], unds[name], subset, families, seed=7)
        secs = edit_s + answer_s
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
        results[name] = {"items": len(subset), "items_per_s": len(subset) / secs, "peak_gib": peak,
                         "edit_s_per_item": edit_s / len(subset), "answer_s_per_item": answer_s / len(subset),
                         "edits": edits, "answers": answers}
        print(f"think={role['think']} {name:9s} {len(subset)} items in {secs:.1f} s: {len(subset) / secs:.3f} "
              f"items/s (edits {edit_s / len(subset):.2f} s/item, answers {answer_s / len(subset):.2f} s/item), "
              f"peak {peak:.1f} GiB", flush=True)
    off, bat = results["official"], results["batched"]
    n_e, n_a = len(off["edits"]), len(off["answers"])
    psnrs = [psnr(x, y) for x, y in zip(off["edits"], bat["edits"][:n_e])]
    out = {"think": role["think"], "notes": unds["batched"].notes}
    for name, r in results.items():
        out.update({f"{name}_{k}": v for k, v in r.items() if k not in ("edits", "answers")})
    out.update({
        "speedup": bat["items_per_s"] / off["items_per_s"],
        "edit_speedup": off["edit_s_per_item"] / bat["edit_s_per_item"],
        "answer_speedup": off["answer_s_per_item"] / bat["answer_s_per_item"],
        "answers_compared": n_a, "answers_identical": sum(x == y for x, y in zip(off["answers"], bat["answers"])),
        "edits_compared": n_e,
        "edits_identical": sum(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(off["edits"], bat["edits"])),
        "edit_psnr_min": min(psnrs), "edit_psnr_median": float(np.median(psnrs)),
        "plans_identical": sum(x.info.get(GEN_TEXT_INFO) == y.info.get(GEN_TEXT_INFO)
                               for x, y in zip(off["edits"], bat["edits"])),
        "answer_differences": [[x, y] for x, y in zip(off["answers"], bat["answers"]) if x != y][:5],
    })
    print(f"think={role['think']}: {out['speedup']:.2f}x; answers identical {out['answers_identical']}/{n_a}, "
          f"edits identical {out['edits_identical']}/{n_e} (PSNR min {out['edit_psnr_min']:.1f} dB), plans "
          f"identical {out['plans_identical']}/{n_e}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--code", required=True)
    ap.add_argument("--items", type=int, default=24)
    ap.add_argument("--official-items", type=int, default=None, help="items for the one-at-a-time path (default all)")
    ap.add_argument("--think-items", type=int, default=0, help="then the same comparison in think mode")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--timesteps", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--pack-size", type=int, default=32)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    families = load_families(FAMILIES)
    data = items(a.items, a.size)
    load = {"code": a.code, "device": a.device}
    role = {"think": False, "max_new_tokens": a.max_new_tokens, "max_think_tokens": a.max_new_tokens,
            "generate_kwargs": {"num_timesteps": a.timesteps}, "pack_size": a.pack_size}
    summary = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
               "torch": torch.__version__, "model": a.model, "size": a.size, "timesteps": a.timesteps,
               "max_new_tokens": a.max_new_tokens, "families": FAMILIES, "modes": MODES, "runs": []}
    t0 = time.perf_counter()
    get_understander(ModelSpec(backend="bagel", model=a.model, params={**load, **role}))
    summary["load_s"] = time.perf_counter() - t0
    print(f"loaded in {summary['load_s']:.1f} s", flush=True)
    summary["runs"].append(compare(load, role, a.model, data, a.official_items or a.items, families))
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=1))
    if a.think_items:
        summary["runs"].append(compare(load, {**role, "think": True}, a.model, data[:a.think_items],
                                       min(a.think_items, a.official_items or a.items), families))
    print(json.dumps(summary, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
