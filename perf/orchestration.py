"""The pipeline's own cost per item against the GPU time of the same sweep (issue 14, item 4).

Each size runs in a fresh process: the real stage flows (materialise -> understand -> validate & load)
under a Prefect server of the run's own (as `g2u run` does), the weight-free reference generator and
an understander on an instant loopback OpenAI-compatible endpoint in its own process (perf/scale_memory.py
builds both: the same items, the same endpoint), so what is left is the pipeline's own work: loading,
PNG decode, prompt building, requests, scoring, validation, the DuckDB load, and Prefect.

    python perf/orchestration.py --items 500 2000 8000
    python perf/orchestration.py --items 500 2000 --repo ../before --repo .   # two checkouts side by side

prints per stage and size: wall seconds, CPU seconds of the run's process plus its Prefect server (the
endpoint's are not counted), CPU ms per item, the Prefect server's part of the total, and the total as a
share of the sweep's GPU time (`--gpu-s-per-item`, 0.35: a 9-prompt item sweep, baseline + 4 families x
concat/replace, on one H200).
The goal: <= 5 %, and CPU per item flat as the size grows (linear growth). On a shared machine CPU
seconds are the measure; wall seconds also count the wait for the cores.
`--profile DIR`: a py-spy flame graph of each size's run process (py-spy must be on PATH)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "perf"))

from scale_memory import instant_endpoint, sized_runs_parser, write_benchmark  # noqa: E402

STAGES = ("materialise", "understand", "load")


def cpu_seconds() -> tuple[float, float]:
    """User + system CPU of this process (all threads) and of its live children (the Prefect server)."""
    import psutil

    me = psutil.Process()
    children = 0.0
    for child in me.children(recursive=True):
        try:
            children += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return sum(me.cpu_times()[:2]), children


def child(n: int, root: Path, base_url: str, batch_size: int, batches_per_task: int | None) -> dict:
    """One run of n items in this process: wall and CPU seconds per stage."""
    write_benchmark(root / "Scale.tsv", n)
    executor = {"executor": {"batches_per_task": batches_per_task}} if batches_per_task else {}
    from g2u_tasks.config import RunConfig

    cfg = RunConfig.model_validate({
        "store": f"file://{root / 'store'}", "warehouse": str(root / "wh.duckdb"),
        "benchmarks": [{"name": "Scale", "source": str(root / "Scale.tsv"), "question_type": "mcq"}],
        "understander": {"backend": "openai", "model": "instant",
                         "params": {"base_url": base_url, "max_new_tokens": 4, "concurrency": 4}},
        "batch_size": batch_size, **executor,
    })
    os.environ.setdefault("OPENAI_API_KEY", "loopback")
    from flows.config_ref import ConfigRef
    from flows.local_server import isolated_prefect

    from flows.executor import executor_spec

    result: dict = {"items": n, "batches_per_task": getattr(executor_spec(cfg), "batches_per_task", 1)}
    with isolated_prefect(root / "prefect"):
        from flows.pipeline import materialise_thoughts, run_understanding, validate_and_load

        ref = ConfigRef.of(cfg)
        calls = {"materialise": lambda: materialise_thoughts(ref),
                 "understand": lambda: run_understanding(ref, result["version"], None),
                 "load": lambda: validate_and_load(ref, result["run_id"], result["version"])}
        for stage in STAGES:
            wall, (own, server) = time.perf_counter(), cpu_seconds()
            out = calls[stage]()
            result[f"{stage}_s"] = round(time.perf_counter() - wall, 2)
            own_after, server_after = cpu_seconds()
            result[f"{stage}_cpu_s"] = round(own_after - own + server_after - server, 2)
            result[f"{stage}_server_cpu_s"] = round(server_after - server, 2)
            if stage == "materialise":
                result["version"] = out["dataset_version"]
            elif stage == "understand":
                result["run_id"] = out
    return result


def run_size(repo: Path, n: int, base_url: str, batch_size: int, batches_per_task: int | None,
             profile: Path | None) -> dict:
    """One size in a fresh process that imports the pipeline from `repo` (a checkout)."""
    with tempfile.TemporaryDirectory(prefix=f"g2u-orch-{n}-") as root:
        cmd = [sys.executable, __file__, "--child", str(n), "--root", root, "--base-url", base_url,
               "--batch-size", str(batch_size), "--repo", str(repo)]
        cmd += ["--batches-per-task", str(batches_per_task)] if batches_per_task else []
        if profile:
            profile.mkdir(parents=True, exist_ok=True)
            cmd = [shutil.which("py-spy") or "py-spy", "record", "--subprocesses", "--gil", "-r", "50",
                   "-f", "speedscope", "-o", str(profile / f"orchestration-{n}-{repo.name}-{batches_per_task}.json"), "--", *cmd]
        done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {"code": rev.stdout.strip() or repo.name, **child_result(done, f"{n} items")}


def child_result(done: subprocess.CompletedProcess, what: str) -> dict:
    """The RESULT line a child printed; exits with its output when it failed."""
    for line in done.stdout.splitlines():
        if line.startswith("RESULT ") and done.returncode == 0:
            return json.loads(line.removeprefix("RESULT "))
    sys.exit(f"{what} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")


def table(rows: list[dict], gpu_s_per_item: float) -> str:
    """One row per run; `marginal`: the CPU of each further item (against the previous, smaller
    size with the same batches_per_task), what a 10,000-item run pays per item beyond its fixed cost."""
    head = " | ".join(f"{s} s | {s} CPU s | {s} CPU ms/item" for s in STAGES)
    lines = [f"| items | code | batches per task | {head} | total CPU ms/item | of it Prefect server | "
             "vs GPU time | marginal CPU ms/item | marginal vs GPU time |", "|---:|---|---:|" + "---:|" * (3 * len(STAGES) + 5)]
    previous: dict[tuple, dict] = {}
    for r in rows:
        n, k = r["items"], (r["code"], r["batches_per_task"])
        cells = " | ".join(f"{r[f'{s}_s']:.1f} | {r[f'{s}_cpu_s']:.1f} | {1000 * r[f'{s}_cpu_s'] / n:.1f}"
                           for s in STAGES)
        cpu = sum(r[f"{s}_cpu_s"] for s in STAGES)
        server = sum(r[f"{s}_server_cpu_s"] for s in STAGES)
        before = previous.get(k)
        if before and before["items"] < n:
            marginal = (cpu - sum(before[f"{s}_cpu_s"] for s in STAGES)) / (n - before["items"])
            extra = f"{1000 * marginal:.1f} | {marginal / gpu_s_per_item:.1%}"
        else:
            extra = "– | –"
        lines.append(f"| {n:,} | {k[0]} | {k[1]} | {cells} | {1000 * cpu / n:.1f} | {1000 * server / n:.1f} | "
                     f"{cpu / n / gpu_s_per_item:.1%} | {extra} |")
        previous[k] = r
    return "\n".join(lines)


def main() -> None:
    ap = sized_runs_parser(__doc__)
    ap.add_argument("--batch-size", type=int, default=16, help="the run config's batch_size (default 16)")
    ap.add_argument("--repo", type=Path, action="append", help="checkout to run (repeatable; default: this one)")
    ap.add_argument("--batches-per-task", type=int, nargs="+", default=[None],
                    help="executor.batches_per_task (default: the config's); several: each size once per value")
    ap.add_argument("--gpu-s-per-item", type=float, default=0.35, help="GPU seconds of one item's sweep")
    ap.add_argument("--profile", type=Path, help="write a py-spy speedscope profile per size here")
    args = ap.parse_args()
    if args.child:
        sys.path.insert(0, str(args.repo[0].resolve()))  # that checkout's pipeline
        print("RESULT " + json.dumps(child(args.child, Path(args.root), args.base_url, args.batch_size,
                                           args.batches_per_task[0])))
        return

    rows = []
    with instant_endpoint() as base_url:
        for n in args.items:
            for repo in [r.resolve() for r in args.repo or [REPO]]:
                for k in args.batches_per_task:
                    rows.append(run_size(repo, n, base_url, args.batch_size, k, args.profile))
                    print(f"{n} items, {repo.name}, {k or 'default'} batches per task: done", file=sys.stderr,
                          flush=True)
    print(table(rows, args.gpu_s_per_item))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
