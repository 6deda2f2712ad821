"""Figures for the Python-backed reports (matplotlib, Agg backend: no display needed).

Each `*_figures(data, frame, out_dir)` writes the report's PNG(s) and returns their paths (none when there is
nothing to draw)."""
from __future__ import annotations

from pathlib import Path

import polars as pl

from g2u_tasks.analysis import statistics as A

DPI = 100


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)
    return path


def _errors(frame: pl.DataFrame) -> list[list[float]]:
    gain, low, high = (frame[c].fill_null(float("nan")).to_list() for c in ("gain_pp", "ci_low_pp", "ci_high_pp"))
    return [[g - lo for g, lo in zip(gain, low)], [hi - g for g, hi in zip(gain, high)]]


def gain_bars(frame: pl.DataFrame, path: Path, label: str = "condition", title: str = "Gain over baseline") -> Path | None:
    """Grouped bars: benchmarks on x, one bar per `label` value, one panel per mode; 95% CI error bars."""
    frame = frame.filter(pl.col("gain_pp").is_not_null())  # a cell with no paired item has no bar
    if frame.is_empty():
        return None
    plt = _pyplot()
    modes = frame["mode"].unique(maintain_order=True).to_list()
    benches = frame["benchmark"].unique(maintain_order=True).to_list()
    labels = sorted(frame[label].unique().to_list())
    fig, axes = plt.subplots(1, len(modes), figsize=(max(5, 1.2 * len(benches) * len(labels) ** 0.5) * len(modes), 4),
                             squeeze=False, sharey=True)
    width = 0.8 / len(labels)
    for ax, mode in zip(axes[0], modes):
        for k, name in enumerate(labels):
            part = frame.filter((pl.col("mode") == mode) & (pl.col(label) == name))
            x = [benches.index(b) + (k - (len(labels) - 1) / 2) * width for b in part["benchmark"]]
            ax.bar(x, part["gain_pp"].to_list(), width, yerr=_errors(part), capsize=2, label=name)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(benches)), benches, rotation=30, ha="right")
        ax.set_title(f"{title} ({mode})")
        ax.set_ylabel("gain (pp, 95% CI)")
    axes[0][-1].legend(fontsize="small")
    return _save(fig, path)


def _line_panels(modes: list[str], draw, xlabel: str, title: str):
    """One panel per mode sharing the gain axis; `draw(ax, mode)` draws a panel's lines."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4), squeeze=False, sharey=True)
    for ax, mode in zip(axes[0], modes):
        draw(ax, mode)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("gain (pp, 95% CI)")
        ax.set_title(f"{title} ({mode})")
    axes[0][-1].legend(fontsize="small")
    return fig


def fidelity_curve(frame: pl.DataFrame, path: Path) -> Path | None:
    """Gain vs PSNR bin, one line per family (all families pooled in bold), identity control dashed; a panel per mode."""
    binned = frame.filter(pl.col("psnr_bin").is_not_null())
    if binned.is_empty():
        return None

    def draw(ax, mode: str) -> None:
        part = binned.filter(pl.col("mode") == mode)
        for family in part["family"].unique(maintain_order=True):
            line = part.filter(pl.col("family") == family).sort("psnr_bin")
            ax.errorbar(line["psnr_bin"].to_list(), line["gain_pp"].to_list(), yerr=_errors(line), marker="o",
                        capsize=3, label=family, linewidth=2.5 if family == A.ALL else 1.2)
        ident = frame.filter((pl.col("mode") == mode) & (pl.col("family") == A.IDENTITY))
        if not ident.is_empty():
            ax.axhline(ident["gain_pp"][0], color="grey", linestyle="--", label="identity control")
        pooled = part.filter(pl.col("family") == A.ALL).sort("psnr_bin")
        ax.set_xticks(pooled["psnr_bin"].to_list(), [f"{b}\n{v:.1f} dB" for b, v in
                                                     zip(pooled["psnr_bin"], pooled["mean_psnr"])])

    modes = binned["mode"].unique(maintain_order=True).to_list()
    return _save(_line_panels(modes, draw, "PSNR bin (mean PSNR)", "Fidelity vs gain"), path)


def degrade_curve(curve: pl.DataFrame, path: Path) -> Path | None:
    """Gain vs degrade strength, one line per benchmark x family x kind; a panel per mode."""
    if curve.is_empty():
        return None

    def draw(ax, mode: str) -> None:
        part = curve.filter(pl.col("mode") == mode)
        for key, line in part.group_by(["benchmark", "condition", "degrade_kind"], maintain_order=True):
            line = line.sort("degrade_strength")
            ax.errorbar(line["degrade_strength"].to_list(), line["gain_pp"].to_list(), yerr=_errors(line),
                        marker="o", capsize=3, label=" / ".join(key))

    modes = curve["mode"].unique(maintain_order=True).to_list()
    return _save(_line_panels(modes, draw, "degrade strength", "Degraded thoughts"), path)


def choice_distribution(choices: pl.DataFrame, path: Path) -> Path | None:
    """Stacked horizontal bars: the share of each chosen family per benchmark x source."""
    if choices.is_empty():
        return None
    plt = _pyplot()
    rows = choices.select("benchmark", "source").unique(maintain_order=True).rows()
    families = sorted(choices["chosen_family"].unique().to_list())
    fig, ax = plt.subplots(figsize=(8.5, 0.6 * len(rows) + 1.5))
    left = [0.0] * len(rows)
    for family in families:
        shares = []
        for bench, source in rows:
            hit = choices.filter((pl.col("benchmark") == bench) & (pl.col("source") == source)
                                 & (pl.col("chosen_family") == family))
            shares.append(hit["share_pct"][0] if hit.height else 0.0)
        ax.barh(range(len(rows)), shares, left=left, label=family)
        left = [a + b for a, b in zip(left, shares)]
    ax.set_yticks(range(len(rows)), [f"{b} · {s}" for b, s in rows])
    ax.set_xlabel("share of plans (%)")
    ax.set_title("Which family does the model choose?")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(fig, path)


# ---------------------------------------------------------------- per report

def _kept(paths) -> list[Path]:
    return [p for p in paths if p is not None]


def gain_ci_figures(data: A.RunData, frame: pl.DataFrame, out_dir: Path) -> list[Path]:
    clean = frame.filter(pl.col("degrade_kind") == A.NO_DEGRADE)
    return _kept([gain_bars(clean, out_dir / "gain_ci.png"),
                  degrade_curve(A.degrade_curve(data), out_dir / "degrade_curve.png")])


def fidelity_figures(data: A.RunData, frame: pl.DataFrame, out_dir: Path) -> list[Path]:
    return _kept([fidelity_curve(frame, out_dir / "fidelity_gain.png"),
                  degrade_curve(A.degrade_curve(data), out_dir / "degrade_curve.png")])


def family_figures(data: A.RunData, frame: pl.DataFrame, out_dir: Path) -> list[Path]:
    return _kept([gain_bars(frame, out_dir / "family_oracle.png", label="family",
                            title="Edit families and the oracle")])


def self_direction_figures(data: A.RunData, frame: pl.DataFrame, out_dir: Path) -> list[Path]:
    return _kept([choice_distribution(A.choice_distribution(data), out_dir / "self_direction_choices.png")])


def self_vs_families_figures(data: A.RunData, frame: pl.DataFrame, out_dir: Path) -> list[Path]:
    bars = frame.with_columns(pl.concat_str(["source", "versus"], separator=" vs ").alias("comparison"))
    return _kept([gain_bars(bars, out_dir / "self_vs_families.png", label="comparison",
                            title="Self-directed vs fixed choices")])
