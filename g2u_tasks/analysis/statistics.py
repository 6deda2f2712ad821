"""The paper's questions as statistics (issue 6): gain with uncertainty, fidelity vs gain, edit families,
self-directed imagination. Plain functions over Polars frames read from the warehouse.

Conventions (docs/REPORTS.md):
- the unit is the item (benchmark, item_id); an item's seeds are pooled by averaging its correctness (`score`);
- an item counts as right for flips and McNemar when more than half of its seeds are right;
- intervals are percentile intervals of a paired bootstrap over items (N_RESAMPLES draws, fixed RNG_SEED);
- thoughts made with a `degrade` generator option stay apart (degrade_kind, degrade_strength).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import duckdb
import numpy as np
import polars as pl

from g2u_tasks.records import BASELINE

N_RESAMPLES = 2000
RNG_SEED = 20240601
LEVEL = 0.95
EXACT_BELOW = 25  # McNemar: exact binomial test below this many discordant items, else corrected chi-square
SMALL_N = 30  # fewer paired items than this is called a pilot number in the summary
N_BINS = 4
IDENTITY = "identity"
SELF_SOURCES = ("self", "planner")
ORACLE = "oracle"
ALL = "ALL"
NO_DEGRADE = "none"
UNPARSED_CHOICE = "(none)"
NOT_OFFICIAL = ("accuracy", "unparsed_rate", "judge_fallback")
# the first of these a benchmark reports is its headline official metric
HEADLINE_METRICS = ("Overall", "perception", "aAcc", "F1", "delta_2", "Overall/validation", "Overall/dev")
PLAN_COLUMNS = ("chosen_family", "plan_status", "plan_raw", "plan_decoding")
VARIANT = ["benchmark", "condition", "mode", "degrade_kind", "degrade_strength"]
ITEM = ["benchmark", "item_id"]

STATS_SCHEMA = {
    "n_items": pl.Int64, "control_pct": pl.Float64, "treated_pct": pl.Float64, "gain_pp": pl.Float64,
    "ci_low_pp": pl.Float64, "ci_high_pp": pl.Float64, "p_mcnemar": pl.Float64, "fixed": pl.Int64,
    "broken": pl.Int64,
}


# ---------------------------------------------------------------- loading

@dataclass(frozen=True)
class RunData:
    """One run's rows. `predictions` carries its thought's columns (see thought_columns); `thoughts` holds every
    thought the run used or quarantined (parse-failed plans included). `reference` is the latest other run by the
    same understander with fixed families on the same items, attached when this run has self-directed thoughts
    but no fixed families of its own (a run has one prompt source)."""

    run_id: str | None
    predictions: pl.DataFrame
    thoughts: pl.DataFrame
    items: pl.DataFrame
    metrics: pl.DataFrame
    run: dict = field(default_factory=dict)
    reference: RunData | None = None

    @property
    def random_weights(self) -> bool:
        return "random weights" in (self.run.get("notes") or "")


def load_run(con: duckdb.DuckDBPyConnection, run_id: str | None, with_reference: bool = True) -> RunData:
    def rows(sql: str) -> pl.DataFrame:
        return con.sql(sql, params=[run_id]).pl()

    preds = rows("SELECT * FROM predictions WHERE run_id = $1")
    thoughts = rows("""SELECT * FROM thoughts WHERE thought_id IN (
                           SELECT thought_id FROM predictions WHERE run_id = $1
                           UNION
                           SELECT json_extract_string(record, '$.thought_id') FROM quarantine
                           WHERE run_id = $1 AND stage = 'predictions' AND json_valid(record))""")
    items = rows("SELECT * FROM items i WHERE EXISTS (SELECT 1 FROM predictions p WHERE p.run_id = $1 "
                 "AND p.benchmark = i.benchmark AND p.item_id = i.item_id)")
    metrics = rows("SELECT * FROM metrics WHERE run_id = $1")
    run = rows("SELECT * FROM runs WHERE run_id = $1").to_dicts()
    data = RunData(run_id, join_thoughts(preds, thoughts), thought_columns(thoughts, with_item=True), items, metrics,
                   run[0] if run else {})
    ref_id = reference_run(con, data) if with_reference else None
    if ref_id is None:
        return data
    return replace(data, reference=load_run(con, ref_id, with_reference=False))


def reference_run(con: duckdb.DuckDBPyConnection, data: RunData) -> str | None:
    """For a self-directed run without fixed families: the latest other run by the same understander that has
    fixed-family predictions on some of its items."""
    conditions = set(data.predictions["condition"].unique().to_list())
    own_self = bool(conditions & set(SELF_SOURCES)) or data.thoughts["prompt_source"].is_in(SELF_SOURCES).any()
    if not own_self or conditions - {BASELINE, *SELF_SOURCES}:
        return None
    hit = con.sql("""
        SELECT r.run_id FROM runs r
        WHERE r.run_id <> $1 AND r.understander IS NOT DISTINCT FROM $2 AND EXISTS (
            SELECT 1 FROM predictions p JOIN predictions q ON q.benchmark = p.benchmark AND q.item_id = p.item_id
            WHERE p.run_id = r.run_id AND q.run_id = $1 AND p.condition NOT IN ('baseline', 'self', 'planner'))
        ORDER BY r.finished_at DESC NULLS LAST, r.run_id LIMIT 1""",
                  params=[data.run_id, data.run.get("understander")]).fetchall()
    return hit[0][0] if hit else None


def thought_columns(thoughts: pl.DataFrame, with_item: bool = False) -> pl.DataFrame:
    """The thought columns analyses use; plan columns default to null on warehouses that predate them."""
    for col in PLAN_COLUMNS:
        if col not in thoughts.columns:
            thoughts = thoughts.with_columns(pl.lit(None, pl.String).alias(col))
    if "embed_sim" not in thoughts.columns:  # warehouses that predate the column
        thoughts = thoughts.with_columns(pl.lit(None, pl.Float64).alias("embed_sim"))
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


def join_thoughts(preds: pl.DataFrame, thoughts: pl.DataFrame) -> pl.DataFrame:
    out = preds.join(thought_columns(thoughts), on="thought_id", how="left")
    return out.with_columns(pl.col("degrade_kind").fill_null(NO_DEGRADE))


# ---------------------------------------------------------------- statistics

def bootstrap_ci(diffs, n_resamples: int = N_RESAMPLES, seed: int = RNG_SEED,
                 level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of the mean of per-item differences, items resampled with replacement.

    Drawn as multinomial counts over the distinct values: the same distribution as resampling indices,
    vectorised and cheap for any number of items."""
    diffs = np.asarray(diffs, dtype=float)
    n = diffs.size
    if n == 0:
        return math.nan, math.nan
    values, counts = np.unique(diffs, return_counts=True)
    draws = np.random.default_rng(seed).multinomial(n, counts / counts.sum(), size=n_resamples)
    means = draws @ values / n
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def mcnemar_p(fixed: int, broken: int) -> float:
    """McNemar's test on the discordant items: exact binomial when few, else chi-square with continuity correction."""
    from statsmodels.stats.contingency_tables import mcnemar

    if fixed + broken == 0:
        return 1.0
    return float(mcnemar([[0, broken], [fixed, 0]], exact=fixed + broken < EXACT_BELOW, correction=True).pvalue)


