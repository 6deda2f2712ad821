"""A full G2U item sweep (baseline + 4 families x concat and replace = 9 prompts per item), side by
side in one run: plain batched generate, the project's unshared path, the project's shared-prefix
path; plus where single-prompt batches spend their time outside the prefill.

LLaVA-1.5-7B-shaped model with random weights (perf/backends.py's config), prompts laid out as the
LLaVA-1.5 chat template lays them out: `<s>USER: <image>\\n[<image>\\n preface] question ASSISTANT:`.
Needs only torch + transformers: g2u_tasks' prefix_sharing.py is loaded from its file.

    python perf/shared_prefix.py --quick                      # tiny shapes, CPU
    python perf/shared_prefix.py --items 256 --out sp.json    # GPU, full size
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import backends  # noqa: E402  (perf/backends.py: shapes and helpers)

_spec = importlib.util.spec_from_file_location(
    "prefix_sharing", Path(__file__).resolve().parents[1] / "g2u_tasks/backends/understanders/prefix_sharing.py")
ps = sys.modules["prefix_sharing"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ps)

HEAD, NL, TAIL = [1, 3148, 1001, 29901, 29871], [13], [319, 1799, 9047, 13566, 29901]  # <s>USER: / \n / ASSISTANT:
FAMILIES = 4


def sweep(config, n_items: int, seed: int = 0) -> tuple[list, list[str]]:
    """Rows item-major (baseline, then per family concat and replace) and their labels."""
    g = torch.Generator().manual_seed(seed)
    img, n_img = config.image_token_id, config.image_seq_length
    size = config.vision_config.image_size
    low, high = (40, 100) if n_img > 64 else (8, 20)
    rows, labels = [], []
    for item in range(n_items):
        q = torch.randint(3, 32000, (int(torch.randint(low, high + 1, (1,), generator=g)),), generator=g).tolist()
        original = {"pixel_values": torch.randn(1, 3, size, size, generator=g)}
        rows.append(ps.Row(torch.tensor(HEAD + [img] * n_img + NL + q + TAIL), [original], item))
        labels.append("baseline")
        for f in range(FAMILIES):
            thought = {"pixel_values": torch.randn(1, 3, size, size, generator=g)}
            preface = torch.randint(3, 32000, (30 if n_img > 64 else 6,), generator=g).tolist()
            rows.append(ps.Row(torch.tensor(HEAD + [img] * n_img + NL + [img] * n_img + NL + preface + q + TAIL),
                               [original, thought], item))
            rows.append(ps.Row(torch.tensor(HEAD + [img] * n_img + NL + q + TAIL), [thought], None))
            labels += ["concat", "replace"]
    return rows, labels


def plain_batch(model, rows, gen_kwargs, device, dtype) -> list[torch.Tensor]:
    ids = ps._collate([r.ids for r in rows], 0)
    mask = ps._collate([torch.ones(len(r.ids), dtype=torch.long) for r in rows], 0, ids.shape[1])
    images = ps._images([im for r in rows for im in r.images], device, dtype)
    with torch.inference_mode():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **images, **gen_kwargs)
    return list(out[:, ids.shape[1]:].cpu())


def run_path(name, model, rows, batch, gen_kwargs, device, dtype) -> tuple[list, float]:
    """(new tokens per row, seconds) for one path over all rows."""
    if name == "plain":  # item order, chunks of `batch`
        chunks = [list(range(s, min(s + batch, len(rows)))) for s in range(0, len(rows), batch)]
    elif name == "unshared":  # the backend's buckets: image count, then length
        order = sorted(range(len(rows)), key=lambda i: (len(rows[i].images), len(rows[i].ids)))
        chunks = [order[s:s + batch] for s in range(0, len(order), batch)]
    else:
        chunks = ps.chunks_by_key([r.key for r in rows], batch)
    out: list = [None] * len(rows)
    backends.sync(device)
    t0 = time.perf_counter()
    for idx in chunks:
        part = [rows[i] for i in idx]
        new = ps.generate_shared(model, part, 0, model.config.image_token_id, gen_kwargs) if name == "shared" else None
        for i, t in zip(idx, new if new is not None else plain_batch(model, part, gen_kwargs, device, dtype)):
            out[i] = t
    backends.sync(device)
    return out, time.perf_counter() - t0


def profile_single(model, config, batch, gen_kwargs, device, dtype, repeats) -> dict:
    """Baseline-only batches: prefill forward alone, generate with 1 and with N new tokens, CPU
    image preprocessing of `batch` 640x480 photos at the model's size."""
    from PIL import Image
    from transformers import CLIPImageProcessor

    rows, labels = sweep(config, batch, seed=1)
    rows = [r for r, lab in zip(rows, labels) if lab == "baseline"]
    ids = ps._collate([r.ids for r in rows], 0).to(device)
    mask = ps._collate([torch.ones(len(r.ids), dtype=torch.long) for r in rows], 0, ids.shape[1]).to(device)
    pix = ps._images([r.images[0] for r in rows], device, dtype)

    def timed(fn) -> float:
        fn()
        backends.sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        backends.sync(device)
        return (time.perf_counter() - t0) / repeats

    with torch.inference_mode():
        prefill = timed(lambda: model(input_ids=ids, attention_mask=mask, **pix, logits_to_keep=1))
        one = timed(lambda: model.generate(input_ids=ids, attention_mask=mask, **pix,
                                           **{**gen_kwargs, "max_new_tokens": 1, "min_new_tokens": 1}))
        full = timed(lambda: model.generate(input_ids=ids, attention_mask=mask, **pix, **gen_kwargs))
    size = config.vision_config.image_size
    proc = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    photos = [Image.new("RGB", (640, 480), (i % 255, 80, 160)) for i in range(batch)]
    t0 = time.perf_counter()
    proc(images=photos, return_tensors="pt")
    prep = time.perf_counter() - t0
    new = gen_kwargs["max_new_tokens"]
    return {"batch": batch, "prefill_s": round(prefill, 4), "generate_1_token_s": round(one, 4),
            "generate_s": round(full, 4), "decode_step_s": round((full - one) / max(1, new - 1), 5),
            "generate_overhead_s": round(one - prefill, 4), "cpu_preprocess_s": round(prep, 4),
            "end_to_end_vs_prefill_pct": round(100 * prefill / (full + prep), 1)}


