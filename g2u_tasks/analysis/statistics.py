"""The paper's questions as statistics: gain with uncertainty, fidelity vs gain, edit families, self-directed
imagination. Plain functions over Polars frames read from the warehouse's shared views (sql/models/).

Conventions (docs/REPORTS.md):
- every gain is paired: over the items that have both a scored baseline and a scored condition answer on the
  same seed (the `paired_items` view), each report counting the items missing and why (`missing_items`);
- the unit is the item (benchmark, item_id); an item's paired seeds are pooled by averaging its correctness;
- an item counts as right for flips and McNemar when more than half of its seeds are right;
- intervals are percentile intervals of a paired bootstrap over items (N_RESAMPLES draws, fixed RNG_SEED);
- thoughts made with a `degrade` generator option stay apart (degrade_kind, degrade_strength).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace

import duckdb
import numpy as np
import polars as pl

from g2u_tasks.records import BASELINE
from g2u_tasks.warehouse import database as warehouse

N_RESAMPLES = 2000
RNG_SEED = 20240601
LEVEL = 0.95
EXACT_BELOW = 25  # McNemar: exact binomial test below this many discordant items, else corrected chi-square
SMALL_N = 30  # fewer paired items than this is called a pilot number in the summary
N_BINS = 4  # PSNR quartiles: thought_gains.psnr_bin is ntile(4)
IDENTITY = "identity"
RECONSTRUCTION = "reconstruction"
# identity: more image tokens, no new content; reconstruction: the generator's artifacts
CONTROLS = (IDENTITY, RECONSTRUCTION)
SELF_SOURCES = ("self", "planner")
ORACLE = "oracle"
ALL = "ALL"
NO_DEGRADE = "none"
UNPARSED_CHOICE = "(none)"
NOT_OFFICIAL = ("accuracy", "unparsed_rate", "judge_fallback")
# the first of these a benchmark reports is its headline official metric
HEADLINE_METRICS = ("Overall", "perception", "aAcc", "F1", "delta_2", "Overall/validation", "Overall/dev")
VARIANT = ["benchmark", "condition", "mode", "degrade_kind", "degrade_strength"]
ITEM = ["benchmark", "item_id"]

# why a condition's item has no pair, in the order one reason is picked when there are several
REASONS = ("failed_plan", "failed_thought", "quarantined", "not_scored", "no_baseline")
COVERAGE_SCHEMA = {"n_paired": pl.Int64, "n_missing": pl.Int64, **{f"missing_{r}": pl.Int64 for r in REASONS},
                   "n_partial": pl.Int64}
STATS_SCHEMA = {
    "n_items": pl.Int64, "control_pct": pl.Float64, "treated_pct": pl.Float64, "gain_pp": pl.Float64,
    "ci_low_pp": pl.Float64, "ci_high_pp": pl.Float64, "p_mcnemar": pl.Float64, "fixed": pl.Int64,
    "broken": pl.Int64,
}


# ---------------------------------------------------------------- loading

# the parts of a run load_run can read; a report asks for the ones it uses (all by default)
PARTS = ("pairs", "missing", "pair_cells", "missing_cells", "oracle", "oracle_cells", "oracle_winners",
         "fidelity_cells", "fidelity_ranks", "official", "costs", "plans", "items", "metrics")


@dataclass(frozen=True)
class RunData:
    """One run's rows. `conditions` are the conditions the run answered; `plans` its self-directed thoughts (every
    self/planner thought it used or quarantined, parse-failed plans included; see thought_columns); `reference` is
    the latest other run by the same understander with fixed families on the same items, attached when this run has
    self-directed thoughts but no fixed families of its own (a run has one prompt source). The rest are the run's
    rows of the shared views: `pairs` (paired_items), `missing` (missing_items), `oracle` (oracle_items),
    `fidelity_cells`, `fidelity_ranks` (thought_gains counted per bin, and its rank correlations), `official`
    (official_gains) and `costs`
    (run_costs); `pair_cells`, `missing_cells`, `oracle_cells` and `oracle_winners` count those rows per cell (see
    cells() and oracle_cells()). Parts not asked of
    load_run are empty, and so are the per-item parts (PER_ITEM, with their columns) of a run that is not
    self-directed."""

    run_id: str | None
    conditions: tuple[str, ...] = ()
    plans: pl.DataFrame = field(default_factory=pl.DataFrame)
    items: pl.DataFrame = field(default_factory=pl.DataFrame)
    metrics: pl.DataFrame = field(default_factory=pl.DataFrame)
    run: dict = field(default_factory=dict)
    reference: RunData | None = None
    pairs: pl.DataFrame = field(default_factory=pl.DataFrame)
    missing: pl.DataFrame = field(default_factory=pl.DataFrame)
    oracle: pl.DataFrame = field(default_factory=pl.DataFrame)
    official: pl.DataFrame = field(default_factory=pl.DataFrame)
    costs: pl.DataFrame = field(default_factory=pl.DataFrame)
    fidelity_cells: pl.DataFrame = field(default_factory=pl.DataFrame)
    fidelity_ranks: pl.DataFrame = field(default_factory=pl.DataFrame)
    pair_cells: pl.DataFrame = field(default_factory=pl.DataFrame)
    missing_cells: pl.DataFrame = field(default_factory=pl.DataFrame)
    oracle_cells: pl.DataFrame = field(default_factory=pl.DataFrame)
    oracle_winners: pl.DataFrame = field(default_factory=pl.DataFrame)

    @property
    def random_weights(self) -> bool:
        return "random weights" in (self.run.get("notes") or "")

    @property
    def self_directed(self) -> bool:
        """Whether the run answered or planned with self-directed thoughts (needs `plans` read)."""
        return bool(set(self.conditions) & set(SELF_SOURCES)) or not self.plans.is_empty()


# part -> the run's rows of it ($1 = run_id); every one filters by run in the query
PART_SQL = {
    # run_id is left out of the per-item parts: the same on every row, and a wide column over many rows
    "pairs": "SELECT * EXCLUDE (run_id) FROM paired_items WHERE run_id = $1",
    "missing": "SELECT * EXCLUDE (run_id) FROM missing_items WHERE run_id = $1",
    "oracle": "SELECT * EXCLUDE (run_id) FROM oracle_items WHERE run_id = $1",
    "pair_cells": "SELECT benchmark, condition, mode, degrade_kind, degrade_strength, score, baseline_score, "
                  "count(*) AS weight FROM paired_items WHERE run_id = $1 GROUP BY ALL",
    "missing_cells": "SELECT benchmark, condition, mode, degrade_kind, degrade_strength, reason, partly_paired, "
                     "count(*) AS weight FROM missing_items WHERE run_id = $1 GROUP BY ALL",
    "oracle_cells": "SELECT benchmark, mode, complete, oracle_score, baseline_score, missing_reason, count(*) AS weight "
                    "FROM oracle_items WHERE run_id = $1 GROUP BY ALL",
    "oracle_winners": "SELECT benchmark, mode, family, count(*) AS k FROM (SELECT benchmark, mode, "
                      "unnest(oracle_families) AS family FROM oracle_items WHERE run_id = $1 AND complete) GROUP BY ALL",
    "fidelity_cells": "SELECT * FROM fidelity_cells WHERE run_id = $1",
    "fidelity_ranks": "SELECT * FROM fidelity_ranks WHERE run_id = $1",
    "official": "SELECT * FROM official_gains WHERE run_id = $1",
    "costs": "SELECT * FROM run_costs WHERE run_id = $1",
    "metrics": "SELECT * FROM stg_metrics WHERE run_id = $1",
    # the self-directed thoughts first: none (every run on fixed families) prunes the run's thoughts unread
    "plans": f"WITH own AS (SELECT * FROM stg_thoughts WHERE prompt_source IN {SELF_SOURCES}) SELECT * FROM own "
             "WHERE thought_id IN (SELECT r.thought_id FROM run_thoughts r WHERE r.run_id = $1 "
             "AND r.thought_id IN (SELECT thought_id FROM own))",
    "items": "SELECT * FROM stg_items i WHERE EXISTS (SELECT 1 FROM stg_predictions p WHERE p.run_id = $1 "
             "AND p.benchmark = i.benchmark AND p.item_id = i.item_id)",
}


# the per-item parts: only the self-directed comparisons (self_direction, self_vs_families) use them, so they are
# read for a self-directed run and for its reference run; another run gets them empty, with their columns (a
# 1,000,000-prediction run has some 200,000 paired items)
PER_ITEM = ("pairs", "missing", "oracle")


def load_run(con: duckdb.DuckDBPyConnection, run_id: str | None, with_reference: bool = True,
             parts: tuple[str, ...] = PARTS) -> RunData:
    warehouse.require_views(con)
    # plans say whether the run is self-directed: whether it needs a reference run and its per-item parts
    need = {"plans", *parts} if with_reference or set(parts) & set(PER_ITEM) else set(parts)
    data = _read_run(con, run_id, need, per_item=None)
    ref_id = reference_run(con, data) if with_reference else None
    if ref_id is None:
        return data
    return replace(data, reference=_read_run(con, ref_id, set(parts), per_item=True))


def _read_run(con: duckdb.DuckDBPyConnection, run_id: str | None, need: set[str], per_item: bool | None) -> RunData:
    """The run's parts in `need`; the per-item ones when `per_item`, or (None) when the run is self-directed."""
    def rows(sql: str) -> pl.DataFrame:
        return con.sql(sql, params=[run_id]).pl()

    conditions = tuple(r[0] for r in con.execute(
        "SELECT DISTINCT condition FROM stg_predictions WHERE run_id = $1 ORDER BY condition", [run_id]).fetchall())
    run = rows("SELECT * FROM stg_runs WHERE run_id = $1").to_dicts()
    plans = thought_columns(rows(PART_SQL["plans"]), with_item=True) if "plans" in need else pl.DataFrame()
    data = RunData(run_id, conditions, plans=plans, run=run[0] if run else {})
    per_item = data.self_directed if per_item is None else per_item
    loaded = {name: rows(PART_SQL[name] if per_item or name not in PER_ITEM else f"{PART_SQL[name]} LIMIT 0")
              for name in PARTS if name in need and name != "plans"}
    return replace(data, **loaded)


