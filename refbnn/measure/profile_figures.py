"""The figures of `refbnn profile` (matplotlib, the `plots` extra), from its JSON document:
accuracy over BER with its 95% band (and the protection curves), T^b over b per layer,
Pi per neuron by layer with the most important neurons labelled, the distribution of
margins in tolerated flips per layer (Theorem 1), and certified accuracy over k.
Each is written as PNG and SVG."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from ..biterrors.sweep import t_quantile_975
from ..reports.figures import pyplot, save

LABELLED = 3        # the most important neurons named per layer


def _v(q) -> float:
    return float(q["value"]) if isinstance(q, dict) else float(q)


def _share_axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    """Labels, a share axis from 0 to 1, title, legend and grid."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _ber_axis(ax, bers: list[float]) -> None:
    ax.set_xscale("symlog", linthresh=min([b for b in bers if b > 0] or [1e-3]))
    ax.set_xlabel("bit error rate p")


def accuracy_figure(doc: dict, out: Path) -> list[str]:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    results = doc["bit_errors"]["results"]
    bers = [float(r["ber"]) for r in results]
    mean = np.array([_v(r["mean"]) for r in results])
    lo = np.array([r["ci95"][0] if r["ci95"] else _v(r["mean"]) for r in results])
    hi = np.array([r["ci95"][1] if r["ci95"] else _v(r["mean"]) for r in results])
    ax.plot(bers, mean, "o-", color="C0", label="unprotected")
    ax.fill_between(bers, lo, hi, color="C0", alpha=0.2, label="95% interval")
    prot = doc["profile"].get("protection")
    if prot:
        for key, color, label in (("protected", "C2", f"protected: {prot['spec']}"),
                                  ("control", "C3", f"as many random units of the same layers "
                                                    f"(mean of {prot['controls']})")):
            rows = [[_v(a) for a in r[key]] for r in prot["results"]]
            m = np.array([np.mean(r) for r in rows])
            half = np.array([t_quantile_975(len(r) - 1) * np.std(r, ddof=1) / np.sqrt(len(r)) if len(r) > 1 else 0
                             for r in rows])
            ax.plot(bers, m, "s--" if key == "control" else "D-", color=color, label=label)
            ax.fill_between(bers, m - half, np.minimum(1, m + half), color=color, alpha=0.12)
    _ber_axis(ax, bers)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.axhline(_v(doc["accuracy"]), color="gray", lw=0.8, ls=":", label="clean accuracy")
    ax.set_title(f"Accuracy under bit errors ({results[0]['reps']} repetitions per BER)")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    return save(fig, out, "accuracy")


def tolerance_figure(doc: dict, out: Path) -> list[str]:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    names = list(doc["T"])
    bs = [float(Fraction(b)) for b in names]
    order = np.argsort(bs)
    for k, layer in enumerate(doc["layers"]):
        vals = [_v(layer["T"][names[i]]) for i in order]
        ax.plot(np.array(bs)[order], vals, "o-", color=f"C{k}",
                label=f"layer {layer['layer']} ({layer['type']}, {layer['neurons']} neurons"
                      f"{', eq. 2' if layer['first'] else ''})")
    ax.plot(np.array(bs)[order], [_v(doc["T"][names[i]]) for i in order], "k--", label="whole network (eq. 5)")
    if min(bs) > 0:
        ax.set_xscale("log", base=2)
    _share_axes(ax, "margin b", "T^b: share of margins >= b", "Neuron-level tolerance T^b (eqs. 1-5) per layer")
    return save(fig, out, "tolerance")


def importance_figure(doc: dict, out: Path) -> list[str]:
    """One panel per layer (layers differ in size by orders of magnitude), a shared y axis."""
    plt = pyplot()
    pi = np.array([_v(p) for p in doc["importance"]])
    layers = doc["layers"]
    fig, axes = plt.subplots(1, len(layers), figsize=(max(6.4, 3.4 * len(layers)), 4.2), sharey=True,
                             squeeze=False)
    offset = 0
    for k, (ax, layer) in enumerate(zip(axes[0], layers)):
        n = layer["neurons"]
        vals = pi[offset:offset + n]
        xs = np.arange(offset, offset + n)
        ax.bar(xs, vals, width=1.0, color=f"C{k}")
        for j in np.argsort(-vals, kind="stable")[:LABELLED]:
            if vals[j] > 0:
                ax.annotate(f"{offset + j}", (xs[j], vals[j]), textcoords="offset points", xytext=(0, 3),
                            ha="center", fontsize=7)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(f"layer {layer['layer']} ({n} neurons)", fontsize=9)
        ax.set_xlabel("neuron")
        ax.grid(alpha=0.3, axis="y")
        offset += n
    axes[0, 0].set_ylabel("Pi[n] = (A - A*_n) / A")
    fig.suptitle(f"Neuron importance (Algorithm 1); VAR(Pi) = {_v(doc['var_importance']):.3g}; "
                 f"the {LABELLED} largest per layer numbered")
    return save(fig, out, "importance")


def margins_figure(doc: dict, out: Path) -> list[str]:
    plt = pyplot()
    margins = doc["profile"]["margins"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    width = 0.8 / max(1, len(margins))
    top = len(next(iter(margins.values()))["tolerated_flips"]) - 1          # the ">= top" bin
    shown = max(int(np.flatnonzero(np.array(e["tolerated_flips"]))[-1]) for e in margins.values()) + 1
    for k, (layer, entry) in enumerate(margins.items()):
        counts = np.array(entry["tolerated_flips"], dtype=float)
        share = (counts / counts.sum())[:shown]
        ax.bar(np.arange(shown) + k * width, share, width=width, color=f"C{k}", label=f"layer {layer}")
    ax.set_xticks(np.arange(shown) + (len(margins) - 1) * width / 2)
    ax.set_xticklabels([f">={i}" if i == top else str(i) for i in range(shown)], fontsize=8)
    ax.set_xlabel("weight flips tolerated at a position (Theorem 1: floor(T/2))")
    ax.set_ylabel("share of (input, neuron, position)")
    ax.set_title("Margins in units of tolerated flips")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return save(fig, out, "margins")


def certified_figure(doc: dict, out: Path) -> list[str]:
    plt = pyplot()
    cert = doc["profile"]["certified"]["certified_accuracy"]
    ks = [int(k) for k in cert]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(ks, [_v(cert[str(k)]) for k in ks], "o-", color="C4", label="correct and certified")
    ax.axhline(_v(doc["accuracy"]), color="gray", lw=0.8, ls=":", label="clean accuracy")
    _share_axes(ax, "k: any k weight flips per neuron", "share of inputs", "Certified accuracy (Theorem 1, network level)")
    return save(fig, out, "certified")


def profile_figures(doc: dict, out: Path) -> list[str]:
    """Every figure the document has data for; returns the files written."""
    names = accuracy_figure(doc, out) + tolerance_figure(doc, out)
    if "importance" in doc:
        names += importance_figure(doc, out)
    return names + margins_figure(doc, out) + certified_figure(doc, out)
