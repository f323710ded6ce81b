"""`refbnn profile`: one model's bit error tolerance, every number in one JSON document.

The document is a claims file: its top level is `refbnn metrics --json` (accuracy, T,
T-bar, layers, Pi, VAR(Pi)) plus `bit_errors` in the layout of `refbnn eval --json`, so
`refbnn verify MODEL DATA --claims profile.json` recomputes and passes it. Everything
else sits under `profile` (informational for verify):

- `certified`: certified accuracy per k (Theorem 1's network corollary, `refbnn certify`)
  and which layer limits how many inputs;
- `margins`: per threshold layer, how many (input, neuron, position) triples tolerate
  k = 0, 1, 2, ... weight flips (Theorem 1: floor(T/2), T of eq. 1 or 2);
- `flip_probability`: per hidden layer and neuron, the exact probability that its output
  flips at each BER (the closed form of refbnn.biterrors.flipprob), where it is defined;
- `importance_share`: per layer, how few neurons carry half of its total importance;
- `protection` (with --protect): the accuracy per repetition and BER with the chosen
  units protected, with a control that protects as many units of the same layers chosen
  at random (averaged over several choices), and the paired test of the two.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Optional, Sequence

import numpy as np

from ..biterrors.flipprob import add_flip_counts, flip_counts, flip_probabilities_of_counts
from ..biterrors.masks import ErrorModel
from ..biterrors.protect import Protection, describe, hidden_units, parse_protect
from ..biterrors.sweep import Summary, accuracy_sweep
from ..engines.fast import FastEngine
from ..formats.claimsfile import bit_errors_claims
from ..formats.values import exact
from ..semantics.accuracy import accuracy
from ..semantics.margin import Tolerance
from ..semantics.model import NoNeuronsError
from ..semantics.theorem1 import tolerated_flips
from .certify import certificate_summary, certified_ks_of_outputs
from .metrics import metrics_document
from .paired import sign_flip_p

ALPHA = 0.05            # the level of the paired test
MAX_MARGIN_BIN = 16     # tolerated flips shown one by one; more count as ">= 16"

Progress = Optional[Callable[[str, int, int], None]]


@dataclass(frozen=True)
class ProfileConfig:
    """What to measure: BERs (named, value), repetitions, the error model (BER replaced per
    point), b values (named, exact), certified k values, Algorithm 1 or not, protection."""

    bers: Sequence[tuple[str, float]]
    reps: int
    em: ErrorModel
    granularity: str
    bs: Sequence[tuple[str, Fraction]]
    ks: Sequence[int]
    importance: bool = True
    protect: Optional[str] = None
    controls: int = 5


def margin_histogram(engine: FastEngine, x: np.ndarray) -> dict[int, list[int]]:
    """Per threshold layer: counts of (input, neuron, position) triples that tolerate
    k = 0 .. MAX_MARGIN_BIN - 1 weight flips, then >= MAX_MARGIN_BIN (Theorem 1:
    floor(m / 4Z) with m = |2(h - s) - 1|, Z only in the first layer)."""
    counts = _margin_counts(engine.model)
    for sl in engine.memory_slices(len(x)):
        _add_margin_counts(counts, engine, engine.outputs(x[sl]))
    return {t: c.tolist() for t, c in counts.items()}


def _margin_counts(model) -> dict[int, np.ndarray]:
    return {nl.threshold_index: np.zeros(MAX_MARGIN_BIN + 1, dtype=np.int64) for nl in model.neuron_layers}


def _add_margin_counts(counts: dict[int, np.ndarray], engine: FastEngine, outs: list[np.ndarray]) -> None:
    model = engine.model
    for nl in model.neuron_layers:
        m = engine.odd_margins(nl.threshold_index, outs[nl.threshold_index - 1])
        k = tolerated_flips(m, model.Z if nl.first else 1)
        counts[nl.threshold_index] += np.bincount(np.minimum(k, MAX_MARGIN_BIN).ravel(), minlength=MAX_MARGIN_BIN + 1)


@dataclass
class CleanPass:
    """Everything the profile reads off the clean (error-free) outputs, gathered in one
    forward pass per memory slice: T's counts, the predictions, the certified k and its
    bottleneck per input, the margin histogram and the flip-probability counts."""

    tolerance: Tolerance
    predictions: np.ndarray
    certified_k: np.ndarray
    bottleneck: list[str]
    margins: dict[int, list[int]]
    flip_counts: dict


def clean_pass(engine: FastEngine, x: np.ndarray, bs: Sequence[Fraction]) -> CleanPass:
    """One forward pass per slice of x, every clean-output quantity of the profile from it
    (the same numbers as engine.tolerance, engine.predictions, certified_ks,
    margin_histogram and neuron_flip_probabilities, each of which makes its own pass)."""
    model = engine.model
    if model.neurons == 0:
        raise NoNeuronsError("T")        # T averages over neurons (as engine.tolerance refuses it)
    bs = list(dict.fromkeys(bs))
    t_counts = [{b: 0 for b in bs} for _ in model.neuron_layers]
    margins, flips = _margin_counts(model), flip_counts(model)
    predictions, ks = np.empty(len(x), dtype=np.int64), np.empty(len(x), dtype=np.int64)
    where: list[str] = []
    for sl in engine.memory_slices(len(x)):
        outs = engine.outputs(x[sl])
        engine.add_tolerance_counts(t_counts, outs, bs)
        predictions[sl] = engine.predicted(outs[-1])
        ks[sl], names = certified_ks_of_outputs(engine, outs)
        where += names
        _add_margin_counts(margins, engine, outs)
        add_flip_counts(flips, engine, x[sl], outs)
    return CleanPass(engine.tolerance_of_counts(t_counts, len(x), bs), predictions, ks, where,
                     {t: c.tolist() for t, c in margins.items()}, flips)


def importance_share(model, pi: Sequence[Fraction]) -> dict[int, dict]:
    """Per threshold layer: the fewest neurons whose Pi (largest first) add up to at least
    half of the layer's total positive importance, and that total."""
    out = {}
    for nl in model.neuron_layers:
        layer = sorted((pi[nl.offset + c] for c in range(nl.channels)), reverse=True)
        total = sum((p for p in layer if p > 0), Fraction(0))
        k, acc = 0, Fraction(0)
        while total > 0 and acc * 2 < total:
            acc += layer[k]
            k += 1
        out[nl.threshold_index] = {"neurons": nl.channels, "carry_half": k, "total": exact(total)}
    return out


