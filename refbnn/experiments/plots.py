"""The paper's figures from experiment records (matplotlib, the `plots` extra).

Fig. 1: accuracy over BER with the 95% interval band per model (top), T^b over b
(bottom). Table III as a figure: VAR(Pi) and T-bar over the training BER per size,
min/max whiskers. Fig. 2: Pi per neuron over layer size, a marker per layer, regular
against flip-trained. Beside the paper: ours over the paper's Table III, where the run
is comparable. Each is written as PNG and SVG.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from ..biterrors.sweep import t_quantile_975
from ..reports.figures import available, pyplot, save
from . import paperdiff
from .cells import Config

__all__ = ["available", "FIGURES", "figures"]

MARKERS = ("o", "s", "^", "D", "v")


def _mean(records: list[dict], key: str) -> float:
    return float(np.mean([float(r[key]["value"]) for r in records]))


def fig1(config: Config, records: list[dict], out: Path) -> list[str]:
    plt = pyplot()
    archs = config.archs()
    fig, axes = plt.subplots(2, len(archs), figsize=(4.2 * len(archs), 6.5), squeeze=False)
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(config.train_bers)))
    for col, arch in enumerate(archs):
        top, bottom = axes[0, col], axes[1, col]
        for color, ber in zip(colors, config.train_bers):
            rs = [r for r in records if r["arch"] == arch and r["train_ber"] == ber]
            if not rs:
                continue
            label = "regular" if ber == 0 else f"trained at {100 * ber:g}% BER"
            evals = [float(e["ber"]) for e in rs[0]["bit_errors"]["results"]]
            acc = np.array([[float(e["mean"]["value"]) for e in r["bit_errors"]["results"]] for r in rs])
            m = acc.mean(axis=0)
            # 95% Student-t band over the models' mean accuracies (one value per repetition)
            half = t_quantile_975(len(rs) - 1) * acc.std(axis=0, ddof=1) / np.sqrt(len(rs)) if len(rs) > 1 else 0 * m
            pct = [100 * e for e in evals]
            top.plot(pct, 100 * m, marker="o", ms=3, color=color, label=label)
            top.fill_between(pct, 100 * (m - half), 100 * (m + half), color=color, alpha=0.2)
            bs = list(rs[0]["T"])
            tb = np.array([[float(r["T"][b]["value"]) for b in bs] for r in rs]).mean(axis=0)
            bottom.plot([float(Fraction(b)) for b in bs], tb, marker="o", ms=3, color=color, label=label)
        top.set_title(f"{arch} on {config.dataset}")
        top.set_xlabel("bit error rate at inference (%)")
        top.set_ylabel("test accuracy (%)")
        top.grid(alpha=0.3)
        bottom.set_xscale("log", base=2)
        bottom.set_xlabel("margin b (log scale)")
        bottom.set_ylabel("$T^b$ (share of margins $\\geq b$)")
        bottom.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return save(fig, out, "fig1")


def table3(config: Config, records: list[dict], out: Path) -> list[str]:
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 5))
    for k, arch in enumerate(config.archs()):
        for ax, key in ((a, "var_importance"), (b, "T_bar")):
            found = [(100 * ber, [float(r[key]["value"]) for r in records if r["arch"] == arch and
                                  r["train_ber"] == ber]) for ber in config.train_bers]
            found = [(x_, v) for x_, v in found if v]          # an unfinished run lacks some cells
            if not found:
                continue
            x, vals = [f[0] for f in found], [f[1] for f in found]
            mean = np.array([np.mean(v) for v in vals])
            lo, hi = mean - np.array([min(v) for v in vals]), np.array([max(v) for v in vals]) - mean
            ax.errorbar(np.array(x) + 0.25 * (k - 2), mean, yerr=[lo, hi], marker=MARKERS[k % len(MARKERS)],
                        capsize=3, label=arch)
    a.set_yscale("log")
    a.set_ylabel("VAR($\\Pi$), mean over repetitions (log scale)")
    b.set_ylabel("$\\bar{T}$, mean over repetitions")
    for ax in (a, b):
        ax.set_xlabel("bit error rate during training (%)")
        ax.grid(alpha=0.3)
    # one legend below both panels, where it covers no data
    handles, labels = a.get_legend_handles_labels()
    if labels:
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9,
                   title="first-layer width (whiskers: min and max over the repetitions)", title_fontsize=9)
    a.set_title(f"Table III as a figure: VAR($\\Pi$) ({config.dataset})")
    b.set_title(f"Table III as a figure: $\\bar{{T}}$ ({config.dataset})")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return save(fig, out, "table3")


def fig2(config: Config, records: list[dict], out: Path) -> list[str]:
    """Pi per neuron of the first repetition, over the size of the first layer."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    shown = [(0.0, "tab:red", "regular"), (0.05, "tab:blue", "trained at 5% BER")]
    for k, (ber, color, label) in enumerate(shown):
        for j, (arch, n) in enumerate(zip(config.archs(), config.sizes)):
            rs = [r for r in records if r["arch"] == arch and r["train_ber"] == ber and r["rep"] == 0]
            if not rs:
                continue
            r = rs[0]
            start = 0
            for layer_no, layer in enumerate(r["layers"]):
                pi = [float(p["value"]) for p in r["importance"][start:start + layer["neurons"]]]
                start += layer["neurons"]
                xs = np.log2(n) + (k - 0.5) * 0.3 + np.linspace(-0.08, 0.08, len(pi))
                ax.scatter(xs, pi, s=10, color=color, marker=MARKERS[layer_no % len(MARKERS)],
                           label=f"{label}, layer {layer_no + 1}" if j == 0 else None, alpha=0.7)
    ax.set_xticks([np.log2(n) for n in config.sizes], [str(n) for n in config.sizes])
    ax.set_xlabel("neurons in the first layer")
    ax.set_ylabel("$\\Pi$ (relative accuracy drop when flipped)")
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_title(f"Fig. 2: neuron importance, {config.family} on {config.dataset}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, out, "fig2")


def beside_the_paper(config: Config, records: list[dict], out: Path) -> list[str]:
    """Ours against the paper's Table III, per size: VAR(Pi) and T-bar over the training
    BER, means with min/max whiskers, ours solid and filled, the paper's dashed and open."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(config.sizes)))
    for ax, metric in zip(axes, ("var_importance", "T_bar")):
        for k, (arch, size) in enumerate(zip(config.archs(), config.sizes)):
            rows = paperdiff.plot_rows(config, records, metric, arch, size)
            if rows is None:
                continue
            bers, ours, paper = rows
            for vals, style, dx, who in ((ours, "-", -0.3, "ours"), (paper, "--", 0.3, "paper")):
                m = np.array([v[0] for v in vals])
                err = [m - np.array([v[1] for v in vals]), np.array([v[2] for v in vals]) - m]
                ax.errorbar(np.array(bers) + dx, m, yerr=np.maximum(err, 0), ls=style, marker=MARKERS[k % 5],
                            color=colors[k], mfc=colors[k] if who == "ours" else "white", capsize=3,
                            label=f"{arch} ({who})")
        ax.set_xlabel("bit error rate during training (%)")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("VAR($\\Pi$), mean over repetitions (log scale)")
    axes[1].set_ylabel("$\\bar{T}$, mean over repetitions")
    axes[0].set_title("VAR($\\Pi$): ours (solid) and the paper's Table III (dashed)")
    axes[1].set_title("$\\bar{T}$: ours (solid) and the paper's Table III (dashed)")
    handles, labels = axes[1].get_legend_handles_labels()
    if labels:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8,
                   title=f"{config.family} on {config.dataset}; whiskers: min and max over the repetitions",
                   title_fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return save(fig, out, "table3-paper")


def figures(config: Config, records: list[dict], out: Path) -> list[str]:
    """The experiment's figures, and the overlay with the paper's Table III where comparable."""
    names = FIGURES[config.experiment](config, records, out)
    if paperdiff.comparable(config):
        names += beside_the_paper(config, records, out)
    return names


FIGURES = {"fig1": fig1, "table3": table3, "fig2": fig2}
