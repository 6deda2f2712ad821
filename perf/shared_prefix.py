"""A full G2U item sweep (baseline + 4 families x concat and replace = 9 prompts per item), side by
side in one run: plain batched generate, the project's unshared path, the project's shared-prefix
path (and the same decoding from a dynamic cache instead of a static one). Per path: the work it
asks of the model (per item: `generate` calls, language-model forwards, decode steps, prompt tokens
computed including padding, images encoded: these predict the GPU result from a CPU run); token-
exact agreement shared vs unshared and, as the control, plain vs unshared; where the shared path's
time goes (a separate synchronised pass); and where single-prompt batches spend their time outside
the prefill.

LLaVA-1.5-7B-shaped model with random weights (perf/backends.py's config), prompts laid out as the
LLaVA-1.5 chat template lays them out: `<s>USER: <image>\\n[<image>\\n preface] question ASSISTANT:`.
Needs only torch + transformers: g2u_tasks' prefix_sharing.py is loaded from its file.

    python perf/shared_prefix.py --quick                      # tiny shapes, CPU
    python perf/shared_prefix.py --quick --full-tokens        # tiny widths, full-size token counts, CPU
    python perf/shared_prefix.py --items 48 --out sp.json     # GPU, full size
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
# plain generate; the backend's unshared buckets; shared prefix decoding from a static cache, eager
# and with the decode step replayed as a CUDA graph (the backend's path on a GPU) and, for
# comparison, with `generate` from a dynamic cache
PATHS = ("plain", "unshared", "shared", "shared_graphs", "shared_dynamic")


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


STAGES = ("_prefix_forward", "_continue", "_merge", "decode_greedy")  # prefix_sharing's steps, and `generate`


class WorkCounter:
    """Counts what the model is asked to compute: `generate` calls, language-model forwards (those
    of one token per row: decode steps), their tokens (batch x length, padding included) and the
    images through the vision tower. With `timed`, also the (synchronised, so no longer overlapped)
    seconds of `generate` and of the shared path's steps: a separate short pass, not the timed runs."""

    def __init__(self, model, device, timed: bool = False):
        self.model, self.device, self.real_generate = model, device, model.generate
        self.counts = dict.fromkeys(("generate_calls", "forwards", "decode_steps", "prompt_tokens", "images"), 0)
        self.seconds = dict.fromkeys(STAGES + ("generate",), 0.0)
        model.generate = self._timed("generate", self._generate) if timed else self._generate
        self.real_stages = {name: getattr(ps, name) for name in STAGES}
        for name, fn in self.real_stages.items():
            setattr(ps, name, self._timed(name, fn) if timed else fn)
        self.hooks = [model.model.language_model.register_forward_pre_hook(self._text, with_kwargs=True),
                      model.model.vision_tower.register_forward_pre_hook(self._vision, with_kwargs=True)]

    def _timed(self, name, fn):
        def run(*args, **kwargs):
            backends.sync(self.device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            backends.sync(self.device)
            self.seconds[name] += time.perf_counter() - t0
            return out
        return run

    def _generate(self, *args, **kwargs):
        self.counts["generate_calls"] += 1
        return self.real_generate(*args, **kwargs)

    def _text(self, module, args, kwargs):
        x = kwargs.get("inputs_embeds")
        batch, width = x.shape[:2]
        self.counts["forwards"] += 1
        if width == 1:
            self.counts["decode_steps"] += 1
        else:
            self.counts["prompt_tokens"] += batch * width

    def _vision(self, module, args, kwargs):
        self.counts["images"] += (args[0] if args else kwargs["pixel_values"]).shape[0]

    def take(self) -> tuple[dict, dict]:
        """(counts, seconds per step) since the last call."""
        out = self.counts, {k.strip("_"): round(v, 2) for k, v in self.seconds.items() if v}
        self.counts, self.seconds = dict.fromkeys(self.counts, 0), dict.fromkeys(self.seconds, 0.0)
        return out

    def close(self) -> None:
        for h in self.hooks:
            h.remove()
        self.model.generate = self.real_generate
        for name, fn in self.real_stages.items():
            setattr(ps, name, fn)


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
        new = (ps.generate_shared(model, part, 0, model.config.image_token_id, gen_kwargs,
                                  static_decode=name != "shared_dynamic", graphs=name == "shared_graphs")
               if name.startswith("shared") else None)
        for i, t in zip(idx, new if new is not None else plain_batch(model, part, gen_kwargs, device, dtype)):
            out[i] = t
    backends.sync(device)
    return out, time.perf_counter() - t0


def agreement(a: list, b: list, labels: list[str]) -> dict:
    """Share of rows with token-identical answers, per mode and over all."""
    out = {}
    for mode in ("baseline", "concat", "replace", "all"):
        idx = [i for i, lab in enumerate(labels) if mode in ("all", lab)]
        out[mode] = round(sum(torch.equal(a[i], b[i]) for i in idx) / len(idx), 4)
    return out


def profile_single(model, config, batch, gen_kwargs, device, dtype, repeats, compiled: bool = False) -> dict:
    """Baseline-only batches: prefill forward alone, generate with 1 and with N new tokens, the
    backend's static-cache decoding (eager, and replayed as a CUDA graph), CPU image preprocessing of
    `batch` 640x480 photos at the model's size; token agreement of the backend's paths with generate."""
    rows, labels = sweep(config, batch, seed=1)
    rows = [r for r, lab in zip(rows, labels) if lab == "baseline"]
    ids = ps._collate([r.ids for r in rows], 0).to(device)
    mask = ps._collate([torch.ones(len(r.ids), dtype=torch.long) for r in rows], 0, ids.shape[1]).to(device)
    pix = ps._images([r.images[0] for r in rows], device, dtype)

    new = gen_kwargs["max_new_tokens"]
    prep = prep_s(batch, config)

    def same(a, b) -> float:
        return round(sum(torch.equal(x, y) for x, y in zip(a, b)) / len(a), 4)

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
        inputs = {"input_ids": ids, "attention_mask": mask, **pix}
        static = timed(lambda: ps.generate_static(model, inputs, gen_kwargs, graphs=False))
        graphs = timed(lambda: ps.generate_static(model, inputs, gen_kwargs, graphs=device.type == "cuda"))
        align, ps.CACHE_ALIGN = ps.CACHE_ALIGN, 1  # the same without padding the cache to a multiple of 64
        unaligned = timed(lambda: ps.generate_static(model, inputs, gen_kwargs, graphs=device.type == "cuda"))
        ps.CACHE_ALIGN = align
        extra = {}
        if compiled:  # the decode step through torch.compile, replayed as a graph; its first call compiles
            t0 = time.perf_counter()
            ps.generate_static(model, inputs, gen_kwargs, graphs=device.type == "cuda", compiled=True)
            backends.sync(device)
            extra["compile_first_call_s"] = round(time.perf_counter() - t0, 1)
            comp = timed(lambda: ps.generate_static(model, inputs, gen_kwargs, graphs=device.type == "cuda",
                                                    compiled=True))
            extra.update(compiled_s=round(comp, 4), compiled_decode_step_s=round((comp - prefill) / max(1, new - 1), 5),
                         compiled_vs_prefill_pct=round(100 * prefill / max(comp, prep), 1))
        answers = {"generate": model.generate(**inputs, **gen_kwargs)[:, ids.shape[1]:].cpu(),
                   "static": ps.generate_static(model, inputs, gen_kwargs, graphs=False),
                   "graphs": ps.generate_static(model, inputs, gen_kwargs, graphs=device.type == "cuda")}
        if compiled:
            answers["compiled"] = ps.generate_static(model, inputs, gen_kwargs, graphs=device.type == "cuda",
                                                     compiled=True)
            extra["agreement_compiled_vs_graphs"] = same(answers["compiled"], answers["graphs"])

    # The backend prepares chunk k+1 on a worker thread while chunk k decodes: its end to end per
    # chunk is the longer of the two (and their sum if nothing overlapped).
    return {"batch": batch, "prefill_s": round(prefill, 4), "generate_1_token_s": round(one, 4),
            "generate_s": round(full, 4), "decode_step_s": round((full - one) / max(1, new - 1), 5),
            "generate_overhead_s": round(one - prefill, 4), "cpu_preprocess_s": round(prep, 4),
            "end_to_end_vs_prefill_pct": round(100 * prefill / (full + prep), 1),
            "static_s": round(static, 4), "static_decode_step_s": round((static - prefill) / max(1, new - 1), 5),
            "graphs_s": round(graphs, 4), "graphs_decode_step_s": round((graphs - prefill) / max(1, new - 1), 5),
            "graphs_unaligned_decode_step_s": round((unaligned - prefill) / max(1, new - 1), 5),
            "backend_vs_prefill_pct": round(100 * prefill / max(graphs, prep), 1),
            "backend_unoverlapped_vs_prefill_pct": round(100 * prefill / (graphs + prep), 1),
            "agreement_static_vs_generate": same(answers["static"], answers["generate"]),
            "agreement_graphs_vs_static": same(answers["graphs"], answers["static"]), **extra}


def prep_s(batch: int, config) -> float:
    """CPU seconds to preprocess `batch` 640x480 photos at the model's image size."""
    from PIL import Image
    from transformers import CLIPImageProcessor

    size = config.vision_config.image_size
    proc = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    photos = [Image.new("RGB", (640, 480), (i % 255, 80, 160)) for i in range(batch)]
    t0 = time.perf_counter()
    proc(images=photos, return_tensors="pt")
    return time.perf_counter() - t0


def decode_kernels(model, config, batch, gen_kwargs, device, dtype) -> str:
    """The CUDA kernels of one eager static-cache generate of a baseline batch, by total time."""
    from torch.profiler import ProfilerActivity, profile

    rows = [r for r, lab in zip(*sweep(config, batch, seed=1)) if lab == "baseline"]
    ids = ps._collate([r.ids for r in rows], 0).to(device)
    mask = ps._collate([torch.ones(len(r.ids), dtype=torch.long) for r in rows], 0, ids.shape[1]).to(device)
    inputs = {"input_ids": ids, "attention_mask": mask, **ps._images([r.images[0] for r in rows], device, dtype)}
    ps.generate_static(model, inputs, gen_kwargs)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        ps.generate_static(model, inputs, gen_kwargs)
        backends.sync(device)
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=70)


