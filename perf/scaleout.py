"""Scale-out of batched understanding over GPUs with dask.distributed, laid out as `executor: {kind: dask}` runs it.

The cluster is flows.executor.local_cluster: one worker process per GPU, CUDA_VISIBLE_DEVICES pinned per
worker, 1 thread each. Each worker builds a LLaVA-1.5-7B-shaped random-weight model once (perf/
backends.py) and keeps it resident, then answers batches of 64 synthetic requests (~650-token prompts,
exactly 16 new tokens). Reports items/s on 1 GPU and on N GPUs, and the scaling efficiency
rate(N) / (N x rate(1)). Needs torch, transformers, dask, distributed and pydantic; not Prefect.

    python perf/scaleout.py --out scaleout.json          # GPUs: 1 vs 2 workers
    python perf/scaleout.py --quick --out /tmp/so.json   # tiny model, 2 CPU workers (smoke test)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "perf")]  # worker processes inherit sys.path

import backends  # noqa: E402  (perf/backends.py: shapes, inputs, helpers)
from flows.executor import local_cluster  # noqa: E402  (the cluster the pipeline's Dask path starts)

NEW_TOKENS = 16
_RESIDENT: dict = {}  # per worker process, like g2u_tasks' per-process model caches


# ---- runs inside a worker process -----------------------------------------------------------------

def load_model(quick: bool, need_gpu: bool) -> dict:
    """Build the model once in this worker process; describe where it lives."""
    if "model" not in _RESIDENT:
        from transformers import AutoModelForImageTextToText

        if need_gpu and not torch.cuda.is_available():
            raise RuntimeError(f"worker sees no GPU (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
        device = torch.device("cuda" if need_gpu else "cpu")
        dtype = torch.bfloat16 if need_gpu else torch.float32
        torch.manual_seed(0)
        config = backends.llava_config(quick)
        t0 = time.perf_counter()
        with device:  # weights allocated and initialised on the device
            model = AutoModelForImageTextToText.from_config(config, dtype=dtype).eval()
        backends.sync(device)
        _RESIDENT.update(model=model, config=config, device=device, dtype=dtype,
                         build_s=round(time.perf_counter() - t0, 1), params=backends.params_label(model))
    r = _RESIDENT
    return {"pid": os.getpid(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "device": backends.device_name(r["device"]), "build_s": r["build_s"], "params": r["params"]}


def answer_batch(batch: int, quick: bool, need_gpu: bool) -> dict:
    """One batch of synthetic requests through generate() on this worker's resident model. The inputs
    are built once per worker and reused (fixed shapes, forced 16 new tokens: the same work each call),
    so the timing is generate() plus Dask's overhead, comparable to perf/backends.py."""
    from transformers import GenerationConfig

    load_model(quick, need_gpu)
    model, config, device, dtype = (_RESIDENT[k] for k in ("model", "config", "device", "dtype"))
    if _RESIDENT.get("batch") != batch:
        inputs = backends.understanding_inputs(config, batch, device, dtype, seed=0)
        inputs.pop("prompt_tokens")
        _RESIDENT.update(batch=batch, inputs=inputs)
    inputs = _RESIDENT["inputs"]
    gen = GenerationConfig(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, bos_token_id=1,
                           eos_token_id=2, pad_token_id=0)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**inputs, generation_config=gen)
    backends.sync(device)
    assert out.shape == (batch, inputs["input_ids"].shape[1] + NEW_TOKENS)
    return {"worker": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid(), "items": batch,
            "seconds": time.perf_counter() - t0}


# ---- the client side --------------------------------------------------------------------------------

def measure(client, workers: list[str], args) -> dict:
    """items/s with batches spread over `workers` (dask schedules them; 1 thread per worker)."""
    import scaleout  # by reference: workers import this module and keep _RESIDENT between tasks

    def submit(where: list[str]):
        return client.submit(scaleout.answer_batch, args.batch, args.quick, not args.quick, workers=where,
                             allow_other_workers=False, pure=False)

    client.gather([submit([w]) for w in workers])  # warm-up: one batch per worker
    n_batches = args.batches_per_gpu * len(workers)
    walls, busy = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        done = client.gather([submit(workers) for _ in range(n_batches)])
        walls.append(time.perf_counter() - t0)
        busy.append(sum(d["seconds"] for d in done))
        per_worker = {str(d["pid"]): sum(x["pid"] == d["pid"] for x in done) for d in done}
    wall = statistics.median(walls)
    items = n_batches * args.batch
    return {"gpus": len(workers), "batches": n_batches, "items": items, "wall_s": round(wall, 2),
            "items_per_s": round(items / wall, 2), "per_gpu_items_per_s": round(items / wall / len(workers), 2),
            "gpu_busy_fraction": round(statistics.median(busy) / (wall * len(workers)), 3),
            "batches_per_worker_last_repeat": per_worker, "wall_s_repeats": [round(w, 2) for w in walls]}