def control_protection(model, chosen: Protection, seed: int) -> Protection:
    """As many units of each layer as `chosen` protects, chosen uniformly at random within
    that layer (so the control protects exactly as many weight bits)."""
    rng = np.random.default_rng([seed, 0x434f4e54])
    out = {}
    for i, channels in chosen.channels.items():
        n = model.layers[i].weight.shape[0]
        out[i] = tuple(sorted(rng.permutation(n)[:len(channels)].tolist()))
    return Protection(out)


def _labelled(progress: Progress) -> Callable[[str], Optional[Callable[[int, int], None]]]:
    """label -> a (done, total) callback that reports under that label (None: no progress)."""
    return (lambda label: (lambda d, t: progress(label, d, t))) if progress else (lambda label: None)


def _sweep(engine, x, y, cfg: ProfileConfig, protect: Optional[Protection], progress) -> list[Summary]:
    return accuracy_sweep(engine, x, y, cfg.bers, cfg.reps, cfg.em, progress=progress, protect=protect)


def protection_comparison(engine: FastEngine, x, y, cfg: ProfileConfig, pi, unprotected: list[Summary],
                          progress: Progress = None) -> dict:
    """The protected curve, the random control (same layers, same counts, `cfg.controls`
    choices averaged per repetition) and the paired tests, per BER."""
    model = engine.model
    chosen = parse_protect(cfg.protect, model, pi, cfg.em.seed)
    if chosen.units == 0:
        raise ValueError("--protect: the SPEC protects nothing")
    tick = _labelled(progress)
    protected = _sweep(engine, x, y, cfg, chosen, tick("protected"))
    controls = []
    for c in range(cfg.controls):
        ctl = control_protection(model, chosen, cfg.em.seed + 1 + c)
        controls.append(_sweep(engine, x, y, cfg, ctl, tick(f"control {c + 1}/{cfg.controls}")))
    rows = []
    for b, (name, p) in enumerate(cfg.bers):
        prot = protected[b].accuracies
        ctrl = [sum((run[b].accuracies[r] for run in controls), Fraction(0)) / len(controls) for r in range(cfg.reps)]
        none = unprotected[b].accuracies
        p_vs_random = sign_flip_p([a - c for a, c in zip(prot, ctrl)], cfg.em.seed)
        p_vs_none = sign_flip_p([a - c for a, c in zip(prot, none)], cfg.em.seed)
        rows.append({"ber": name, "protected": [exact(a) for a in prot], "control": [exact(a) for a in ctrl],
                     "unprotected_mean": exact(sum(none, Fraction(0)) / len(none)),
                     "protected_mean": exact(sum(prot, Fraction(0)) / len(prot)),
                     "control_mean": exact(sum(ctrl, Fraction(0)) / len(ctrl)),
                     "p_beats_random": exact(p_vs_random), "p_beats_unprotected": exact(p_vs_none),
                     "beats_random": bool(p_vs_random <= ALPHA), "min_p": exact(Fraction(1, 2 ** min(cfg.reps, 16)))})
    return {"spec": cfg.protect, "described": describe(model, chosen),
            "channels": {str(i): list(c) for i, c in chosen.channels.items()},
            "weight_bits": chosen.weight_bits(model), "controls": cfg.controls, "alpha": ALPHA,
            "test": "exact one-sided sign-flip test of the paired differences (same flips per repetition)",
            "results": rows}