def main(argv=None) -> dict:
    import transformers

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--full-tokens", action="store_true",
                   help="with --quick: the full-size token layout (576 image tokens, long prompts), tiny widths")
    p.add_argument("--items", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--single-only", action="store_true", help="only the single-prompt batch profile")
    p.add_argument("--compile", action="store_true", help="with --single-only: also the decode step through torch.compile")
    p.add_argument("--kernels", action="store_true", help="with --single-only: top CUDA kernels of an eager decode")
    p.add_argument("--out")
    args = p.parse_args(argv)
    items = args.items or (6 if args.quick else 256)
    batch = args.batch or (16 if args.quick else 64)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    config = backends.llava_config(args.quick)
    if args.full_tokens:  # 336 px / 14 px patches: 576 image tokens, as at full size
        config.vision_config.image_size, config.vision_config.patch_size, config.image_seq_length = 336, 14, 576
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
    if args.single_only:
        prof = profile_single(model, config, batch, gen_kwargs, device, dtype, args.repeats, args.compile)
        print(f"single-prompt batch profile: {prof}")
        if args.kernels:
            print(decode_kernels(model, config, batch, gen_kwargs, device, dtype))
        return {"profile_single": prof}
    rows, labels = sweep(config, items)
    warm = rows[:9 * (batch // 9 + 1)]  # a full batch and more: kernels, allocator at full size
    for name in ("plain", "shared", "shared_graphs"):
        run_path(name, model, warm, batch, gen_kwargs, device, dtype)
    results, table, counter = {}, [], WorkCounter(model, device)
    for name in PATHS:
        backends.reset_peak(device)
        out, secs = run_path(name, model, rows, batch, gen_kwargs, device, dtype)
        work = {k: round(v / items, 2) for k, v in counter.take()[0].items()}
        results[name] = out
        table.append({"path": name, "items": items, "prompts": len(rows), "seconds": round(secs, 2),
                      "items_per_s": round(items / secs, 3), "peak_gpu_gib": backends.peak_gib(device),
                      "per_item": work})
        print(f"  {name}: {secs:.1f} s, {items / secs:.2f} items/s; per item {work}", flush=True)
    counter.close()
    counter, steps = WorkCounter(model, device, timed=True), {}  # where the time goes, on the warm-up rows
    for name in PATHS:
        run_path(name, model, warm, batch, gen_kwargs, device, dtype)
        steps[name] = counter.take()[1]
    counter.close()
    base = table[0]["items_per_s"]
    for r in table:
        r["vs_plain"] = round(r["items_per_s"] / base, 3)
    agree = {pair: agreement(results[pair[0]], results[pair[1]], labels)
             for pair in (("shared", "unshared"), ("plain", "unshared"), ("shared", "plain"),
                          ("shared", "shared_dynamic"), ("shared_graphs", "shared"))}
    n_img = config.image_seq_length
    shared_len = len(HEAD) + n_img + 1
    tokens = {lab: round(sum(len(r.ids) for r, lb in zip(rows, labels) if lb == lab) / labels.count(lab), 1)
              for lab in ("baseline", "concat", "replace")}
    prof = profile_single(model, config, batch, gen_kwargs, device, dtype, args.repeats)
    print(f"\nsweep: {items} items x 9 prompts, batch {batch}, {new} new tokens; mean prompt tokens {tokens}; "
          f"shared prefix {shared_len} tokens")
    print(f"{'path':<15}{'seconds':>9}{'items/s':>10}{'vs plain':>10}{'peak GiB':>10}   per item: generate calls, "
          f"forwards, decode steps, prompt tokens computed, images encoded")
    for r in table:
        w = r["per_item"]
        print(f"{r['path']:<15}{r['seconds']:>9.2f}{r['items_per_s']:>10.3f}{r['vs_plain']:>9.3f}x"
              f"{str(r['peak_gpu_gib'] or '-'):>10}   {w['generate_calls']:>6} {w['forwards']:>7} "
              f"{w['decode_steps']:>7} {w['prompt_tokens']:>9} {w['images']:>6}")
    print(f"seconds per step over the first {len(warm)} prompts, synchronised (generate: the decode; on plain and "
          "unshared the prefill too): " + "; ".join(f"{k} {v}" for k, v in steps.items()))
    for (a, b), ag in agree.items():
        print(f"answers {a} == {b} (token-exact): {ag}")
    print(f"single-prompt batch profile: {prof}")
    result = {"quick": args.quick, "device": backends.device_name(device), "dtype": str(dtype)[6:],
              "torch": torch.__version__, "transformers": transformers.__version__, "items": items, "batch": batch,
              "new_tokens": new, "prompt_tokens": tokens, "shared_prefix_tokens": shared_len, "rows": table,
              "agreement": {f"{a}_vs_{b}": ag for (a, b), ag in agree.items()}, "step_seconds": steps,
              "warm_prompts": len(warm), "profile_single": prof}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