def spearman(x, y) -> tuple[float | None, float | None]:
    """(rho, p) or (None, None) when fewer than 3 pairs or either side is constant."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, None
    res = spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def paired_summary(treated, control) -> dict:
    """Accuracy with and without the treatment on the same items, the gain with its bootstrap CI, flips, McNemar."""
    treated, control = np.asarray(treated, dtype=float), np.asarray(control, dtype=float)
    diffs = treated - control
    low, high = bootstrap_ci(diffs)
    t_right, c_right = treated > 0.5, control > 0.5
    fixed, broken = int((t_right & ~c_right).sum()), int((~t_right & c_right).sum())
    return {
        "n_items": int(diffs.size), "control_pct": 100 * control.mean(), "treated_pct": 100 * treated.mean(),
        "gain_pp": 100 * diffs.mean(), "ci_low_pp": 100 * low, "ci_high_pp": 100 * high,
        "p_mcnemar": mcnemar_p(fixed, broken), "fixed": fixed, "broken": broken,
    }


def paired_table(pairs: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """One row of paired_summary per group; `pairs` has the `by` columns plus per-item `treated` and `control`."""
    schema = {**{k: pairs.schema[k] for k in by}, **STATS_SCHEMA}
    rows = [{**dict(zip(by, key)), **paired_summary(part["treated"].to_numpy(), part["control"].to_numpy())}
            for key, part in pairs.group_by(by, maintain_order=True)]
    return pl.DataFrame(rows, schema=schema)


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


# ---------------------------------------------------------------- per-item scores

def item_scores(preds: pl.DataFrame) -> pl.DataFrame:
    """One row per item and variant (benchmark x condition x mode x degrade): score = share of its seeds right."""
    return (preds.filter(pl.col("correct").is_not_null())
            .group_by([*VARIANT, "item_id"], maintain_order=True)
            .agg(pl.col("correct").cast(pl.Float64).mean().alias("score")))


def baseline_scores(scores: pl.DataFrame) -> pl.DataFrame:
    base = scores.filter((pl.col("condition") == BASELINE) & (pl.col("mode") == BASELINE))
    return base.select(*ITEM, pl.col("score").alias("control"))


def fixed_scores(scores: pl.DataFrame) -> pl.DataFrame:
    """Fixed (template) families without degradation: the choices an oracle picks from."""
    return scores.filter(~pl.col("condition").is_in([BASELINE, *SELF_SOURCES]) & (pl.col("mode") != BASELINE)
                         & (pl.col("degrade_kind") == NO_DEGRADE))


def with_all(frame: pl.DataFrame, column: str = "benchmark") -> pl.DataFrame:
    """Add a copy of every row under `ALL` when there are several benchmarks (items pooled)."""
    if frame.is_empty() or frame[column].n_unique() < 2:
        return frame
    return pl.concat([frame, frame.with_columns(pl.lit(ALL).alias(column))])


def benchmark_parts(frame: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """(benchmark, its rows) per benchmark, plus (ALL, every row) when there are several; rows keep their benchmark."""
    parts = [(key[0], part) for key, part in frame.group_by(["benchmark"], maintain_order=True)]
    return parts + [(ALL, frame)] if len(parts) > 1 else parts


def _order(frame: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    return frame.sort([pl.col("benchmark") == ALL, *by], nulls_last=True)


def _with_run(frame: pl.DataFrame, run_id: str | None) -> pl.DataFrame:
    return tidy(frame.select(pl.lit(run_id, pl.String).alias("run_id"), pl.all()))


# ---------------------------------------------------------------- gain vs baseline

def official_headline(metrics: pl.DataFrame) -> pl.DataFrame:
    """The benchmark's headline official metric per condition x mode, as text ('not computed' kept), and its gain."""
    out_schema = {"benchmark": pl.String, "condition": pl.String, "mode": pl.String, "official_metric": pl.String,
                  "official_value": pl.String, "official_gain": pl.Float64}
    m = metrics.filter(~pl.col("metric").is_in(NOT_OFFICIAL))
    have = m.group_by("benchmark").agg(pl.col("metric").unique()).to_dicts()
    picks = [(r["benchmark"], next((h for h in HEADLINE_METRICS if h in r["metric"]), None)) for r in have]
    picks = pl.DataFrame([p for p in picks if p[1]], schema={"benchmark": pl.String, "metric": pl.String}, orient="row")
    m = m.join(picks, on=["benchmark", "metric"])
    if m.is_empty():
        return pl.DataFrame(schema=out_schema)
    ok = (pl.col("status") == "ok") & pl.col("value").is_not_null()
    base = m.filter((pl.col("condition") == BASELINE) & (pl.col("mode") == BASELINE)).select(
        "benchmark", pl.when(ok).then(pl.col("value")).alias("base_value"))
    return m.join(base, on="benchmark", how="left").select(
        "benchmark", "condition", "mode", pl.col("metric").alias("official_metric"),
        pl.when(ok).then(pl.col("value").round(4).cast(pl.String)).otherwise(pl.lit("not computed"))
        .alias("official_value"),
        pl.when(ok).then(pl.col("value") - pl.col("base_value")).alias("official_gain"),
    )


