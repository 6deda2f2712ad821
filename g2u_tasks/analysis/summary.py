"""A one-page summary of a run: each finding in one sentence with its numbers, worded honestly
(intervals that cross zero and small samples are called so; random-weight understanders are flagged)."""
from __future__ import annotations

from pathlib import Path

import polars as pl

from g2u_tasks.analysis import statistics as A
from g2u_tasks.analysis import plots

FINDINGS_SCHEMA = {"topic": pl.String, "finding": pl.String}


# ---------------------------------------------------------------- number wording

def pp(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1f} pp"


def ci(low: float | None, high: float | None) -> str:
    return "[95% CI n/a]" if low is None or high is None else f"[95% CI {low:+.1f}, {high:+.1f}]"


def p_text(p: float | None) -> str:
    if p is None:
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.2f}" if p >= 0.01 else f"p = {p:.3f}"


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f}%"


def caveats(row: dict) -> str:
    out = ""
    low, high = row.get("ci_low_pp"), row.get("ci_high_pp")
    if low == high == 0:
        out += " No item changed."
    elif low is not None and high is not None and low <= 0 <= high:
        out += " The interval includes zero, so this is not a reliable change."
    if row["n_items"] < A.SMALL_N:
        out += f" Only {row['n_items']} items: a pilot number."
    return out


def coverage_text(row: dict) -> str:
    """How many items the numbers rest on, and which were left out and why."""
    n_missing = row.get("n_missing") or 0
    if row.get("n_paired") is None:
        return ""
    text = f" Paired over {row['n_paired']} items"
    if n_missing:
        why = [f"{row[f'missing_{r}']} {r.replace('_', ' ')}" for r in A.REASONS if row.get(f"missing_{r}")]
        text += f"; {n_missing} missing ({', '.join(why) or 'no recorded reason'})"
    if row.get("n_partial"):
        text += f"; {row['n_partial']} paired on only some seeds"
    return text + "."


def where(bench: str) -> str:
    return "across all benchmarks" if bench == A.ALL else f"on {bench}"


def gain_sentence(row: dict, what: str, lead: str | None = None) -> str:
    place = lead or (f"Across all {row['n_items']} items (benchmarks pooled)" if row["benchmark"] == A.ALL
                     else f"On {row['benchmark']}")
    text = (f"{place}, {what} changes accuracy by {pp(row['gain_pp'])} {ci(row['ci_low_pp'], row['ci_high_pp'])} "
            f"(from {row['baseline_pct']:.1f}% to {row['accuracy_pct']:.1f}%), McNemar {p_text(row['p_mcnemar'])}, "
            f"fixing {row['fixed']} and breaking {row['broken']} items.") + coverage_text(row)
    if row.get("official_metric"):
        if row["official_value"] == "not computed":
            text += f" Its official {row['official_metric']} was not computed."
        elif row.get("official_gain") is not None:
            text += f" Official {row['official_metric']}: {row['official_value']} ({row['official_gain']:+.4g})."
    return text + caveats(row)


# ---------------------------------------------------------------- findings

def run_findings(data: A.RunData) -> list[tuple[str, str]]:
    run = data.run
    if not run:
        return [("run", "No run in the warehouse yet: nothing to summarise.")]
    text = (f"Run {data.run_id}: understander {run.get('understander')}, generator {run.get('generator')}, "
            f"dataset v{run.get('dataset_version')}, {run.get('n_items')} items.")
    out = [("run", text)]
    if data.random_weights:
        out.append(("caution", f"A model of this run has random weights ({run.get('notes')}): these numbers test the "
                               "machinery, not the method."))
    elif run.get("notes"):
        out.append(("note", str(run["notes"])))
    return out


def unpaired_sentence(row: dict) -> str:
    return (f"{upper_first(where(row['benchmark']))}, {row['condition']}/{row['mode']} has no item paired with the "
            f"baseline, so its gain cannot be measured." + coverage_text({**row, "n_paired": 0}))