ALGORITHM_1_FORWARDS = 15     # Algorithm 1 costs about this many forward passes (docs/engine.md)


def profile_seconds(engine: FastEngine, x: np.ndarray, cfg: ProfileConfig) -> float:
    """Seconds the profile will take: one forward pass of a slice of the data, timed, times
    the forward passes the sweeps and Algorithm 1 make."""
    sample = x[:min(len(x), 256)]
    engine.predictions(sample[:1])       # a first call loads compiled kernels: not the rate
    start = time.perf_counter()
    engine.predictions(sample)
    per_input = (time.perf_counter() - start) / len(sample)
    sweeps = 1 + (1 + cfg.controls if cfg.protect else 0)
    forwards = sweeps * cfg.reps * sum(1 for _, p in cfg.bers if p > 0) + (ALGORITHM_1_FORWARDS if cfg.importance else 0)
    return forwards * per_input * len(x)


def profile(engine: FastEngine, x: np.ndarray, y: np.ndarray, cfg: ProfileConfig, progress: Progress = None) -> dict:
    """Every number of the profile (module docstring), exact where exact."""
    model = engine.model
    tick = _labelled(progress)
    clean = clean_pass(engine, x, [b for _, b in cfg.bs])
    pi = engine.importance(x, y, progress=tick("Algorithm 1")) if cfg.importance else None
    doc = metrics_document(engine.name, model, len(y), cfg.bs, clean.tolerance,
                           accuracy(clean.predictions, y), pi)
    summaries = _sweep(engine, x, y, cfg, None, tick("bit errors"))
    doc["bit_errors"] = bit_errors_claims(cfg.em.seed, cfg.em.batch_size, cfg.granularity, cfg.em.layers,
                                          cfg.em.activations, int(len(y)), [s.as_dict() for s in summaries])
    cert = certificate_summary(model, clean.certified_k, clean.bottleneck, clean.predictions == y, list(cfg.ks))
    flips = flip_probabilities_of_counts(model, clean.flip_counts, [p for _, p in cfg.bers])
    extra = {
        "certified": {"certified_accuracy": cert["certified_accuracy"], "bottleneck": cert["bottleneck"]},
        "margins": {str(t): {"tolerated_flips": counts, "last_bin_means_at_least": MAX_MARGIN_BIN}
                    for t, counts in clean.margins.items()},
        "flip_probability": {str(t): {"bers": [name for name, _ in cfg.bers], "neurons": per.tolist(),
                                      "mean": per.mean(axis=0).tolist()} for t, per in flips.items()},
    }
    if pi is not None:
        extra["importance_share"] = {str(t): v for t, v in importance_share(model, pi).items()}
        extra["hidden_units"] = [list(u) for u in hidden_units(model)]
    if cfg.protect is not None:
        extra["protection"] = protection_comparison(engine, x, y, cfg, pi, summaries, progress)
    doc["profile"] = extra
    return doc
