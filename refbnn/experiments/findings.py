"""The paper's findings, tested on an experiment's records with three outcomes
(`refbnn.experiments.verdicts`; the rule in docs/experiments.md).

- *Flip training raises T-bar* (Table III, Fig. 1): each training BER > 0 against 0%, per size.
- *Hypothesis 1*: smaller (< 64 neurons) flip-trained BNNs have lower VAR(Pi), 5% against 0%.
- *For 64 neurons and more, VAR(Pi) is not lower with flip training* (5% against 0%).
- *Flip-trained BNNs are more accurate under bit errors* (Fig. 1), at the largest evaluated BER.
"""
from __future__ import annotations

from typing import Callable

from .cells import Config
from .verdicts import ALPHA, ClaimResult, aggregate, compare


def value(record: dict, key: str) -> float:
    return float(record[key]["value"])


def by_cell(records: list[dict], arch: str, ber: float) -> list[dict]:
    """The records of one (architecture, training BER) cell, over the repetitions."""
    return [r for r in records if r["arch"] == arch and r["train_ber"] == ber]


def accuracy_at(record: dict, ber: float) -> float:
    for r in record["bit_errors"]["results"]:
        if float(r["ber"]) == ber:
            return float(r["mean"]["value"])
    raise KeyError(ber)


def _raised_by_flips(config: Config, records: list[dict], claim: str, metric: Callable[[dict], float],
                     what: str, alpha: float) -> ClaimResult:
    res = ClaimResult(claim)
    for arch in config.archs():
        base = [metric(r) for r in by_cell(records, arch, 0.0)]
        for ber in (b for b in config.train_bers if b > 0):
            trained = [metric(r) for r in by_cell(records, arch, ber)]
            if base and trained:
                res.comparisons.append(compare(f"{arch}, trained at {ber:g} vs 0", "higher", base, trained, alpha))
                res.evidence.append(res.comparisons[-1].line(what))
    return aggregate(res)


def paper_claims(config: Config, records: list[dict], alpha: float = ALPHA) -> list[ClaimResult]:
    """Each finding of the paper this experiment speaks to, with its comparisons and outcome."""
    out = []
    flip_bers = [b for b in config.train_bers if b > 0]
    if config.experiment in ("table3", "fig1") and flip_bers and 0.0 in config.train_bers:
        out.append(_raised_by_flips(config, records, "flip training raises T-bar (Table III, Fig. 1)",
                                    lambda r: value(r, "T_bar"), "mean T-bar", alpha))
    if config.experiment in ("table3", "fig2") and 0.05 in config.train_bers and 0.0 in config.train_bers:
        small = ClaimResult("smaller flip-trained BNNs have lower VAR(Pi) (Hypothesis 1: < 64 neurons, 5% BER)")
        large = ClaimResult("for 64 neurons and more, VAR(Pi) is not lower with flip training (5% BER)")
        for arch, n in zip(config.archs(), config.sizes):
            base = [value(r, "var_importance") for r in by_cell(records, arch, 0.0)]
            trained = [value(r, "var_importance") for r in by_cell(records, arch, 0.05)]
            if not (base and trained):
                continue
            target = small if n < 64 else large
            target.comparisons.append(compare(arch, "lower" if n < 64 else "not lower", base, trained, alpha))
            target.evidence.append(target.comparisons[-1].line("mean VAR(Pi) (5%) vs (0%)"))
        out += [aggregate(c) for c in (small, large) if c.comparisons]
    if config.experiment == "fig1" and flip_bers and 0.0 in config.train_bers:
        top = max(config.eval_bers)
        out.append(_raised_by_flips(config, records, "flip-trained BNNs are more accurate under bit errors (Fig. 1)",
                                    lambda r: accuracy_at(r, top), f"mean accuracy at BER {top:g}", alpha))
    return out