def reference_run(con: duckdb.DuckDBPyConnection, data: RunData) -> str | None:
    """For a self-directed run without fixed families: the latest other run by the same understander that has
    fixed-family predictions on some of its items."""
    if not data.self_directed or set(data.conditions) - {BASELINE, *SELF_SOURCES}:
        return None
    hit = con.sql("""
        SELECT r.run_id FROM stg_runs r
        WHERE r.run_id <> $1 AND r.understander IS NOT DISTINCT FROM $2 AND EXISTS (
            SELECT 1 FROM stg_predictions p
            JOIN stg_predictions q ON q.benchmark = p.benchmark AND q.item_id = p.item_id
            WHERE p.run_id = r.run_id AND q.run_id = $1 AND p.condition NOT IN ('baseline', 'self', 'planner'))
        ORDER BY r.finished_at DESC NULLS LAST, r.run_id LIMIT 1""",
                  params=[data.run_id, data.run.get("understander")]).fetchall()
    return hit[0][0] if hit else None


def thought_columns(thoughts: pl.DataFrame, with_item: bool = False) -> pl.DataFrame:
    """The thought columns analyses use (stg_thoughts rows: columns an older warehouse lacks read as null)."""
    is_self = pl.col("prompt_source").is_in(SELF_SOURCES)
    params = pl.col("generator_params")
    item = [pl.col(c).alias(f"thought_{c}") for c in ("benchmark", "item_id", "seed", "status")] if with_item else []
    return thoughts.select(
        "thought_id", pl.col("family").alias("thought_family"), "prompt_source",
        pl.coalesce("chosen_family", pl.when(is_self).then(pl.lit(UNPARSED_CHOICE)).otherwise(pl.col("family")))
        .alias("chosen_family"),
        "plan_status", "plan_decoding", "psnr", "ssim", "embed_sim", "gen_seconds",
        params.str.json_path_match("$.degrade.kind").alias("degrade_kind"),
        params.str.json_path_match("$.degrade.strength").cast(pl.Float64, strict=False).alias("degrade_strength"),
        *item,
    )


