"""Editing a 3-family sweep per item, side by side in one run: the plain pipeline at each batch size
(its best is the baseline) against the project's `diffusers` generator (loaded from the same saved
folder through `from_pretrained`) with each speed option: the source encoded once per item
(`encode_once`, the default), channels-last, fused q/k/v projections and `torch.compile` of the UNet.
Per row: images/s, items/s, the speed-up over the plain pipeline's best batch, and how close the
images are to the plain pipeline's at the same batch (share pixel-identical, lowest PSNR).

SD-1.5-shaped InstructPix2Pix (perf/backends.py's shapes, random weights), 512 px, 20 steps, CFG as
the pipeline does it (text 7.5, image 1.5); an item's three family prompts share its seed, as
materialise plans them.

    python perf/editing.py --quick                   # tiny shapes, CPU (no compile rows)
    python perf/editing.py --items 16 --out ed.json  # GPU, full size
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import backends  # noqa: E402  (perf/backends.py: shapes and helpers)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
PROMPTS = ("make it sharper and more detailed", "zoom out and show more of the scene", "turn it into a line drawing")
# (row label, generator params on top of the common ones)
VARIANTS = (
    ("project (encode_once off)", {"encode_once": False}),
    ("project (encode_once)", {}),
    ("+ channels_last + fuse_qkv", {"channels_last": True, "fuse_qkv": True}),
    ("+ compile", {"compile": True}),
    ("+ compile + channels_last + fuse_qkv", {"channels_last": True, "fuse_qkv": True, "compile": True}),
    ("+ compile max-autotune", {"compile": True, "compile_mode": "max-autotune-no-cudagraphs"}),
    ("+ compile + compile_vae", {"compile": True, "compile_vae": True}),
    ("+ compile + compile_vae + tuning + channels_last + fuse_qkv",
     {"compile": True, "compile_vae": True, "compile_tuning": True, "channels_last": True, "fuse_qkv": True}),
    ("+ compile + compile_vae, batch 48", {"compile": True, "compile_vae": True, "batch_size": 48}),
    ("+ compile reduce-overhead + compile_vae", {"compile": True, "compile_vae": True, "compile_mode": "reduce-overhead"}),
)


def psnr(a: Image.Image, b: Image.Image) -> float:
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mse = float(((x - y) ** 2).mean())
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def closeness(got: list, ref: list) -> dict:
    same = sum(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(got, ref))
    return {"identical": round(same / len(ref), 3), "min_psnr_db": round(min(psnr(a, b) for a, b in zip(got, ref)), 1)}


def timed(device, run, repeats: int) -> tuple[list, float]:
    out = run()  # warm-up (kernels, autotuning, compilation)
    backends.sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = run()
    backends.sync(device)
    return out, (time.perf_counter() - t0) / repeats


def main(argv=None) -> dict:
    from diffusers import DiffusionPipeline

    from g2u_tasks.backends import registry
    from g2u_tasks.backends.generators import GenerateRequest, get_generator
    from g2u_tasks.config import ModelSpec
    from g2u_tasks.thoughts.families import load_family

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--items", type=int)
    p.add_argument("--batches", default="6,12,24,48", help="plain pipeline batch sizes (images per call)")
    p.add_argument("--project-batch", type=int, default=24, help="the generator's batch_size")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--skip", default="", help="comma-separated row labels to leave out")
    p.add_argument("--kernels", action="store_true", help="only: the top kernels of one plain call of --project-batch images")
    p.add_argument("--out")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    items = args.items or (4 if args.quick else 16)
    pipe, shapes = backends.build_pix2pix(args.quick, device, dtype)
    tmp = tempfile.TemporaryDirectory(prefix="g2u-edit-")  # removed at exit
    folder = Path(tmp.name) / "pix2pix"
    pipe.save_pretrained(folder)
    label = backends.params_label(pipe.unet, pipe.vae, pipe.text_encoder)
    del pipe
    size, steps = shapes["size"], shapes["steps"]
    print(f"device {backends.device_name(device)}; {str(dtype)[6:]}; torch {torch.__version__}; InstructPix2Pix "
          f"{label}, {size} px, {steps} steps; {items} items x {len(PROMPTS)} families", flush=True)
    rng = np.random.default_rng(0)
    sources = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(items)]
    family = load_family("identity")  # only carried along: the prompts are the families' texts here
    reqs = [GenerateRequest(src, prompt, 1000 + i, family) for i, src in enumerate(sources) for prompt in PROMPTS]
    call = {"num_inference_steps": steps, "guidance_scale": 7.5, "image_guidance_scale": 1.5}

    plain = DiffusionPipeline.from_pretrained(folder, dtype=dtype).to(device)
    plain.set_progress_bar_config(disable=True)

    def run_plain(batch: int) -> list:
        out = []
        for s in range(0, len(reqs), batch):
            part = reqs[s:s + batch]
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # random weights: NaN pixels warn on the uint8 cast
                out += plain(prompt=[r.prompt for r in part], image=[r.image for r in part], height=size, width=size,
                             generator=[torch.Generator(device).manual_seed(r.seed) for r in part], **call).images
        return [im.convert("RGB") for im in out]

    if args.kernels:
        from torch.profiler import ProfilerActivity, profile

        run_plain(args.project_batch)
        cuda = device.type == "cuda"
        with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
            run_plain(args.project_batch)
            backends.sync(device)
        print(prof.key_averages().table(sort_by="cuda_time_total" if cuda else "self_cpu_time_total", row_limit=16,
                                        max_name_column_width=60))
        return {}
    rows, ref = [], {}

    def save() -> None:  # after every row: a run cut short keeps what it measured
        if args.out:
            Path(args.out).write_text(json.dumps({"rows": rows}, indent=2, default=float))

    for batch in (int(b) for b in args.batches.split(",")):
        backends.reset_peak(device)
        ref[batch], secs = timed(device, lambda: run_plain(batch), args.repeats)
        rows.append({"path": "plain pipeline", "batch": batch, "seconds": round(secs, 3),
                     "images_per_s": round(len(reqs) / secs, 3), "peak_gpu_gib": backends.peak_gib(device)})
        print(f"  plain batch {batch}: {len(reqs) / secs:.2f} images/s", flush=True)
        save()
    del plain
    best = max(rows, key=lambda r: r["images_per_s"])
    common = {**call, "dtype": str(dtype)[6:], "device": device.type, "batch_size": args.project_batch}
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    eager = None
    for name, extra in VARIANTS:
        if name in skip or ("compile" in extra and device.type != "cuda"):
            continue
        registry.clear()
        backends.reset_peak(device)
        t0 = time.perf_counter()
        gen = get_generator(ModelSpec(backend="diffusers", model=str(folder), params={**common, **extra}))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            first = gen.generate(reqs)  # warm-up, compilation included
            warm = time.perf_counter() - t0
            out, secs = timed(device, lambda: gen.generate(reqs), args.repeats)
        assert [im.size for im in out] == [im.size for im in first]
        eager = eager or (out if not extra.get("compile") and not extra.get("channels_last") else None)
        near = ref.get(extra.get("batch_size", args.project_batch))
        rows.append({"path": name, "batch": extra.get("batch_size", args.project_batch), "seconds": round(secs, 3),
                     "images_per_s": round(len(reqs) / secs, 3), "peak_gpu_gib": backends.peak_gib(device),
                     "load_and_warm_s": round(warm, 1), "params": extra,
                     "vs_plain_same_batch": closeness(out, near) if near else None,
                     "vs_project_eager": closeness(out, eager) if eager is not None else None})
        print(f"  {name}: {len(reqs) / secs:.2f} images/s (load + warm-up {warm:.0f} s)", flush=True)
        save()
    registry.clear()
    for r in rows:
        r["items_per_s"] = round(r["images_per_s"] / len(PROMPTS), 3)
        r["vs_plain_best"] = round(r["images_per_s"] / best["images_per_s"], 3)
    print(f"\nplain pipeline best: batch {best['batch']}, {best['images_per_s']:.2f} images/s")
    print(f"{'path':<30}{'batch':>6}{'images/s':>10}{'items/s':>9}{'vs best':>9}{'peak GiB':>10}  closeness")
    for r in rows:
        close = {k: r[k] for k in ("vs_plain_same_batch", "vs_project_eager") if r.get(k)}
        print(f"{r['path']:<30}{r['batch']:>6}{r['images_per_s']:>10.3f}{r['items_per_s']:>9.3f}"
              f"{r['vs_plain_best']:>8.3f}x{str(r['peak_gpu_gib'] or '-'):>10}  {close}")
    result = {"device": backends.device_name(device), "dtype": str(dtype)[6:], "torch": torch.__version__,
              "size": size, "steps": steps, "items": items, "families": len(PROMPTS), "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, default=float))
    return result


if __name__ == "__main__":
    main()
