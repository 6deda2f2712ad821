"""Reports at scale: every `g2u report` timed as a user runs it, on a warehouse of about 1,000,000 predictions.

Builds (once, cached in --dir) a realistic warehouse through the project's own load path
(g2u_tasks.warehouse.database.load, the schemas of g2u_tasks.records, metrics from g2u_tasks.scoring.metrics):
12 benchmarks, 20,000 items, 5 fixed families (the identity and reconstruction controls included) x 2 modes
(concat, replace) x 5 seeds + a seedless baseline = 51 predictions per item, thoughts with PSNR/SSIM and
gen_seconds, failed thoughts and quarantined answers (both with their quarantine rows), unscored answers
(correct NULL), official metrics; plus two older small runs, so that reports must select their run in the query.

Then runs `g2u report NAME --format json` for every report in a fresh process, each time right after `g2u --help`
(the process start alone), and prints medians: report, seconds, seconds beyond process start, the same in CPU
seconds (user + system: steadier on a shared machine), output rows, output bytes. The CLI is this checkout's
(`python -m flows.cli` run in it). With `--before DIR` (a checkout of an earlier commit, e.g. `git worktree add`),
each report also runs from there in the same loop, right after this checkout's, and both are printed side by side;
the two outputs must be equal.

    python perf/reports_scale.py                     # ~1,000,000 predictions (building takes about a minute)
    python perf/reports_scale.py --quick             # ~50,000 predictions (smoke test)
    python perf/reports_scale.py --reports gain_ci,summary --repeats 3 --out /tmp/rs.json
    python perf/reports_scale.py --dir /tmp/rs --before /tmp/g2u-before   # before/after on one warehouse
"""
from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from g2u_tasks.scoring.metrics import compute_metrics  # noqa: E402
from g2u_tasks.warehouse import database as warehouse  # noqa: E402

FAMILIES = ("detail_enhancement", "context_expansion", "structural_visualisation", "identity", "reconstruction")
MODES = ("concat", "replace")
CATEGORIES = ("attribute", "count", "position", "ocr", "scene")
MAIN_RUN = "scale-main"
FAILED_THOUGHT = 0.005  # share of thoughts that failed (no prediction, one quarantine row)
QUARANTINED = 0.002  # share of answers kept out by the understanding stage
UNSCORED = 0.01  # share of answers with correct NULL (a judge was needed)


def _ids(prefix: str, n: int) -> list[str]:
    # thought ids look like the real ones (sha256 hex): string width matters for join cost
    return [hashlib.sha256(f"{prefix}/{i}".encode()).hexdigest() for i in range(n)]


def _where(mask: np.ndarray, text: str, name: str) -> pl.Expr:
    """`text` where mask holds, else null."""
    return pl.when(pl.Series(mask)).then(pl.lit(text)).otherwise(pl.lit(None, pl.String)).alias(name)