def gain_findings(gains: pl.DataFrame) -> list[tuple[str, str]]:
    out = []
    clean = gains.filter(pl.col("degrade_kind") == A.NO_DEGRADE)
    for row in clean.filter(pl.col("n_items") == 0).iter_rows(named=True):
        out.append(("gain", unpaired_sentence(row)))
    clean = clean.filter(pl.col("n_items") > 0)
    for bench in clean["benchmark"].unique(maintain_order=True):
        part = clean.filter(pl.col("benchmark") == bench)
        edits = part.filter(~pl.col("condition").is_in(A.CONTROLS)).sort(
            ["gain_pp", "condition", "mode"], descending=[True, False, False], nulls_last=True)
        if edits.height:
            best = edits.row(0, named=True)
            what = f"{best['condition']}/{best['mode']}"
            out.append(("gain", gain_sentence(best, f"{what} (the largest gain)") if best["gain_pp"] > 0 else
                        gain_sentence(best, what, f"No edit condition raises accuracy {where(bench)}; at best")))
            worst = edits.drop_nulls("gain_pp").sort(["gain_pp", "condition", "mode"]).row(0, named=True)
            if worst["gain_pp"] < 0:
                out.append(("harm", gain_sentence(worst, f"{worst['condition']}/{worst['mode']} (the largest loss)")))
        for control in A.CONTROLS:
            rows = part.filter(pl.col("condition") == control)
            if rows.height:
                out.append((f"{control} control", control_sentence(bench, control, rows)))
    return out


CONTROL_VERDICTS = {  # (what moves accuracy when an interval excludes zero, what holds when none does)
    A.IDENTITY: ("feeding the original back changes accuracy by itself", "more image tokens, not new information",
                 "more image tokens alone do not change accuracy here"),
    A.RECONSTRUCTION: ("asking the generator to reproduce the image changes accuracy by itself",
                       "the generator's artifacts, not the edit",
                       "the generator's artifacts alone do not change accuracy here"),
}


def control_sentence(bench: str, control: str, rows: pl.DataFrame) -> str:
    """A control (identity: more image tokens; reconstruction: generator artifacts), all modes in one sentence."""
    moves, cause, holds = CONTROL_VERDICTS[control]
    parts = [f"{r['mode']} {pp(r['gain_pp'])} {ci(r['ci_low_pp'], r['ci_high_pp'])} ({p_text(r['p_mcnemar'])})"
             for r in rows.iter_rows(named=True)]
    moved = [r["mode"] for r in rows.iter_rows(named=True)
             if r["ci_low_pp"] is not None and (r["ci_low_pp"] > 0 or r["ci_high_pp"] < 0)]
    verdict = (f"{moves} in {', '.join(moved)} mode, so part of any gain there is {cause}" if moved else
               f"no interval excludes zero: {holds}")
    n = rows["n_items"].min()
    return f"The {control} control {where(bench)}: {'; '.join(parts)}; {verdict}." + (
        f" Only {n} items: a pilot number." if n < A.SMALL_N else "") + coverage_text(
        rows.sort("n_missing", descending=True).row(0, named=True))


def strength(rho: float) -> str:
    r = abs(rho)
    return "very weak" if r < 0.1 else "weak" if r < 0.3 else "moderate" if r < 0.5 else "strong"


def fidelity_findings(fid: pl.DataFrame) -> list[tuple[str, str]]:
    out = []
    for row in fid.filter((pl.col("family") == A.ALL) & (pl.col("psnr_bin") == 1)).iter_rows(named=True):
        rho, p = row["rho_psnr"], row["p_rho_psnr"]
        bins = fid.filter((pl.col("family") == A.ALL) & (pl.col("mode") == row["mode"])).sort("psnr_bin")
        n = int(bins["n_thoughts"].sum())
        if rho is None:
            out.append(("fidelity", f"Fidelity vs gain ({row['mode']}): no rank correlation can be computed "
                                    f"(PSNR or gain constant over {n} thoughts)."))
            continue
        lead = ("Fidelity bounds gain" if rho > 0 and p < 0.05 else
                "Higher fidelity goes with less gain" if p < 0.05 else "No clear fidelity–gain relation")
        span = (f"; gain goes from {pp(bins['gain_pp'][0])} in the lowest PSNR bin to {pp(bins['gain_pp'][-1])} "
                f"in the highest") if bins.height > 1 else ""
        out.append(("fidelity", f"{lead} ({row['mode']}): Spearman ρ = {rho:.2f} ({p_text(p)}) between PSNR and "
                                f"per-item gain over {n} thoughts, a {strength(rho)} relation{span}."))
    return out