def main(argv=None) -> dict:
    import transformers

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--items", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out")
    args = p.parse_args(argv)
    items = args.items or (6 if args.quick else 256)
    batch = args.batch or (16 if args.quick else 64)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    config = backends.llava_config(args.quick)
    config._attn_implementation = "sdpa"
    t0 = time.perf_counter()
    with device:
        model = transformers.AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.eval()
    print(f"device {backends.device_name(device)}; {str(dtype)[6:]}; torch {torch.__version__}, transformers "
          f"{transformers.__version__}; built {backends.params_label(model)} in {time.perf_counter() - t0:.1f} s")
    new = args.new_tokens
    gen_kwargs = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False, "pad_token_id": 0,
                  "eos_token_id": 2, "bos_token_id": 1}
    rows, labels = sweep(config, items)
    warm = [r for r in rows[:18]]
    for name in ("plain", "shared"):  # kernels, allocator
        run_path(name, model, warm, batch, gen_kwargs, device, dtype)
    results, table = {}, []
    for name in ("plain", "unshared", "shared"):
        backends.reset_peak(device)
        out, secs = run_path(name, model, rows, batch, gen_kwargs, device, dtype)
        results[name] = out
        table.append({"path": name, "items": items, "prompts": len(rows), "seconds": round(secs, 2),
                      "items_per_s": round(items / secs, 3), "peak_gpu_gib": backends.peak_gib(device)})
        print(f"  {name}: {secs:.1f} s, {items / secs:.2f} items/s", flush=True)
    base = table[0]["items_per_s"]
    for r in table:
        r["vs_plain"] = round(r["items_per_s"] / base, 3)
    agree = {}
    for mode in ("baseline", "concat", "replace", "all"):
        idx = [i for i, lab in enumerate(labels) if mode in ("all", lab)]
        same = sum(torch.equal(results["shared"][i], results["unshared"][i]) for i in idx)
        agree[mode] = round(same / len(idx), 4)
    n_img = config.image_seq_length
    shared_len = len(HEAD) + n_img + 1
    tokens = {lab: round(sum(len(r.ids) for r, lb in zip(rows, labels) if lb == lab) / labels.count(lab), 1)
              for lab in ("baseline", "concat", "replace")}
    prof = profile_single(model, config, batch, gen_kwargs, device, dtype, args.repeats)
    print(f"\nsweep: {items} items x 9 prompts, batch {batch}, {new} new tokens; mean prompt tokens {tokens}; "
          f"shared prefix {shared_len} tokens")
    print(f"{'path':<10}{'seconds':>9}{'items/s':>10}{'vs plain':>10}{'peak GiB':>10}")
    for r in table:
        print(f"{r['path']:<10}{r['seconds']:>9.2f}{r['items_per_s']:>10.3f}{r['vs_plain']:>9.3f}x"
              f"{str(r['peak_gpu_gib'] or '-'):>10}")
    print(f"answers shared == unshared (token-exact): {agree}")
    print(f"single-prompt batch profile: {prof}")
    result = {"quick": args.quick, "device": backends.device_name(device), "dtype": str(dtype)[6:],
              "torch": torch.__version__, "transformers": transformers.__version__, "items": items, "batch": batch,
              "new_tokens": new, "prompt_tokens": tokens, "shared_prefix_tokens": shared_len, "rows": table,
              "agreement": agree, "profile_single": prof}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