def run_tables(run_id: str, n_items: int, n_benchmarks: int, families: tuple[str, ...], modes: tuple[str, ...],
               seeds: int, finished: datetime, rng: np.random.Generator) -> dict[str, pl.DataFrame]:
    """One run's items, thoughts, predictions, metrics, runs and quarantine rows."""
    per = n_items // n_benchmarks
    items = pl.DataFrame({
        "benchmark": [f"Bench{b:02d}" for b in range(n_benchmarks) for _ in range(per)],
        "item_id": [str(i) for _ in range(n_benchmarks) for i in range(per)],
    }).with_columns(
        pl.format("What is shown in image {} of {}? Answer with the letter.", "item_id", "benchmark").alias("question"),
        pl.lit('{"A":"yes","B":"no"}').alias("options"), pl.lit("A").alias("answer"),
        pl.Series("category", rng.choice(CATEGORIES, per * n_benchmarks)), pl.lit("mcq").alias("question_type"),
        pl.format("img-{}-{}", "benchmark", "item_id").alias("image_sha256"), pl.lit(1, pl.Int32).alias("n_images"),
        pl.lit("{}").alias("extra"))
    n = items.height
    skill = rng.uniform(0.2, 0.9, n)  # per-item chance of a right baseline answer
    base_right = rng.random(n) < skill

    keys = items.select("benchmark", "item_id").with_row_index("item")
    grid = keys.join(pl.DataFrame({"family": list(families)}), how="cross").join(
        pl.DataFrame({"seed": list(range(seeds))}, schema={"seed": pl.Int64}), how="cross")
    m = grid.height
    is_identity = (grid["family"] == "identity").to_numpy()
    psnr = np.where(is_identity, 100.0, rng.uniform(14, 40, m))
    failed = (rng.random(m) < FAILED_THOUGHT) & ~is_identity
    thoughts = grid.with_columns(
        pl.Series("thought_id", _ids(run_id, m)), pl.lit("v1").alias("family_version"),
        pl.format("Edit the image to help answer: {}", pl.col("item_id")).alias("prompt"),
        pl.lit("template").alias("prompt_source"), pl.lit("reference").alias("generator"),
        pl.lit("{}").alias("generator_params"), pl.format("img-{}-{}", "benchmark", "item_id").alias("image_sha256"),
        pl.Series("psnr", np.where(failed, np.nan, psnr)).fill_nan(None),
        pl.Series("ssim", np.where(failed, np.nan, np.clip(psnr / 45 + rng.normal(0, 0.05, m), 0, 1))).fill_nan(None),
        pl.Series("gen_seconds", np.where(failed, np.nan, np.where(is_identity, 0.0, rng.uniform(0.2, 2.0, m))))
        .fill_nan(None),
        pl.Series("status", np.where(failed, "failed", "ok")),
        _where(failed, "generator failed: CUDA error", "error"),
        pl.col("family").alias("chosen_family"),
        pl.lit(datetime(2026, 1, 1, tzinfo=timezone.utc)).alias("created_at"))
    thoughts = thoughts.with_columns(pl.format("blobs/{}.png", "thought_id").alias("blob_uri"),
                                     pl.col("thought_id").alias("blob_sha256"))

    def answers(frame: pl.DataFrame, right: np.ndarray) -> pl.DataFrame:
        k = frame.height
        unscored = rng.random(k) < UNSCORED
        correct = pl.when(pl.Series(unscored)).then(None).otherwise(pl.Series(right)).alias("correct")
        return frame.with_columns(
            pl.lit(run_id).alias("run_id"), pl.lit("synthetic-7b").alias("understander"),
            pl.format("<image> {} Answer with the option's letter.", "item_id").alias("prompt"),
            pl.Series("raw_output", np.where(right, "A", "B")), pl.Series("extracted_answer", np.where(right, "A", "B")),
            pl.lit("A").alias("answer"), correct,
            _where(unscored, "needs judge: no judge configured", "unscored_reason"))

    base = answers(keys.with_columns(pl.lit("baseline").alias("condition"), pl.lit("baseline").alias("mode"),
                                     pl.lit(None, pl.Int64).alias("seed"), pl.lit(None, pl.String).alias("thought_id")),
                   base_right)
    cond = thoughts.filter(pl.col("status") == "ok").select("item", "benchmark", "item_id", pl.col("family")
                                                             .alias("condition"), "seed", "thought_id")
    cond = cond.join(pl.DataFrame({"mode": list(modes)}), how="cross")
    idx = cond["item"].to_numpy()
    # a thought fixes a wrong baseline answer with 15%, breaks a right one with 8%
    flip = rng.random(cond.height)
    right = np.where(base_right[idx], flip >= 0.08, flip < 0.15)
    preds = pl.concat([base, answers(cond, right)], how="diagonal")

    quarantined = rng.random(preds.height) < QUARANTINED
    kept_out = preds.filter(pl.Series(quarantined))
    preds = preds.filter(~pl.Series(quarantined)).drop("item")
    # few rows: built in Python, as the pipeline writes them (record = the row as JSON)
    q_rows = [{"benchmark": r["benchmark"], "item_id": r["item_id"],
               "reason": f"{r['condition']}/{r['mode']}: understander failed: timeout",
               "record": json.dumps({k: r[k] for k in ("condition", "mode", "thought_id", "seed")})}
              for r in kept_out.to_dicts()]
    q_rows += [{"benchmark": r["benchmark"], "item_id": r["item_id"],
                "reason": f"no usable {r['family']} thought (seed {r['seed']}): generator failed",
                "record": json.dumps({"thought_id": r["thought_id"], "family": r["family"], "plan_status": None})}
               for r in thoughts.filter(pl.col("status") == "failed").to_dicts()]
    quarantine = pl.DataFrame(q_rows, schema={c: pl.String for c in ("benchmark", "item_id", "reason", "record")}).with_columns(
        pl.lit(run_id).alias("run_id"), pl.lit("predictions").alias("stage"), pl.lit(finished).alias("recorded_at"))

    metrics = pl.from_arrow(compute_metrics(preds))
    official = metrics.filter(pl.col("metric") == "accuracy").with_columns(pl.lit("Overall").alias("metric"))
    config = {"modes": ["baseline", *modes], "families": list(families), "seeds": list(range(seeds))}
    runs = pl.DataFrame([{
        "run_id": run_id, "started_at": finished - timedelta(hours=5), "finished_at": finished,
        "config_json": json.dumps(config), "dataset_version": 1, "generator": "reference",
        "understander": "synthetic-7b", "notes": "random weights: synthetic warehouse for perf/reports_scale.py",
        "n_items": n, "n_thoughts_generated": thoughts.height, "n_thoughts_reused": 0, "status": "completed"}])
    return {"items": items, "thoughts": thoughts.drop("item").with_columns(pl.lit(1).alias("dataset_version")),
            "predictions": preds, "metrics": pl.concat([metrics, official]), "runs": runs, "quarantine": quarantine}