def family_findings(fam: pl.DataFrame) -> list[tuple[str, str]]:
    out = []
    edits = fam.filter(~pl.col("family").is_in([*A.CONTROLS, A.ORACLE]) & pl.col("gain_pp").is_not_null())
    for bench in fam["benchmark"].unique(maintain_order=True):
        part = edits.filter(pl.col("benchmark") == bench).sort(
            ["gain_pp", "family", "mode"], descending=[True, False, False], nulls_last=True)
        if part.is_empty():
            continue
        best = part.row(0, named=True)
        if best["gain_pp"] <= 0:
            out.append(("best family", f"No edit family raises accuracy {where(bench)}; the least harmful is "
                                       f"{best['family']}/{best['mode']} at {pp(best['gain_pp'])} "
                                       f"{ci(best['ci_low_pp'], best['ci_high_pp'])}." + caveats(best)))
            continue
        cost = (f"; it costs {best['mean_gen_seconds']:.2f} s of generation per thought (its share of its generator "
                f"call), "
                f"{best['seconds_per_pp']:.2f} s per point of gain" if best.get("seconds_per_pp") is not None else "")
        out.append(("best family", f"Best edit family {where(bench)}: {best['family']}/{best['mode']} at "
                                   f"{pp(best['gain_pp'])} {ci(best['ci_low_pp'], best['ci_high_pp'])}{cost}."
                                   + caveats(best) + coverage_text(best)))
        oracle = fam.filter((pl.col("benchmark") == bench) & (pl.col("family") == A.ORACLE)
                            & pl.col("accuracy_pct").is_not_null()).sort(
            ["accuracy_pct", "mode"], descending=[True, False])
        if oracle.height:
            o = oracle.row(0, named=True)
            fixed = part.filter(pl.col("mode") == o["mode"]).sort(["accuracy_pct", "family"], descending=[True, False])
            versus = (f", and {fixed['accuracy_pct'][0]:.1f}% for the best fixed family ({fixed['family'][0]})"
                      if fixed.height else "")
            out.append(("oracle", f"Choosing the best family per item (oracle, {o['mode']}) would reach "
                                  f"{o['accuracy_pct']:.1f}% {where(bench)} vs {o['baseline_pct']:.1f}% at baseline "
                                  f"({pp(o['gain_pp'])}){versus}: an upper bound on choosing well."
                                  + coverage_text(o)))
    return out


def choice_sentence(bench: str, source: str, part: pl.DataFrame) -> str:
    """What the model chose, how often it failed to plan, how stable and how close to the oracle its choice is."""
    r = part.row(0, named=True)
    lead = upper_first(where(bench))
    if r["parse_failed_pct"] == 100:
        return (f"{lead}, none of the model's {r['n_choices']} plans ({source}) parsed, so its choice, its agreement "
                "with the oracle family and its stability across seeds cannot be measured.")
    known = [(m, a) for m, a in zip(part["mode"], part["oracle_agreement_pct"]) if a is not None]
    agree = (f"agrees with the oracle family on {' / '.join(f'{pct(a)} ({m})' for m, a in known)} of items" if known
             else "cannot be compared with the oracle (no run by this understander has fixed families on these "
                  "items in the same modes)")
    kappa = f", Fleiss κ = {r['fleiss_kappa']:.2f}" if r["fleiss_kappa"] is not None else ""
    stable = (f"is stable across seeds on {pct(r['seed_stable_pct'])} of {r['n_items_multi_seed']} items "
              f"(pairwise agreement {pct(r['pairwise_agreement_pct'])}{kappa})" if r["n_items_multi_seed"]
              else "has no item with two parsed seeds, so its stability is unknown")
    if r["decoding"] == "greedy" and r["n_items_multi_seed"]:
        stable += ", as greedy decoding makes it by construction"
    ref = f" Fixed families and the oracle come from run {r['reference_run']}." if r.get("reference_run") else ""
    return (f"{lead}, the model's own choice ({source}) {agree} and {stable}; its most frequent choice is "
            f"{r['top_choice']} ({pct(r['top_choice_pct'])} of {r['n_choices']} plans) and "
            f"{r['parse_failed_pct']:.1f}% of plans failed to parse.{ref}")


def upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def self_findings(sd: pl.DataFrame, svf: pl.DataFrame) -> list[tuple[str, str]]:
    out = []
    pooled = sd.filter(pl.col("benchmark") == A.ALL)
    sd = pooled if pooled.height else sd
    for (bench, source), part in sd.group_by(["benchmark", "source"], maintain_order=True):
        out.append(("self-direction", choice_sentence(bench, source, part)))
        vs = svf.filter((pl.col("benchmark") == bench) & (pl.col("source") == source))
        for row in vs.filter(pl.col("versus") == "baseline").iter_rows(named=True):
            fixed = vs.filter((pl.col("mode") == row["mode"]) & ~pl.col("versus").is_in(["baseline", A.ORACLE]))
            text = gain_sentence({**row, "baseline_pct": row["versus_pct"], "accuracy_pct": row["self_pct"]},
                                 f"{source}/{row['mode']}")
            if fixed.height:
                best = fixed.sort("versus_pct", descending=True).row(0, named=True)
                text += (f" Against the best fixed family ({best['versus']}) it is {pp(best['gain_pp'])} "
                         f"{ci(best['ci_low_pp'], best['ci_high_pp'])}.")
            out.append(("self-direction", text))
    return out


