"""Peak memory of a run against its number of items: is it bounded by the batch window, not the run?

Each size runs in a fresh process: the real stage flows (materialise -> understand -> validate & load)
under a Prefect server of the run's own (as `g2u run` does), with the weight-free reference generator
and an understander on an instant loopback OpenAI-compatible endpoint (in its own process, so its
memory is not counted). Items are the bundled DemoShapes rows repeated, each image made distinct.

    python perf/scale_memory.py --items 500 2000 8000

prints one row per size: items, wall seconds and peak RSS (MB) per stage, the peak RSS of the run's
process, and that peak relative to the smallest size (the goal: flat within 20 %). The benchmark file
is written by the parent process, so building it is not counted as the run's memory."""
from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def serve_instant(port_queue) -> None:
    """An OpenAI-compatible chat endpoint that answers "A" at once and keeps nothing."""
    body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "A"}}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the client reuses its connections
        # Without TCP_NODELAY the body waits for the client's delayed ACK of the headers: 40 ms per request
        # on Linux loopback, time a real server (uvicorn sets it) never adds.
        disable_nagle_algorithm = True

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port_queue.put(server.server_address[1])
    server.serve_forever()


@contextlib.contextmanager
def instant_endpoint() -> Iterator[str]:
    """The instant endpoint in a process of its own; yields its base URL."""
    ports: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve_instant, args=(ports,), daemon=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{ports.get(timeout=30)}/v1"
    finally:
        server.terminate()


def write_benchmark(path: Path, n: int) -> None:
    """n items: the DemoShapes rows repeated, each image with one pixel changed (distinct sha256)."""
    import polars as pl
    from PIL import Image

    rows = pl.read_csv(REPO / "data/demo/DemoShapes.tsv", separator="\t", infer_schema=False).to_dicts()
    out = []
    for i in range(n):
        row = dict(rows[i % len(rows)])
        img = Image.open(io.BytesIO(base64.b64decode(row["image"]))).convert("RGB")
        img.putpixel((i % img.width, (i // img.width) % img.height), (i % 256, (i // 256) % 256, 7))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        row.update(index=str(i), image=base64.b64encode(buf.getvalue()).decode())
        out.append(row)
    pl.DataFrame(out).write_csv(path, separator="\t")


def stage_peak_mb() -> float:
    """The process's peak RSS since the last reset_stage_peak (Linux: VmHWM)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def reset_stage_peak() -> None:
    """Resets VmHWM to the current RSS. It also lowers ru_maxrss, which reads the same counter:
    the run's peak is the largest stage peak."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child(n: int, root: Path, base_url: str, max_in_flight: int | None) -> dict:
    """One run of n items in this process; wall seconds, peak RSS per stage and the peak RSS after each."""
    executor = {"kind": "local", **({"max_in_flight": max_in_flight} if max_in_flight else {})}
    from g2u_tasks.config import RunConfig

    cfg = RunConfig.model_validate({
        "store": f"file://{root / 'store'}", "warehouse": str(root / "wh.duckdb"),
        "benchmarks": [{"name": "Scale", "source": str(root / "Scale.tsv"), "question_type": "mcq"}],
        "understander": {"backend": "openai", "model": "instant",
                         "params": {"base_url": base_url, "max_new_tokens": 4, "concurrency": 4}},
        "executor": executor,
    })
    os.environ.setdefault("OPENAI_API_KEY", "loopback")
    from flows.config_ref import ConfigRef
    from flows.local_server import isolated_prefect

    result = {"items": n}
    with isolated_prefect(root / "prefect"):
        from flows.pipeline import materialise_thoughts, run_understanding, validate_and_load

        ref = ConfigRef.of(cfg)
        for stage, call in (("materialise", lambda: materialise_thoughts(ref)),
                            ("understand", lambda: run_understanding(ref, result["version"], None)),
                            ("load", lambda: validate_and_load(ref, result["run_id"], result["version"]))):
            reset_stage_peak()
            started = time.perf_counter()
            out = call()
            result[f"{stage}_s"] = round(time.perf_counter() - started, 1)
            result[f"{stage}_peak_mb"] = round(stage_peak_mb())
            if stage == "materialise":
                result["version"] = out["dataset_version"]
            elif stage == "understand":
                result["run_id"] = out
    result["peak_rss_mb"] = max(result[f"{stage}_peak_mb"] for stage in ("materialise", "understand", "load"))
    return result


def sized_runs_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options of a script that runs the pipeline once per item count, each run in a child process."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, nargs="+", default=[500, 2000, 8000])
    ap.add_argument("--out", help="also write the rows as JSON here")
    for hidden, kind in (("--child", int), ("--root", str), ("--base-url", str)):  # the parent -> child handover
        ap.add_argument(hidden, type=kind, help=argparse.SUPPRESS)
    return ap


def main() -> None:
    ap = sized_runs_parser(__doc__)
    ap.add_argument("--max-in-flight", type=int, default=None, help="executor.max_in_flight (default: executor's)")
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, Path(args.root), args.base_url, args.max_in_flight)))
        return

    rows = []
    with instant_endpoint() as base_url:
        for n in args.items:
            with tempfile.TemporaryDirectory(prefix=f"g2u-scale-{n}-") as root:
                write_benchmark(Path(root) / "Scale.tsv", n)
                cmd = [sys.executable, __file__, "--child", str(n), "--root", root, "--base-url", base_url]
                if args.max_in_flight:
                    cmd += ["--max-in-flight", str(args.max_in_flight)]
                done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
                line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
                if done.returncode != 0 or line is None:
                    sys.exit(f"{n} items failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
                rows.append(json.loads(line.removeprefix("RESULT ")))
                print(f"{n} items done", file=sys.stderr, flush=True)
    base = rows[0]["peak_rss_mb"]
    stages = ("materialise", "understand", "load")
    print("| items | " + " | ".join(f"{s} s" for s in stages) + " | " + " | ".join(f"{s} peak MB" for s in stages)
          + " | peak RSS MB | vs smallest |")
    print("|---:" * (2 * len(stages) + 3) + "|")
    for r in rows:
        print(f"| {r['items']:,} | " + " | ".join(str(r[f"{s}_s"]) for s in stages) + " | "
              + " | ".join(f"{r[f'{s}_peak_mb']:,}" for s in stages)
              + f" | {r['peak_rss_mb']:,} | {r['peak_rss_mb'] / base - 1:+.0%} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