# ---------------------------------------------------------------- statistics

def bootstrap_ci(diffs, n_resamples: int = N_RESAMPLES, seed: int = RNG_SEED,
                 level: float = LEVEL, weights=None) -> tuple[float, float]:
    """Percentile interval of the mean of per-item differences, items resampled with replacement.

    Drawn as multinomial counts over the distinct values: the same distribution as resampling indices,
    vectorised and cheap for any number of items. `weights` (integer) says how many items each difference stands
    for, so that a cell's items can be passed as a histogram; the draws are the same as for the items one by one."""
    diffs = np.asarray(diffs, dtype=float)
    if weights is None:
        values, counts = np.unique(diffs, return_counts=True)
    else:
        values, inverse = np.unique(diffs, return_inverse=True)
        counts = np.bincount(inverse.ravel(), weights=np.asarray(weights), minlength=values.size).astype(np.int64)
    if counts.sum() == 0:
        return math.nan, math.nan
    return _bootstrap(tuple(values.tolist()), tuple(counts.tolist()), n_resamples, seed, level)


@functools.lru_cache(maxsize=4096)
def _bootstrap(values: tuple[float, ...], counts: tuple[int, ...], n_resamples: int, seed: int,
               level: float) -> tuple[float, float]:
    """The interval for one histogram of differences; cached, as reports share cells (gain_ci and family_oracle
    in the summary) and the draws are the costly part."""
    values_, counts_ = np.asarray(values), np.asarray(counts, dtype=np.int64)
    n = int(counts_.sum())
    draws = np.random.default_rng(seed).multinomial(n, counts_ / counts_.sum(), size=n_resamples)
    means = draws @ values_ / n
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def mcnemar_p(fixed: int, broken: int) -> float:
    """McNemar's test on the discordant items: exact binomial when few, else chi-square with continuity correction.

    The formulas of statsmodels' `mcnemar` (a test checks them against it), in plain Python: importing
    statsmodels and scipy.stats costs more than a whole report."""
    n = fixed + broken
    if n == 0:
        return 1.0
    if n < EXACT_BELOW:
        return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(fixed, broken) + 1)) / 2 ** n)
    return math.erfc(math.sqrt((abs(fixed - broken) - 1) ** 2 / n / 2))  # chi-square sf with 1 dof



def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) by its continued fraction (modified Lentz)."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny, f, c, d = 1e-300, 1.0, 1.0, 0.0
    for i in range(20000):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1.0 - c * d) < 1e-15:
            break
    return front * (f - 1.0)



def spearman_p(rho: float, n: int) -> float:
    """Two-sided p of Spearman's rho over n pairs: Student's t with n - 2 degrees of freedom, as scipy."""
    dof = n - 2
    if abs(rho) >= 1:
        return 0.0
    t2 = rho * rho * dof / ((rho + 1.0) * (1.0 - rho))
    return min(1.0, _betainc(dof / 2, 0.5, dof / (dof + t2)))  # = 2 * t.sf(|t|, dof)


def paired_summary(treated, control, weights=None, interval: bool = True) -> dict:
    """Accuracy with and without the treatment on the same items, the gain with its bootstrap CI, flips, McNemar.
    `weights` (integer): how many items each (treated, control) pair stands for (a histogram of a cell's items).
    Without `interval` the CI is NaN (the bootstrap is the costly part)."""
    treated, control, w = _paired(treated, control, weights)
    n = int(w.sum())
    diffs = treated - control
    low, high = bootstrap_ci(diffs, weights=w) if interval else (math.nan, math.nan)
    t_right, c_right = treated > 0.5, control > 0.5
    fixed, broken = int(w[t_right & ~c_right].sum()), int(w[~t_right & c_right].sum())
    mean = (lambda v: float(v @ w) / n) if n else (lambda v: math.nan)
    return {
        "n_items": n, "control_pct": 100 * mean(control), "treated_pct": 100 * mean(treated),
        "gain_pp": 100 * mean(diffs), "ci_low_pp": 100 * low, "ci_high_pp": 100 * high,
        "p_mcnemar": mcnemar_p(fixed, broken), "fixed": fixed, "broken": broken,
    }