def _arrow(name: str, frame: pl.DataFrame):
    """The frame in the table's schema: columns it lacks become null."""
    schema = warehouse.table_schema(name)
    missing = [pl.lit(None).alias(c) for c in schema.names if c not in frame.columns]
    return frame.with_columns(missing).select(schema.names).to_arrow().cast(schema)


def build(path: Path, n_items: int, seeds: int) -> dict:
    """Write the warehouse (main run + two older small runs), one `warehouse.load` per run as the pipeline does."""
    rng = np.random.default_rng(7)
    t0 = time.perf_counter()
    con = warehouse.connect(path)
    day = datetime(2026, 1, 1, tzinfo=timezone.utc)
    runs = [("scale-old-1", max(n_items // 10, 240), FAMILIES[:2], ("concat",), 1, day),
            ("scale-old-2", max(n_items // 10, 240), FAMILIES[:3], MODES, 1, day + timedelta(days=1)),
            (MAIN_RUN, n_items, FAMILIES, MODES, seeds, day + timedelta(days=2))]
    counts = {}
    for run_id, n, families, modes, s, finished in runs:
        tables = run_tables(run_id, n, 12, families, modes, s, finished, rng)
        warehouse.load(con, {name: _arrow(name, frame) for name, frame in tables.items()})
        counts[run_id] = tables["predictions"].height
    con.close()
    return {"predictions": counts, "build_s": round(time.perf_counter() - t0, 1)}


def cli() -> list[str]:
    # run in the checkout timed (cwd): the environment's `g2u` script imports the checkout it was installed from
    return [sys.executable, "-m", "flows.cli"]


def timed(args: list[str], repeats: int, tree: Path = REPO) -> tuple[float, float, bytes]:
    """Median wall seconds and median CPU seconds (user + system) of `repeats` fresh processes run in `tree`, and
    the last one's stdout. CPU seconds are steadier than wall time on a machine shared with other work."""
    walls, cpus, out = [], [], b""
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(args, cwd=tree, capture_output=True)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr.decode()[-2000:]}")
        out = proc.stdout
    return statistics.median(walls), statistics.median(cpus), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="folder for the cached warehouse (default: a temporary folder, removed after)")
    ap.add_argument("--quick", action="store_true", help="~50,000 predictions (smoke test)")
    ap.add_argument("--items", type=int, help="items in the main run (default 20000, quick 1000)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per family in the main run")
    ap.add_argument("--reports", help="comma-separated report names (default: every report)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per report (each after a process-start run); "
                                                          "medians are shown")
    ap.add_argument("--out", help="also write the rows as JSON here")
    ap.add_argument("--before", help="a checkout of an earlier commit: its reports are timed beside this one's")
    args = ap.parse_args()
    n_items = args.items or (1000 if args.quick else 20000)
    tmp = None if args.dir else tempfile.mkdtemp(prefix="g2u-reports-scale-")
    folder = Path(args.dir or tmp)
    path = folder / f"reports_scale-{n_items}x{args.seeds}.duckdb"
    try:
        if path.exists():
            built = {"cached": str(path)}
        else:
            folder.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            built = build(partial, n_items, args.seeds)
            partial.rename(path)  # a crash while building leaves no half warehouse under the cached name
        t0 = time.perf_counter()
        warehouse.connect(path).close()  # as the next `g2u run` would: derives what a newer schema or model needs
        built["open_read_write_s"] = round(time.perf_counter() - t0, 1)
        print(f"warehouse {path}: {built}", flush=True)
        listed = [] if args.reports else json.loads(timed([*cli(), "report", "--list", "--format", "json"], 1)[2])
        names = args.reports.split(",") if args.reports else [r["report"] for r in listed]
        trees = {"after": REPO, **({"before": Path(args.before).resolve()} if args.before else {})}
        rows = []
        before_head = f" {'before beyond':>14} {'before cpu':>11}" if args.before else ""
        print(f"{'report':<28}{before_head} {'seconds':>8} {'beyond start':>13} {'cpu s':>7} {'cpu beyond':>11} "
              f"{'rows':>7} {'bytes':>10}" + (" same" if args.before else ""))
        for name in names:
            samples: dict[str, list] = {tree: [] for tree in trees}
            outs: dict[str, bytes] = {}
            for _ in range(args.repeats):
                for tree, where in trees.items():  # interleaved: both see the same load on a shared machine
                    # process start is timed right before each report, and a report's excess is the median of those
                    # differences: on a shared machine the load changes between one report and the next
                    start, start_cpu, _ = timed([*cli(), "--help"], 1, where)
                    wall, cpu, outs[tree] = timed([*cli(), "report", name, "--format", "json", "-w", str(path)], 1,
                                                  where)
                    samples[tree].append((wall, wall - start, cpu, cpu - start_cpu, start))
            wall, beyond, cpu, beyond_cpu, start = (statistics.median(col) for col in zip(*samples["after"]))
            out = outs["after"]
            row = {"report": name, "seconds": round(wall, 2), "beyond_start_s": round(beyond, 2),
                   "cpu_s": round(cpu, 2), "beyond_start_cpu_s": round(beyond_cpu, 2), "start_s": round(start, 2),
                   "rows": len(json.loads(out)), "bytes": len(out)}
            line = f"{name:<28}"
            if args.before:
                old = [statistics.median(col) for col in zip(*samples["before"])]
                row.update(before_beyond_start_s=round(old[1], 2), before_beyond_start_cpu_s=round(old[3], 2),
                           same_output=outs["before"] == out)
                line += f" {old[1]:>14.2f} {old[3]:>11.2f}"
            rows.append(row)
            print(line + f" {wall:>8.2f} {beyond:>13.2f} {cpu:>7.2f} {beyond_cpu:>11.2f} {row['rows']:>7} "
                  f"{row['bytes']:>10}" + (f" {'yes' if row['same_output'] else 'NO'}" if args.before else ""),
                  flush=True)
        print(f"process start alone (g2u --help): median {statistics.median(r['start_s'] for r in rows):.2f} s")
        if args.out:
            Path(args.out).write_text(json.dumps({"warehouse": str(path), "items": n_items, "seeds": args.seeds,
                                                  "build": built, "rows": rows}, indent=2))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