def degrade_findings(curve: pl.DataFrame) -> list[tuple[str, str]]:
    out = []
    for key, line in curve.group_by(["benchmark", "condition", "mode", "degrade_kind"], maintain_order=True):
        line = line.sort("degrade_strength")
        first, last = line.row(0, named=True), line.row(-1, named=True)
        out.append(("degrade", f"Degrading {key[1]} thoughts on {key[0]} ({key[3]}, {key[2]}) moves the gain from "
                               f"{pp(first['gain_pp'])} at strength {first['degrade_strength']:g} to "
                               f"{pp(last['gain_pp'])} {ci(last['ci_low_pp'], last['ci_high_pp'])} at strength "
                               f"{last['degrade_strength']:g}."))
    return out


# The rows whose intervals the sentences cite, as predicates over paired_table rows: only those are bootstrapped.
NEAR_BEST_PP = 0.01  # a gain this close to the best may be the best once rounded to 2 decimals (tidy)


def _near_best(among: pl.Expr) -> pl.Expr:
    best = pl.when(among).then(pl.col("gain_pp")).max().over("benchmark")
    return among & (pl.col("gain_pp") >= best - NEAR_BEST_PP)


def _near_worst(among: pl.Expr) -> pl.Expr:
    worst = pl.when(among).then(pl.col("gain_pp")).min().over("benchmark")
    return among & (pl.col("gain_pp") <= worst + NEAR_BEST_PP)


_CLEAN, _CONTROL = pl.col("degrade_kind") == A.NO_DEGRADE, pl.col("condition").is_in(A.CONTROLS)
_STRONGEST = pl.col("degrade_strength") == pl.col("degrade_strength").max().over(
    ["benchmark", "condition", "mode", "degrade_kind"])
# gain_findings: every control row, the best and the worst edit; degrade_findings: the strongest degradation
CITED_GAINS = ((_CLEAN & _CONTROL) | _near_best(_CLEAN & ~_CONTROL) | _near_worst(_CLEAN & ~_CONTROL)
               | (~_CLEAN & _STRONGEST))
CITED_FAMILIES = _near_best(~pl.col("condition").is_in([*A.CONTROLS, A.ORACLE]))  # family_findings: the best family
NO_INTERVALS = pl.lit(False)  # fidelity_findings cite none


def findings(data: A.RunData) -> pl.DataFrame:
    """Every finding as (topic, sentence)."""
    rows = run_findings(data)
    if data.run or data.conditions:
        gains = A.gain_table(data, CITED_GAINS)
        rows += gain_findings(A.tidy(gains))
        rows += family_findings(A.family_oracle(data, CITED_FAMILIES))
        rows += fidelity_findings(A.fidelity_gain(data, NO_INTERVALS))
        rows += degrade_findings(A.tidy(A.degrade_curve(data, gains)))
        rows += self_findings(A.self_direction(data), A.self_vs_families(data))
    return pl.DataFrame(rows, schema=FINDINGS_SCHEMA, orient="row")


def page(data: A.RunData, frame: pl.DataFrame, figures: list[Path]) -> str:
    """The one-page Markdown summary."""
    lines = [f"# G2U summary — run {data.run_id}", ""]
    for topic, finding in frame.iter_rows():
        lines.append(f"> **Caution:** {finding}" if topic == "caution" else f"- **{topic}** — {finding}")
        if topic == "caution":
            lines.append("")
    if figures:
        lines += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures]
    lines += ["", "Gains are paired: over the items with both a scored baseline and a scored answer on the same seed "
              "(paired seeds averaged per item; missing items are counted with their reason); intervals are 95% "
              "percentile intervals of "
              f"a paired bootstrap ({A.N_RESAMPLES} resamples, fixed seed); McNemar is exact below {A.EXACT_BELOW} "
              "discordant items. See docs/REPORTS.md.", ""]
    return "\n".join(lines)


def summary_figures(data: A.RunData, frame: pl.DataFrame, out_dir: Path) -> list[Path]:
    out: list[Path] = []
    for make, table in ((plots.gain_ci_figures, A.gain_ci), (plots.fidelity_figures, A.fidelity_gain),
                        (plots.family_figures, A.family_oracle), (plots.self_direction_figures, None)):
        for path in make(data, table(data) if table else pl.DataFrame(), out_dir):
            if path not in out:
                out.append(path)
    return out