def _paired(treated, control, weights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    treated, control = np.asarray(treated, dtype=float), np.asarray(control, dtype=float)
    w = np.ones(treated.size, dtype=np.int64) if weights is None else np.asarray(weights, dtype=np.int64)
    return treated, control, w


def paired_interval(treated, control, weights=None) -> tuple[float, float]:
    """paired_summary's CI alone (as fractions, not pp)."""
    treated, control, w = _paired(treated, control, weights)
    return bootstrap_ci(treated - control, weights=w)


def coverage(pairs: pl.DataFrame, missing: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """Per group: items paired with the baseline, items with no pair by reason (`missing_items` rows), and items
    paired on only some of their seeds (`n_partial`). A reason outside REASONS counts in `n_missing` only."""
    rows = pl.concat([
        pairs.select(*by, pl.lit(None, pl.String).alias("reason"), pl.lit(False).alias("partly"), _weight(pairs)),
        missing.select(*by, pl.col("reason").cast(pl.String), pl.col("partly_paired").alias("partly"),
                       _weight(missing)),
    ])
    whole = ~pl.col("partly")

    def count(cond: pl.Expr) -> pl.Expr:
        return pl.when(cond).then(pl.col("weight")).otherwise(0).sum()

    out = rows.group_by(by, maintain_order=True).agg(
        count(pl.col("reason").is_null()).alias("n_paired"),
        count(pl.col("reason").is_not_null() & whole).alias("n_missing"),
        *(count((pl.col("reason") == r) & whole).alias(f"missing_{r}") for r in REASONS),
        count(pl.col("partly")).alias("n_partial"))
    return out.cast(COVERAGE_SCHEMA)


def _weight(frame: pl.DataFrame) -> pl.Expr:
    """How many items a row stands for: its `weight` where rows are counts (cells), else 1."""
    return (pl.col("weight") if "weight" in frame.columns else pl.lit(1)).cast(pl.Int64).alias("weight")


def paired_report(pairs: pl.DataFrame, missing: pl.DataFrame, by: list[str],
                  intervals: pl.Expr | None = None) -> pl.DataFrame:
    """paired_table with coverage columns: one row per group in either frame (`n_items` = `n_paired`; the
    statistics are null where nothing is paired)."""
    stats = paired_table(pairs, by, intervals).drop("n_items")
    table = coverage(pairs, missing, by).join(stats, on=by, how="left", nulls_equal=True)
    return table.select(*by, pl.col("n_paired").alias("n_items"), *list(STATS_SCHEMA)[1:], *COVERAGE_SCHEMA)


def paired_table(pairs: pl.DataFrame, by: list[str], intervals: pl.Expr | None = None) -> pl.DataFrame:
    """One row of paired_summary per group; `pairs` has the `by` columns plus per-item `treated` and `control`.
    `intervals`: which rows get a bootstrap CI, as a predicate over the rows' other columns (default: every row);
    the others get NaN. A caller that cites a few rows' intervals (the summary) draws only those."""
    schema = {**{k: pairs.schema[k] for k in by}, **STATS_SCHEMA}
    # a cell's items as a histogram of (treated, control): few distinct pairs however many items; rows that are
    # already counts carry a `weight` column
    count = pl.col("weight").sum() if "weight" in pairs.columns else pl.len()
    hist = pairs.group_by([*by, "treated", "control"], maintain_order=True).agg(count.alias("weight"))
    groups = [(dict(zip(by, key)), part["treated"].to_numpy(), part["control"].to_numpy(), part["weight"].to_numpy())
              for key, part in hist.group_by(by, maintain_order=True)]
    table = pl.DataFrame([{**key, **paired_summary(t, c, w, interval=False)} for key, t, c, w in groups],
                         schema=schema)
    wanted = table.with_columns((pl.lit(True) if intervals is None else intervals).fill_null(False).alias("_ci"))["_ci"]
    bounds = [paired_interval(t, c, w) if want else (math.nan, math.nan)
              for (_, t, c, w), want in zip(groups, wanted)]
    return table.with_columns(pl.Series("ci_low_pp", [100 * b[0] for b in bounds], pl.Float64),
                              pl.Series("ci_high_pp", [100 * b[1] for b in bounds], pl.Float64))


def tidy(frame: pl.DataFrame) -> pl.DataFrame:
    """Round for reading: p-values and seconds to 3 significant digits, official values to 4 decimals, rho/kappa/ssim
    to 3, the rest to 2 (degrade strengths as given); NaN becomes null (valid JSON)."""
    exprs = []
    for name, dtype in frame.schema.items():
        if dtype != pl.Float64 or name == "degrade_strength":
            continue
        col = pl.col(name).fill_nan(None)
        if name.startswith("p_") or "seconds" in name:
            col = col.round_sig_figs(3)
        elif name.startswith("official"):
            col = col.round(4)
        elif any(k in name for k in ("rho", "kappa", "ssim")):
            col = col.round(3)
        else:
            col = col.round(2)
        exprs.append(col.alias(name))
    return frame.with_columns(exprs)


# ---------------------------------------------------------------- paired items

def treated(pairs: pl.DataFrame) -> pl.DataFrame:
    """paired_items rows with the names paired_table reads: `treated` (with the thought), `control` (baseline)."""
    return pairs.rename({"score": "treated", "baseline_score": "control"})


def fixed_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows (paired or missing) of fixed (template) families without degradation: the choices an oracle picks from."""
    return frame.filter(~pl.col("condition").is_in([BASELINE, *SELF_SOURCES]) & (pl.col("degrade_kind") == NO_DEGRADE))


def self_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows (paired or missing) of the self-directed sources, undegraded, with `condition` named `source`."""
    keep = pl.col("condition").is_in(SELF_SOURCES) & (pl.col("degrade_kind") == NO_DEGRADE)
    return frame.filter(keep).rename({"condition": "source"})


def with_all(frame: pl.DataFrame, column: str = "benchmark", pool: bool | None = None) -> pl.DataFrame:
    """Add a copy of every row under `ALL` (items pooled) when there are several benchmarks, or when `pool` says."""
    pool = frame[column].n_unique() > 1 if pool is None else pool
    if frame.is_empty() or not pool:
        return frame
    return pl.concat([frame, frame.with_columns(pl.lit(ALL).alias(column))])


def pooled(pairs: pl.DataFrame, missing: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """with_all on both frames, decided once from the benchmarks of either."""
    pool = pl.concat([pairs["benchmark"], missing["benchmark"]]).n_unique() > 1
    return with_all(pairs, pool=pool), with_all(missing, pool=pool)


def benchmark_parts(frame: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """(benchmark, its rows) per benchmark, plus (ALL, every row) when there are several; rows keep their benchmark."""
    parts = [(key[0], part) for key, part in frame.group_by(["benchmark"], maintain_order=True)]
    return parts + [(ALL, frame)] if len(parts) > 1 else parts


def _order(frame: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    return frame.sort([pl.col("benchmark") == ALL, *by], nulls_last=True)


def _with_run(frame: pl.DataFrame, run_id: str | None) -> pl.DataFrame:
    return tidy(frame.select(pl.lit(run_id, pl.String).alias("run_id"), pl.all()))


# ---------------------------------------------------------------- gain vs baseline

def official_headline(official: pl.DataFrame) -> pl.DataFrame:
    """The benchmark's headline official metric per condition x mode (official_gains rows), as text ('not computed'
    kept), and its gain over baseline. Official metrics aggregate each condition's own items: they are not paired."""
    out_schema = {"benchmark": pl.String, "condition": pl.String, "mode": pl.String, "official_metric": pl.String,
                  "official_value": pl.String, "official_gain": pl.Float64}
    if official.is_empty():
        return pl.DataFrame(schema=out_schema)
    have = official.group_by("benchmark").agg(pl.col("metric").unique()).to_dicts()
    picks = [(r["benchmark"], next((h for h in HEADLINE_METRICS if h in r["metric"]), None)) for r in have]
    picks = pl.DataFrame([p for p in picks if p[1]], schema={"benchmark": pl.String, "metric": pl.String}, orient="row")
    m = official.join(picks, on=["benchmark", "metric"])
    ok = (pl.col("status") == "ok") & pl.col("value").is_not_null()
    return m.select(
        "benchmark", "condition", "mode", pl.col("metric").alias("official_metric"),
        pl.when(ok).then(pl.col("value").round(4).cast(pl.String)).otherwise(pl.lit("not computed"))
        .alias("official_value"),
        pl.when(ok).then(pl.col("gain")).alias("official_gain"),
    ).cast(out_schema)


def cells(data: RunData) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The run's paired items counted per variant x (score, baseline_score), and its missing items per variant x
    reason x partly_paired (`weight` = items; load_run's pair_cells and missing_cells): the same statistics as the
    items one by one, from far fewer rows."""
    return data.pair_cells, data.missing_cells


def gain_table(data: RunData, intervals: pl.Expr | None = None) -> pl.DataFrame:
    """Unrounded gain_ci rows (no run_id): paired statistics and coverage per variant (CIs on the rows `intervals`
    selects, see paired_table)."""
    degraded = pl.col("degrade_kind") != NO_DEGRADE  # pooled only where every benchmark has the variant's kind
    pair_cells, missing_cells = cells(data)
    pairs, missing = pooled(treated(pair_cells.filter(~degraded)), missing_cells.filter(~degraded))
    pairs = pl.concat([pairs, treated(pair_cells.filter(degraded))])
    missing = pl.concat([missing, missing_cells.filter(degraded)])
    table = paired_report(pairs, missing, VARIANT, intervals).rename(
        {"control_pct": "baseline_pct", "treated_pct": "accuracy_pct"})
    official = official_headline(data.official).with_columns(pl.lit(NO_DEGRADE).alias("degrade_kind"))
    table = table.join(official, on=["benchmark", "condition", "mode", "degrade_kind"], how="left")
    return _order(table, ["benchmark", "condition", "mode", "degrade_kind", "degrade_strength"])


def gain_ci(data: RunData) -> pl.DataFrame:
    """Gain over baseline per benchmark x condition x mode (x degrade), with paired bootstrap CI, McNemar and flips."""
    return _with_run(gain_table(data), data.run_id)


def degrade_curve(data: RunData, gains: pl.DataFrame | None = None) -> pl.DataFrame:
    """Gain vs degrade strength per benchmark x family x mode x kind; the undegraded thought is strength 0."""
    gains = gain_table(data) if gains is None else gains
    degraded = gains.filter(pl.col("degrade_kind") != NO_DEGRADE)
    if degraded.is_empty():
        return degraded
    kinds = degraded.select("benchmark", "condition", "mode", "degrade_kind").unique()
    clean = gains.filter(pl.col("degrade_kind") == NO_DEGRADE).drop("degrade_kind")
    zero = clean.join(kinds, on=["benchmark", "condition", "mode"]).with_columns(
        pl.lit(0.0).alias("degrade_strength"))
    return pl.concat([zero.select(degraded.columns), degraded]).sort(
        ["benchmark", "condition", "mode", "degrade_kind", "degrade_strength"])


# ---------------------------------------------------------------- fidelity vs gain


MEASURES = {"psnr": "psnr", "ssim": "ssim", "embed": "embed"}  # fidelity_ranks.measure -> column suffix


def fidelity_correlation(ranks: pl.DataFrame) -> pl.DataFrame:
    """Per mode x family: Spearman rho and p for each fidelity measure (fidelity_ranks rows; null when fewer than
    3 thoughts or one side is constant)."""
    schema = {"mode": pl.String, "family": pl.String, **{f"{c}_{m}": pl.Float64 for m in MEASURES
                                                        for c in ("rho", "p_rho")}}
    out: dict[tuple, dict] = {}
    for r in ranks.iter_rows(named=True):
        row = out.setdefault((r["mode"], r["family"]), {"mode": r["mode"], "family": r["family"]})
        if r["n"] >= 3 and not r["constant"] and r["rho"] is not None:
            row[f"rho_{r['measure']}"], row[f"p_rho_{r['measure']}"] = r["rho"], spearman_p(r["rho"], r["n"])
    return pl.DataFrame(list(out.values()), schema=schema)


def fidelity_gain(data: RunData, intervals: pl.Expr | None = None) -> pl.DataFrame:
    """Gain per PSNR bin per mode, for all families pooled (`ALL`) and each family, with bootstrap CI over thoughts
    and Spearman rho between fidelity and per-item gain; the identity control as a reference row (no bin). Reads the
    run's fidelity_cells (thoughts counted per bin x score pair) and fidelity_ranks, derived at load time. CIs on
    the rows `intervals` selects (see paired_table)."""
    keys = ["mode", "family", "psnr_bin"]
    cells = data.fidelity_cells.rename({"n_thoughts": "weight"})
    stats = paired_table(cells, keys, intervals).select(*keys, pl.col("n_items").alias("n_thoughts"), "gain_pp",
                                             "ci_low_pp", "ci_high_pp")
    n_ssim = pl.col("n_ssim").sum()
    ranges = cells.group_by(keys).agg(
        pl.col("psnr_low").min(), pl.col("psnr_high").max(),
        (pl.col("psnr_sum").sum() / pl.col("weight").sum()).alias("mean_psnr"),
        pl.when(n_ssim > 0).then(pl.col("ssim_sum").sum() / n_ssim).alias("mean_ssim"))
    corr = fidelity_correlation(data.fidelity_ranks)
    table = stats.join(ranges, on=keys, how="left", nulls_equal=True).join(corr, on=["mode", "family"], how="left")
    table = table.sort(["mode", pl.col("family") == IDENTITY, pl.col("family") != ALL, "family", "psnr_bin"],
                       nulls_last=True)
    return _with_run(table.select(*keys, "n_thoughts", "psnr_low", "psnr_high", "mean_psnr", "mean_ssim", "gain_pp",
                                  "ci_low_pp", "ci_high_pp", "rho_psnr", "p_rho_psnr", "rho_ssim", "p_rho_ssim",
                                  "rho_embed", "p_rho_embed"),
                     data.run_id)


# ---------------------------------------------------------------- edit families

def with_category(rows: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    out = rows.join(items.select(*ITEM, "category"), on=ITEM, how="left")
    return out.with_columns(pl.col("category").fill_null("(none)"))



def oracle_items(data: RunData) -> pl.DataFrame:
    """Per item x mode where every fixed family is paired (oracle_items rows, `complete`): the best score a fixed
    family reaches (`oracle_score`) and the families reaching it when above zero (`oracle_families`)."""
    return data.oracle.filter(pl.col("complete"))


def generation_seconds(data: RunData) -> pl.DataFrame:
    """Mean generation seconds per thought (its share of its generator call's device time) over the thoughts the run
    answered with, per benchmark (and ALL) x family (run_costs rows)."""
    costs = with_all(data.costs.select("benchmark", "family", "n_timed", "total_gen_seconds")) \
        if not data.costs.is_empty() else pl.DataFrame(schema={"benchmark": pl.String, "family": pl.String,
                                                                "n_timed": pl.Int64, "total_gen_seconds": pl.Float64})
    n, total = pl.col("n_timed").sum(), pl.col("total_gen_seconds").sum()
    return costs.group_by(["benchmark", "family"]).agg(
        pl.when(n > 0).then(total / n).cast(pl.Float64).alias("mean_gen_seconds"))


def oracle_cells(data: RunData) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The oracle_items of the run counted (load_run's oracle_cells and oracle_winners): per benchmark x mode x
    complete x (oracle_score, baseline_score) x missing_reason: `weight` items; per benchmark x mode x family: `k`
    complete items on which it is an oracle family."""
    return data.oracle_cells, data.oracle_winners


def family_oracle(data: RunData, intervals: pl.Expr | None = None) -> pl.DataFrame:
    """Per benchmark x mode: each fixed family's gain (CI, McNemar, flips, coverage), how often it is an oracle family,
    its generation cost per point of gain; and the oracle row (best family per item, on items where every family is
    paired: an upper bound on choosing well; an item some family lacks is missing, with that family's reason).
    Generation seconds are each thought's share of its generator call. Works on counted cells (cells(),
    oracle_cells()): the same numbers as item by item. CIs on the rows `intervals` selects (see paired_table; its
    columns are named as in paired_table: the family is `condition`)."""
    keys = ["benchmark", "mode", "condition"]
    pair_cells, missing_cells = cells(data)
    counted, winners = oracle_cells(data)
    oracle = counted.with_columns(pl.lit(ORACLE).alias("condition"))
    pairs = pl.concat([treated(fixed_rows(pair_cells)).select(*keys, "treated", "control", "weight"),
                       oracle.filter(pl.col("complete")).select(
                           *keys, pl.col("oracle_score").alias("treated"), pl.col("baseline_score").alias("control"),
                           "weight")])
    missing = pl.concat([fixed_rows(missing_cells).select(*keys, pl.col("reason").cast(pl.String), "partly_paired",
                                                          "weight"),
                         oracle.filter(~pl.col("complete")).select(
                             *keys, pl.col("missing_reason").fill_null("not_planned").cast(pl.String).alias("reason"),
                             pl.lit(False).alias("partly_paired"), "weight")])
    pairs, missing = pooled(pairs, missing)
    table = paired_report(pairs, missing, keys, intervals).rename(
        {"condition": "family", "control_pct": "baseline_pct", "treated_pct": "accuracy_pct"})
    pool = ALL in set(pairs["benchmark"]) | set(missing["benchmark"])
    share = _oracle_share(with_all(counted.filter(pl.col("complete")), pool=pool), with_all(winners, pool=pool))
    table = table.join(share, on=["benchmark", "mode", "family"], how="left")
    table = table.join(generation_seconds(data), on=["benchmark", "family"], how="left").with_columns(
        pl.when(pl.col("gain_pp") > 0).then(pl.col("mean_gen_seconds") / pl.col("gain_pp")).alias("seconds_per_pp"))
    table = table.with_columns(pl.col("oracle_share_pct").fill_null(0.0)).sort(
        [pl.col("benchmark") == ALL, "benchmark", "mode", pl.col("family") == ORACLE, pl.col("gain_pp"), "family"],
        descending=[False, False, False, False, True, False], nulls_last=True)
    return _with_run(table, data.run_id)


def _oracle_share(complete: pl.DataFrame, winners: pl.DataFrame) -> pl.DataFrame:
    """Share of items on which a family is an oracle family; for `oracle`, the share with any oracle family (an item
    has one exactly when its oracle score is above 0)."""
    keys = ["benchmark", "mode"]
    n = complete.group_by(keys).agg(pl.col("weight").sum().alias("n"))
    per = winners.group_by([*keys, "family"]).agg(pl.col("k").sum())
    anyone = complete.filter(pl.col("oracle_score") > 0).group_by(keys).agg(pl.col("weight").sum().alias("k")) \
        .with_columns(pl.lit(ORACLE).alias("family"))
    both = pl.concat([per, anyone.select(per.columns)]).join(n, on=keys)
    return both.select(*keys, "family", (100 * pl.col("k") / pl.col("n")).alias("oracle_share_pct"))


# ---------------------------------------------------------------- self-directed imagination

def self_choices(data: RunData) -> pl.DataFrame:
    """One row per self-directed plan (item x seed), parse failures included: source (self | planner), chosen
    family ('(none)' when unparsed), plan status, decoding."""
    plans = data.plans
    if plans.is_empty():
        return pl.DataFrame(schema={"benchmark": pl.String, "item_id": pl.String, "seed": pl.Int64,
                                    "thought_id": pl.String, "source": pl.String, "chosen_family": pl.String,
                                    "plan_status": pl.String, "plan_decoding": pl.String})
    return plans.select(
        pl.col("thought_benchmark").alias("benchmark"), pl.col("thought_item_id").alias("item_id"),
        pl.col("thought_seed").alias("seed"), "thought_id", pl.col("prompt_source").alias("source"),
        "chosen_family", "plan_status", "plan_decoding").sort(["benchmark", "item_id", "source", "seed"])


def parsed(choices: pl.DataFrame) -> pl.DataFrame:
    """Plans that name a family (stability and oracle agreement are measured on these)."""
    return choices.filter((pl.col("plan_status") != "parse_failed").fill_null(True)
                          & (pl.col("chosen_family") != UNPARSED_CHOICE))


def fixed_source(data: RunData) -> RunData:
    """The run whose fixed families and oracle a self-directed run is compared with: the reference run, or itself."""
    return data.reference or data


def choice_distribution(data: RunData) -> pl.DataFrame:
    """Chosen-family counts and shares per benchmark (and ALL) x source."""
    choices = with_all(self_choices(data))
    keys = ["benchmark", "source"]
    counts = choices.group_by([*keys, "chosen_family"]).agg(
        pl.len().cast(pl.Int64).alias("n_choices"),
        (pl.col("plan_status") == "parse_failed").sum().cast(pl.Int64).alias("parse_failed"))
    counts = counts.with_columns((100 * pl.col("n_choices") / pl.col("n_choices").sum().over(keys)).alias("share_pct"))
    return _with_run(_order(counts, ["benchmark", "source", pl.col("n_choices").cast(pl.Int64).neg(), "chosen_family"]), data.run_id)


def seed_stability(choices: pl.DataFrame) -> dict:
    """Over items with >= 2 seeds: share choosing one family on every seed, mean pairwise agreement between seeds,
    and Fleiss' kappa (seeds as raters; items with the most common seed count)."""
    per = choices.group_by(ITEM).agg(pl.col("chosen_family"))
    lists = [r for r in per["chosen_family"].to_list() if len(r) >= 2]
    out = {"n_items_multi_seed": len(lists), "seed_stable_pct": None, "pairwise_agreement_pct": None,
           "fleiss_kappa": None}
    if not lists:
        return out
    out["seed_stable_pct"] = 100 * float(np.mean([len(set(r)) == 1 for r in lists]))
    pair_shares = []
    for r in lists:
        counts = np.unique(r, return_counts=True)[1]
        pair_shares.append((counts * (counts - 1)).sum() / (len(r) * (len(r) - 1)))
    out["pairwise_agreement_pct"] = 100 * float(np.mean(pair_shares))
    out["fleiss_kappa"] = _fleiss(lists)
    return out


def _fleiss(lists: list[list[str]]) -> float | None:
    from statsmodels.stats.inter_rater import fleiss_kappa

    sizes = [len(r) for r in lists]
    m = max(set(sizes), key=sizes.count)
    lists = [r for r in lists if len(r) == m]
    cats = sorted({c for r in lists for c in r})
    table = np.array([[r.count(c) for c in cats] for r in lists])
    if len(cats) < 2:
        return None  # every seed of every item chose one family: kappa is undefined
    kappa = float(fleiss_kappa(table, method="fleiss"))
    return kappa if math.isfinite(kappa) else None


def oracle_agreement(choices: pl.DataFrame, oracle: pl.DataFrame) -> pl.DataFrame:
    """Per mode: share of items (with some oracle family) whose chosen family is an oracle family
    (an item's seeds averaged)."""
    joined = choices.join(oracle.filter(pl.col("oracle_families").list.len() > 0), on=ITEM)
    per_item = joined.group_by(["mode", *ITEM]).agg(
        pl.col("oracle_families").list.contains(pl.col("chosen_family")).cast(pl.Float64).mean().alias("agree"))
    return per_item.group_by("mode").agg((100 * pl.col("agree").mean()).alias("oracle_agreement_pct"),
                                         pl.len().alias("n_items_with_oracle"))


SELF_SCHEMA = {
    "benchmark": pl.String, "source": pl.String, "mode": pl.String, "n_choices": pl.Int64,
    "parse_failed_pct": pl.Float64, "top_choice": pl.String, "top_choice_pct": pl.Float64, "decoding": pl.String,
    "seed_stable_pct": pl.Float64, "n_items_multi_seed": pl.Int64, "pairwise_agreement_pct": pl.Float64,
    "fleiss_kappa": pl.Float64, "oracle_agreement_pct": pl.Float64, "n_items_with_oracle": pl.Int64,
}


def _choice_summary(bench: str, source: str, part: pl.DataFrame) -> dict:
    top = part["chosen_family"].value_counts(sort=True).sort(["count", "chosen_family"], descending=[True, False])
    decoding = sorted(d for d in part["plan_decoding"].unique().to_list() if d)
    return {"benchmark": bench, "source": source, "n_choices": part.height,
            "parse_failed_pct": 100 * float((part["plan_status"] == "parse_failed").fill_null(False).mean()),
            "top_choice": top["chosen_family"][0], "top_choice_pct": 100 * top["count"][0] / part.height,
            "decoding": "/".join(decoding) or None, **seed_stability(parsed(part))}


def self_direction(data: RunData) -> pl.DataFrame:
    """Per benchmark (and ALL) x source x mode: choice distribution summary, parse failures, seed stability,
    agreement with the oracle family, and the gain over baseline with CI; `reference_run` names the run that
    supplied the fixed families when it is not this one."""
    choices = self_choices(data)
    oracle = oracle_items(fixed_source(data))
    pairs, missing = pooled(treated(self_rows(data.pairs)), self_rows(data.missing))
    modes = sorted(set(pairs["mode"]) | set(missing["mode"]))
    rows = []
    for bench, in_bench in benchmark_parts(choices):
        for (source,), part in in_bench.group_by(["source"], maintain_order=True):
            common = _choice_summary(bench, source, part)
            agree = {r["mode"]: r for r in oracle_agreement(parsed(part), oracle).iter_rows(named=True)}
            for mode in modes or [None]:
                a = agree.get(mode, {})
                rows.append({**common, "mode": mode, "oracle_agreement_pct": a.get("oracle_agreement_pct"),
                             "n_items_with_oracle": a.get("n_items_with_oracle", 0)})
    table = pl.DataFrame(rows, schema=SELF_SCHEMA)
    gains = paired_report(pairs, missing, ["benchmark", "source", "mode"]).rename(
        {"control_pct": "baseline_pct", "treated_pct": "accuracy_pct"})
    table = table.join(gains, on=["benchmark", "source", "mode"], how="left", nulls_equal=True)
    table = table.with_columns(pl.lit(data.reference.run_id if data.reference else None, pl.String)
                               .alias("reference_run"))
    return _with_run(_order(table, ["benchmark", "source", "mode"]), data.run_id)


def self_vs_families(data: RunData) -> pl.DataFrame:
    """Gain of each self-directed source over baseline, over each fixed family and over the oracle, with CI, on the
    items both sides have paired (fixed families from the reference run when this run has none); coverage columns
    on the rows against baseline."""
    src = fixed_source(data)
    own = treated(self_rows(data.pairs))
    cols = [*ITEM, "mode", "source", "versus", "treated", "control"]
    vs_base = own.with_columns(pl.lit(BASELINE).alias("versus"))
    vs_fixed = own.drop("control").join(fixed_rows(src.pairs).select(
        *ITEM, "mode", pl.col("condition").alias("versus"), pl.col("score").alias("control")), on=[*ITEM, "mode"])
    vs_oracle = own.drop("control").join(oracle_items(src).select(
        *ITEM, "mode", pl.col("oracle_score").alias("control")), on=[*ITEM, "mode"]).with_columns(
        pl.lit(ORACLE).alias("versus"))
    pairs = with_all(pl.concat([p.select(cols) for p in (vs_base, vs_fixed, vs_oracle)]))
    keys = ["benchmark", "source", "mode", "versus"]
    table = paired_table(pairs, keys).rename({"control_pct": "versus_pct", "treated_pct": "self_pct"})
    base_pairs, base_missing = pooled(own, self_rows(data.missing))
    cov = coverage(base_pairs, base_missing, keys[:3]).with_columns(pl.lit(BASELINE).alias("versus"))
    table = table.join(cov, on=keys, how="left")
    table = table.sort([pl.col("benchmark") == ALL, "benchmark", "source", "mode", pl.col("versus") != BASELINE,
                        pl.col("versus") == ORACLE, "versus"])
    table = table.with_columns(pl.lit(data.reference.run_id if data.reference else None, pl.String)
                               .alias("reference_run"))
    return _with_run(table, data.run_id)
