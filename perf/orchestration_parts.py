"""Two per-item parts of the orchestration cost, checkout against checkout (issue 14, item 4).

On a shared machine the whole-pipeline numbers of perf/orchestration.py move by +-10 % from run to run;
these parts are small and steady enough to show what one change does:

- `request`: CPU ms per chat request of the openai understander (two 96x96 PNG images, batches of 16,
  concurrency 4) against the instant loopback endpoint of perf/scale_memory.py (its CPU not counted);
- `journal`: CPU and wall ms per thought of the resume journal (ThoughtStore.put_pending as the
  checkout's generate_batch calls it: once per thought, or once per batch of 16), then recovering and
  clearing it (pending_rows + clear_pending), on a local store in a temporary folder.

    python perf/orchestration_parts.py --repo ../before --repo .

Each checkout runs in a fresh process of its own, one after the other, twice (ABAB)."""
from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "perf"))

BATCH = 16


def request_cost(base_url: str, batches: int = 125) -> float:
    """CPU ms per request through the checkout's openai understander."""
    import numpy as np
    from PIL import Image

    from g2u_tasks.backends.understanders import UnderstandRequest
    from g2u_tasks.backends.understanders.openai_backend import OpenAIUnderstander
    from g2u_tasks.config import ModelSpec
    from g2u_tasks.images import decode, encode_png

    pixels = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    img = decode(encode_png(Image.fromarray(pixels)))
    os.environ.setdefault("OPENAI_API_KEY", "loopback")
    u = OpenAIUnderstander(ModelSpec(backend="openai", model="instant",
                                     params={"base_url": base_url, "max_new_tokens": 4, "concurrency": 4}))
    batch = [UnderstandRequest([img, img], "Question: which shape? A. circle B. square") for _ in range(BATCH)]
    u.answer(batch)  # connections open
    cpu = time.process_time()
    for _ in range(batches):
        u.answer(batch)
    return 1000 * (time.process_time() - cpu) / (batches * BATCH)


def journal_cost(n: int = 800) -> tuple[float, float, float]:
    """(CPU ms, wall ms) per thought journaled, and CPU ms per thought recovered and cleared."""
    from datetime import datetime, timezone

    from g2u_tasks.records import sha256_hex
    from g2u_tasks.store.thought_store import ThoughtStore

    with tempfile.TemporaryDirectory(prefix="g2u-journal-") as root:
        store = ThoughtStore(root)
        sha, uri = store.put_blob(b"a thought")
        rows = [{"thought_id": sha256_hex(str(i).encode()), "blob_sha256": sha, "blob_uri": uri, "status": "ok",
                 "created_at": datetime.now(timezone.utc), "prompt": "p" * 200, "key_json": "k" * 400,
                 "psnr": 30.0} for i in range(n)]
        per_batch = "rows" in inspect.signature(ThoughtStore.put_pending).parameters
        cpu, wall = time.process_time(), time.perf_counter()
        for start in range(0, n, BATCH):
            if per_batch:
                store.put_pending(rows[start:start + BATCH])
            else:
                for row in rows[start:start + BATCH]:
                    store.put_pending(row)
        put_cpu, put_wall = time.process_time() - cpu, time.perf_counter() - wall
        ids = [r["thought_id"] for r in rows]
        cpu = time.process_time()
        assert len(store.pending_rows(ids)) == n and store.clear_pending(ids) == n
        return 1000 * put_cpu / n, 1000 * put_wall / n, 1000 * (time.process_time() - cpu) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, action="append", help="checkout to measure (repeatable; default: this one)")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--base-url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sys.path.insert(0, str(args.child.resolve()))
        put_cpu, put_wall, recover = journal_cost()
        print("RESULT " + json.dumps({"request_cpu_ms": request_cost(args.base_url), "journal_cpu_ms": put_cpu,
                                      "journal_wall_ms": put_wall, "recover_clear_cpu_ms": recover}))
        return
    from scale_memory import instant_endpoint

    repos = [r.resolve() for r in args.repo or [REPO]]
    print("| code | request CPU ms | journal CPU ms/thought | journal wall ms/thought | recover + clear CPU ms/thought |")
    print("|---|---:|---:|---:|---:|")
    with instant_endpoint() as base_url:
        for repo in repos * 2:
            done = subprocess.run([sys.executable, __file__, "--child", str(repo), "--base-url", base_url],
                                  capture_output=True, text=True)
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if done.returncode or line is None:
                sys.exit(f"{repo} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
            r = json.loads(line.removeprefix("RESULT "))
            rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip() or repo.name
            print(f"| {rev} | {r['request_cpu_ms']:.3f} | {r['journal_cpu_ms']:.3f} | {r['journal_wall_ms']:.2f} | "
                  f"{r['recover_clear_cpu_ms']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