def gain_table(data: RunData) -> pl.DataFrame:
    """Unrounded gain_ci rows (no run_id)."""
    scores = item_scores(data.predictions)
    pairs = scores.filter(pl.col("condition") != BASELINE).rename({"score": "treated"})
    pairs = pairs.join(baseline_scores(scores), on=ITEM)
    degraded = pl.col("degrade_kind") != NO_DEGRADE  # pooled only where every benchmark has the variant's kind
    pairs = pl.concat([with_all(pairs.filter(~degraded)), pairs.filter(degraded)])
    table = paired_table(pairs, VARIANT).rename({"control_pct": "baseline_pct", "treated_pct": "accuracy_pct"})
    official = official_headline(data.metrics).with_columns(pl.lit(NO_DEGRADE).alias("degrade_kind"))
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

def thought_gains(data: RunData) -> pl.DataFrame:
    """One row per thought x mode: its PSNR/SSIM and gain = its correctness − the item's baseline score."""
    preds = data.predictions.filter(pl.col("thought_id").is_not_null() & pl.col("correct").is_not_null()
                                    & pl.col("psnr").is_not_null())
    per = preds.group_by(["thought_id", "mode"], maintain_order=True).agg(
        *(pl.col(c).first() for c in ("benchmark", "item_id", "condition", "degrade_kind", "degrade_strength",
                                      "psnr", "ssim", "embed_sim")),
        pl.col("correct").cast(pl.Float64).mean().alias("treated"))
    per = per.join(baseline_scores(item_scores(data.predictions)), on=ITEM)
    return per.with_columns((pl.col("treated") - pl.col("control")).alias("gain"))