def print_table(rows: list[dict], workers: list[dict]) -> None:
    head = f"{'gpus':>4}{'batches':>9}{'items':>7}{'wall s':>8}{'items/s':>9}{'per GPU':>9}{'busy':>7}{'efficiency':>12}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        eff = f"{r['scaling_efficiency']:.2f}" if r.get("scaling_efficiency") is not None else "-"
        print(f"{r['gpus']:>4}{r['batches']:>9}{r['items']:>7}{r['wall_s']:>8.2f}{r['items_per_s']:>9.2f}"
              f"{r['per_gpu_items_per_s']:>9.2f}{r['gpu_busy_fraction']:>7.2f}{eff:>12}")
    for w in workers:
        print(f"  worker CUDA_VISIBLE_DEVICES={w['cuda_visible_devices']!r} pid {w['pid']}: {w['device']}, "
              f"{w['params']}, built in {w['build_s']} s")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model on 2 CPU workers (smoke test, about a minute)")
    p.add_argument("--gpus", default="1,2", help="worker counts to measure, one GPU each (default 1,2)")
    p.add_argument("--batch", type=int, help="requests per batch (default 64; quick 8)")
    p.add_argument("--batches-per-gpu", type=int, help="timed batches per worker per repeat (default 6; quick 3)")
    p.add_argument("--repeats", type=int, help="timed repeats; the median is reported (default 3; quick 2)")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    args.counts = sorted({int(x) for x in args.gpus.split(",") if x})
    args.batch = args.batch or (8 if args.quick else 64)
    args.batches_per_gpu = args.batches_per_gpu or (3 if args.quick else 6)
    args.repeats = args.repeats or (2 if args.quick else 3)
    return args


def main(argv=None) -> dict:
    import dask
    import distributed
    import transformers
    from distributed import Client

    args = parse_args(argv)
    n_max = max(args.counts)
    gpus_per_worker = 0 if args.quick else 1
    print(f"scale-out: {n_max} worker process(es), {'CPU (quick)' if args.quick else '1 GPU each'}; batch {args.batch}, "
          f"{args.batches_per_gpu} batches per worker x {args.repeats} repeats; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, dask {dask.__version__}")
    import scaleout

    rows = []
    with local_cluster(n_workers=n_max, gpus_per_worker=gpus_per_worker) as cluster, Client(cluster) as client:
        client.wait_for_workers(n_max)
        by_name = {info["name"]: addr for addr, info in client.scheduler_info()["workers"].items()}
        addrs = [by_name[name] for name in sorted(by_name)]
        t0 = time.perf_counter()
        workers = client.gather([client.submit(scaleout.load_model, args.quick, not args.quick, workers=[a],
                                               pure=False) for a in addrs])  # all build at once
        print(f"models built on {n_max} worker(s) in {time.perf_counter() - t0:.1f} s")
        for n in args.counts:
            rows.append(measure(client, addrs[:n], args))
            print(f"  {n} worker(s): {rows[-1]['items_per_s']:.2f} items/s")
    base = next((r["items_per_s"] for r in rows if r["gpus"] == 1), None)
    for r in rows:
        r["scaling_efficiency"] = round(r["items_per_s"] / (r["gpus"] * base), 3) if base else None
    print()
    print_table(rows, workers)
    result = {"quick": args.quick, "batch": args.batch, "new_tokens": NEW_TOKENS, "repeats": args.repeats,
              "batches_per_gpu": args.batches_per_gpu, "torch": torch.__version__,
              "transformers": transformers.__version__, "dask": dask.__version__,
              "distributed": distributed.__version__, "workers": workers, "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