def ntile(n_rows: int, n_bins: int) -> np.ndarray:
    """Bin numbers 1..n_bins over ordered rows, as SQL's ntile: the first n_rows % n_bins bins hold one row more."""
    q, r = divmod(n_rows, n_bins)
    return np.repeat(np.arange(1, n_bins + 1), [q + 1] * r + [q] * (n_bins - r))


def psnr_bins(gains: pl.DataFrame, n_bins: int = N_BINS) -> pl.DataFrame:
    """Equal-count PSNR bins per mode over every thought except the identity control (ties by thought_id)."""
    edits = gains.filter(pl.col("condition") != IDENTITY).sort(["mode", "psnr", "thought_id"])
    parts = [part.with_columns(pl.Series("psnr_bin", ntile(part.height, n_bins), pl.Int64))
             for _, part in edits.group_by("mode", maintain_order=True)]
    return pl.concat(parts) if parts else edits.with_columns(pl.lit(None, pl.Int64).alias("psnr_bin"))


def fidelity_correlation(gains: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    rows = []
    for key, part in gains.group_by(by, maintain_order=True):
        rho_p, p_p = spearman(part["psnr"], part["gain"])
        rho_s, p_s = spearman(part["ssim"], part["gain"])
        emb = part.filter(pl.col("embed_sim").is_not_null()) if "embed_sim" in part.columns else part.clear()
        rho_e, p_e = spearman(emb["embed_sim"], emb["gain"]) if emb.height else (None, None)
        rows.append({**dict(zip(by, key)), "rho_psnr": rho_p, "p_rho_psnr": p_p, "rho_ssim": rho_s, "p_rho_ssim": p_s,
                     "rho_embed": rho_e, "p_rho_embed": p_e})
    schema = {**{k: gains.schema[k] for k in by}, "rho_psnr": pl.Float64, "p_rho_psnr": pl.Float64,
              "rho_ssim": pl.Float64, "p_rho_ssim": pl.Float64, "rho_embed": pl.Float64, "p_rho_embed": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def fidelity_gain(data: RunData, n_bins: int = N_BINS) -> pl.DataFrame:
    """Gain per PSNR bin per mode, for all families pooled (`ALL`) and each family, with bootstrap CI over thoughts
    and Spearman rho between fidelity and per-item gain; the identity control as a reference row (no bin)."""
    gains = thought_gains(data)
    binned = psnr_bins(gains, n_bins)
    binned = pl.concat([binned.with_columns(pl.lit(ALL).alias("family")),
                        binned.with_columns(pl.col("condition").alias("family"))])
    ident = gains.filter(pl.col("condition") == IDENTITY).with_columns(
        pl.lit(IDENTITY).alias("family"), pl.lit(None, pl.Int64).alias("psnr_bin"))
    rows = pl.concat([binned, ident.select(binned.columns)])
    keys = ["mode", "family", "psnr_bin"]
    stats = paired_table(rows, keys).select(*keys, pl.col("n_items").alias("n_thoughts"), "gain_pp",
                                            "ci_low_pp", "ci_high_pp")
    ranges = rows.group_by(keys).agg(pl.col("psnr").min().alias("psnr_low"), pl.col("psnr").max().alias("psnr_high"),
                                     pl.col("psnr").mean().alias("mean_psnr"), pl.col("ssim").mean().alias("mean_ssim"))
    corr = fidelity_correlation(binned, ["mode", "family"])
    table = stats.join(ranges, on=keys, how="left", nulls_equal=True).join(corr, on=["mode", "family"], how="left")
    table = table.sort(["mode", pl.col("family") == IDENTITY, pl.col("family") != ALL, "family", "psnr_bin"],
                       nulls_last=True)
    return _with_run(table.select(*keys, "n_thoughts", "psnr_low", "psnr_high", "mean_psnr", "mean_ssim", "gain_pp",
                                  "ci_low_pp", "ci_high_pp", "rho_psnr", "p_rho_psnr", "rho_ssim", "p_rho_ssim",
                                  "rho_embed", "p_rho_embed"),
                     data.run_id)


# ---------------------------------------------------------------- edit families

def with_category(scores: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    return scores.join(items.select(*ITEM, pl.col("category").fill_null("(none)")), on=ITEM, how="left")


def family_gain(data: RunData, by: tuple[str, ...] = ("benchmark",)) -> pl.DataFrame:
    """Gain of each fixed family over baseline per mode and `by` (e.g. ("benchmark", "category")), with CI."""
    scores = item_scores(data.predictions)
    pairs = fixed_scores(scores).rename({"score": "treated"}).join(baseline_scores(scores), on=ITEM)
    if "category" in by:
        pairs = with_category(pairs, data.items)
    table = paired_table(with_all(pairs), [*by, "mode", "condition"]).rename(
        {"condition": "family", "control_pct": "baseline_pct", "treated_pct": "accuracy_pct"})
    return _with_run(_order(table, [*by, "mode", "family"]), data.run_id)


def oracle_items(scores: pl.DataFrame) -> pl.DataFrame:
    """Per item x mode: the best score a fixed family reaches (`oracle_score`) and the families reaching it
    when it is above zero (`oracle_families`, empty when no family gets the item right)."""
    keys = [*ITEM, "mode"]
    fixed = fixed_scores(scores)
    best = fixed.group_by(keys).agg(pl.col("score").max().alias("oracle_score"))
    winners = (fixed.join(best, on=keys)
               .filter((pl.col("score") == pl.col("oracle_score")) & (pl.col("oracle_score") > 0))
               .group_by(keys).agg(pl.col("condition").sort().alias("oracle_families")))
    out = best.join(winners, on=keys, how="left")
    return out.with_columns(pl.col("oracle_families").fill_null(pl.lit([], pl.List(pl.String))))


def generation_seconds(data: RunData) -> pl.DataFrame:
    """Mean generation seconds per thought, per benchmark (and ALL) x family."""
    thoughts = data.predictions.filter(pl.col("thought_id").is_not_null()).unique("thought_id")
    thoughts = with_all(thoughts.select("benchmark", pl.col("condition").alias("family"), "gen_seconds"))
    return thoughts.group_by(["benchmark", "family"]).agg(pl.col("gen_seconds").mean().alias("mean_gen_seconds"))


def family_oracle(data: RunData) -> pl.DataFrame:
    """Per benchmark x mode: each fixed family's gain (CI, McNemar, flips), how often it is an oracle family, its
    generation cost per point of gain; and the oracle row (best family per item: an upper bound on choosing well)."""
    scores = item_scores(data.predictions)
    base = baseline_scores(scores)
    cols = [*ITEM, "mode", "condition", "treated", "control"]
    fixed = fixed_scores(scores).rename({"score": "treated"}).join(base, on=ITEM)
    oracle = oracle_items(scores)
    best = oracle.rename({"oracle_score": "treated"}).join(base, on=ITEM).with_columns(pl.lit(ORACLE).alias("condition"))
    pairs = with_all(pl.concat([fixed.select(cols), best.select(cols)]))
    table = paired_table(pairs, ["benchmark", "mode", "condition"]).rename(
        {"condition": "family", "control_pct": "baseline_pct", "treated_pct": "accuracy_pct"})
    share = _oracle_share(with_all(oracle))
    table = table.join(share, on=["benchmark", "mode", "family"], how="left")
    table = table.join(generation_seconds(data), on=["benchmark", "family"], how="left").with_columns(
        pl.when(pl.col("gain_pp") > 0).then(pl.col("mean_gen_seconds") / pl.col("gain_pp")).alias("seconds_per_pp"))
    table = table.with_columns(pl.col("oracle_share_pct").fill_null(0.0)).sort(
        [pl.col("benchmark") == ALL, "benchmark", "mode", pl.col("family") == ORACLE, pl.col("gain_pp"), "family"],
        descending=[False, False, False, False, True, False])
    return _with_run(table, data.run_id)


def _oracle_share(oracle: pl.DataFrame) -> pl.DataFrame:
    """Share of items on which a family is an oracle family; for `oracle`, the share with any oracle family."""
    keys = ["benchmark", "mode"]
    n = oracle.group_by(keys).agg(pl.len().alias("n"))
    per = oracle.explode("oracle_families").drop_nulls("oracle_families").group_by(
        [*keys, pl.col("oracle_families").alias("family")]).agg(pl.len().alias("k"))
    anyone = oracle.filter(pl.col("oracle_families").list.len() > 0).group_by(keys).agg(pl.len().alias("k")) \
        .with_columns(pl.lit(ORACLE).alias("family"))
    both = pl.concat([per, anyone.select(per.columns)]).join(n, on=keys)
    return both.select(*keys, "family", (100 * pl.col("k") / pl.col("n")).alias("oracle_share_pct"))


# ---------------------------------------------------------------- self-directed imagination

def self_choices(data: RunData) -> pl.DataFrame:
    """One row per self-directed plan (item x seed), parse failures included: source (self | planner), chosen
    family ('(none)' when unparsed), plan status, decoding."""
    plans = data.thoughts.filter(pl.col("prompt_source").is_in(SELF_SOURCES))
    return plans.select(
        pl.col("thought_benchmark").alias("benchmark"), pl.col("thought_item_id").alias("item_id"),
        pl.col("thought_seed").alias("seed"), "thought_id", pl.col("prompt_source").alias("source"),
        "chosen_family", "plan_status", "plan_decoding").sort(["benchmark", "item_id", "source", "seed"])


def parsed(choices: pl.DataFrame) -> pl.DataFrame:
    """Plans that name a family (stability and oracle agreement are measured on these)."""
    return choices.filter((pl.col("plan_status") != "parse_failed").fill_null(True)
                          & (pl.col("chosen_family") != UNPARSED_CHOICE))


def choice_scores(data: RunData) -> pl.DataFrame:
    """The run's item scores plus, from the reference run, the fixed families it lacks."""
    scores = item_scores(data.predictions)
    if data.reference is None:
        return scores
    return pl.concat([scores, fixed_scores(item_scores(data.reference.predictions))])


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
    scores = choice_scores(data)
    oracle = oracle_items(scores)
    modes = scores.filter(pl.col("condition").is_in(SELF_SOURCES))["mode"].unique().sort().to_list()
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
    pairs = scores.filter(pl.col("condition").is_in(SELF_SOURCES) & (pl.col("degrade_kind") == NO_DEGRADE))
    pairs = pairs.rename({"score": "treated", "condition": "source"}).join(baseline_scores(scores), on=ITEM)
    gains = paired_table(with_all(pairs), ["benchmark", "source", "mode"]).rename(
        {"control_pct": "baseline_pct", "treated_pct": "accuracy_pct"})
    table = table.join(gains, on=["benchmark", "source", "mode"], how="left", nulls_equal=True)
    table = table.with_columns(pl.lit(data.reference.run_id if data.reference else None, pl.String)
                               .alias("reference_run"))
    return _with_run(_order(table, ["benchmark", "source", "mode"]), data.run_id)


def self_vs_families(data: RunData) -> pl.DataFrame:
    """Gain of each self-directed source over baseline, over each fixed family and over the oracle, with CI
    (fixed families from the reference run when this run has none)."""
    scores = choice_scores(data)
    own = scores.filter(pl.col("condition").is_in(SELF_SOURCES) & (pl.col("degrade_kind") == NO_DEGRADE)).select(
        *ITEM, "mode", pl.col("condition").alias("source"), pl.col("score").alias("treated"))
    cols = [*ITEM, "mode", "source", "versus", "treated", "control"]
    vs_fixed = own.join(fixed_scores(scores).select(*ITEM, "mode", pl.col("condition").alias("versus"),
                                                    pl.col("score").alias("control")), on=[*ITEM, "mode"])
    vs_base = own.join(baseline_scores(scores), on=ITEM).with_columns(pl.lit(BASELINE).alias("versus"))
    vs_oracle = own.join(oracle_items(scores).select(*ITEM, "mode", pl.col("oracle_score").alias("control")),
                         on=[*ITEM, "mode"]).with_columns(pl.lit(ORACLE).alias("versus"))
    pairs = with_all(pl.concat([p.select(cols) for p in (vs_base, vs_fixed, vs_oracle)]))
    table = paired_table(pairs, ["benchmark", "source", "mode", "versus"]).rename(
        {"control_pct": "versus_pct", "treated_pct": "self_pct"})
    table = table.sort([pl.col("benchmark") == ALL, "benchmark", "source", "mode", pl.col("versus") != BASELINE,
                        pl.col("versus") == ORACLE, "versus"])
    table = table.with_columns(pl.lit(data.reference.run_id if data.reference else None, pl.String)
                               .alias("reference_run"))
    return _with_run(table, data.run_id)
