"""Judging bit error results that refbnn cannot replay (docs/semantics.md §11.3).

An implementation that draws its flips with its own random generator cannot reproduce
refbnn's keyed masks, so its accuracies under a BER are compared in distribution:
- **accuracies**: Welch's two-sample t-test of their per-repetition accuracies against
  refbnn's own (keyed masks, same BER, batch size and targets). Assumptions: the
  repetitions are independent; each accuracy, a mean over many inputs, is close to
  normal. The expected accuracy does not depend on the granularity of the draws (§6),
  but the spread does, hence Welch's test (unequal variances). Where the targeted bits
  are few, refbnn enumerates every flip pattern and tests against the exact expected
  accuracy (one-sample t-test).
- **an injector audit** of their flip masks (the `refbnn masks` layout): flip counts per
  tensor against Binomial(N, p) per *bit*; the spread of the per-pattern counts
  (index of dispersion, chi-square); flips spread evenly over the bit positions of a
  byte; counts of different tensors and of consecutive batches uncorrelated; nothing
  flips outside the targeted tensors.
Accuracies pass at p >= alpha; the audit's m checks each at p >= alpha / m (Bonferroni),
so that the audit as a whole has level alpha.

The distribution functions are written out here (regularized incomplete beta and gamma
functions, Numerical Recipes' continued fractions) so that refbnn needs no SciPy.
"""
from __future__ import annotations

import itertools
import math
from fractions import Fraction
from math import prod
from typing import Sequence

import numpy as np

from ..biterrors.masks import ErrorModel, targeted
from ..biterrors.sweep import correct_under_errors
from ..engines.protocol import Engine
from ..formats.maskfile import MaskSet
from ..semantics.fliptargets import weight_targets
from ..semantics.model import Model

EXACT_BITS = 12     # enumerate every weight flip pattern up to this many targeted bits


# -- distributions ---------------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    tiny, qab, qap, qam = 1e-300, a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1 + aa * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def t_two_sided(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    return incomplete_beta(df / 2, 0.5, df / (df + t * t))


def gamma_lower(s: float, x: float) -> float:
    """P(s, x), the regularized lower incomplete gamma function."""
    if x <= 0:
        return 0.0
    if x < s + 1:
        term = total = 1 / s
        for n in range(1, 10000):
            term *= x / (s + n)
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return total * math.exp(-x + s * math.log(x) - math.lgamma(s))
    tiny = 1e-300
    b, c, d = x + 1 - s, 1 / tiny, 1 / (x + 1 - s)
    h = d
    for n in range(1, 10000):
        an = -n * (n - s)
        b += 2
        d = an * d + b
        d = 1 / (d if abs(d) > tiny else tiny)
        c = b + an / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        if abs(d * c - 1) < 1e-16:
            break
    return 1 - h * math.exp(-x + s * math.log(x) - math.lgamma(s))


def chi2_two_sided(x: float, df: int) -> float:
    """Two-sided p-value of a chi-square statistic: too small is as suspicious as too large
    (a reused mask has too little spread, a clustered one too much)."""
    lower = gamma_lower(df / 2, x / 2)
    return min(1.0, 2 * min(lower, 1 - lower))


def normal_two_sided(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2))


# -- accuracies ------------------------------------------------------------------------

def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test for equal means."""
    na, nb = len(a), len(b)
    ma, mb = float(np.mean(a)), float(np.mean(b))
    va = float(np.var(a, ddof=1)) if na > 1 else 0.0
    vb = float(np.var(b, ddof=1)) if nb > 1 else 0.0
    se2 = va / na + vb / nb
    if se2 == 0:
        return 1.0 if ma == mb else 0.0
    t = (ma - mb) / math.sqrt(se2)
    # Welch-Satterthwaite, with each share of se2 taken first: the shares lie in [0, 1], so
    # nothing underflows where the variances are tiny (squaring them did, near 1e-140)
    ra, rb = va / na / se2, vb / nb / se2
    df = 1 / (ra ** 2 / max(na - 1, 1) + rb ** 2 / max(nb - 1, 1))
    return t_two_sided(t, df)


def one_sample_p(a: Sequence[float], mean: float) -> float:
    """Two-sided p-value of the one-sample t-test of mean(a) = mean."""
    n = len(a)
    va = float(np.var(a, ddof=1)) if n > 1 else 0.0
    d = float(np.mean(a)) - mean
    if va == 0:
        return 1.0 if d == 0 else 0.0
    return t_two_sided(d / math.sqrt(va / n), n - 1)


def exact_expected_accuracy(engine: Engine, x: np.ndarray, y: np.ndarray, em: ErrorModel) -> Fraction | None:
    """E[accuracy] under weight flips with probability p per bit, by enumerating every flip
    pattern of the targeted bits (None if they are more than EXACT_BITS, or activations
    are targeted). The same for every granularity (docs/semantics.md §6)."""
    model = engine.model
    targets = [ft for ft in targeted(model, em) if ft.kind == "w"]
    sizes = [prod(ft.shape) for ft in targets]
    if em.activations or sum(sizes) > EXACT_BITS:
        return None
    p = Fraction(em.p)
    total = Fraction(0)
    n_bits = sum(sizes)
    for flips in itertools.product((False, True), repeat=n_bits):
        k = sum(flips)
        weight = p ** k * (1 - p) ** (n_bits - k)
        if weight == 0:
            continue
        masks, pos = [None] * len(model.weight_indices), 0
        for ft, size in zip(targets, sizes):
            masks[ft.t] = np.array(flips[pos:pos + size]).reshape(ft.shape)
            pos += size
        correct = int((np.asarray(engine.with_flips(masks).predictions(x)) == y).sum())
        total += weight * Fraction(correct, len(y))
    return total


def judge_accuracies(engine: Engine, x: np.ndarray, y: np.ndarray, em: ErrorModel, theirs: Sequence[float],
                     alpha: float, reference_reps: int = 30) -> dict:
    """Their per-repetition accuracies at one BER against refbnn's distribution."""
    theirs = [float(v) for v in theirs]
    exact_mean = exact_expected_accuracy(engine, x, y, em)
    if exact_mean is not None:
        p_value = one_sample_p(theirs, float(exact_mean))
        test, ref = "one-sample t-test against the exact expected accuracy", {"exact_mean": float(exact_mean)}
    else:
        ours = [correct_under_errors(engine, x, y, em, r) / len(y) for r in range(max(reference_reps, len(theirs)))]
        p_value = welch_p(theirs, ours)
        test = f"Welch t-test against refbnn's {len(ours)} repetitions"
        ref = {"mean": float(np.mean(ours)), "std": float(np.std(ours, ddof=1)) if len(ours) > 1 else 0.0}
    return {"test": test, "p_value": p_value, "pass": bool(p_value >= alpha), "their_mean": float(np.mean(theirs)),
            "their_reps": len(theirs), **ref}


# -- the injector audit --------------------------------------------------------------------

def audit_masks(masks: MaskSet, model: Model, em: ErrorModel, alpha: float) -> list[dict]:
    """Statistical checks of flip masks drawn by another injector (see the module docstring)."""
    checks = []

    def add(name: str, p_value: float, detail: str) -> None:
        checks.append({"check": name, "p_value": p_value, "detail": detail})

    targets = set(em.targets(model))
    tensors = {}
    for t, arr in sorted(masks.weights.items()):
        if weight_targets(model)[t].layer not in targets:
            flips = int(arr.sum())
            add(f"w{t}: untargeted", 1.0 if flips == 0 else 0.0, f"{flips} flips in a tensor that is not targeted")
        else:
            tensors[f"w{t}"] = arr
    for t, arr in sorted(masks.acts.items()):
        if em.activations:
            tensors[f"a{t}"] = arr
        elif arr.any():
            add(f"a{t}: untargeted", 0.0, f"{int(arr.sum())} flips in activations that are not targeted")
    p = em.p
    per_pattern = {}
    for name, arr in tensors.items():
        r, j = arr.shape[:2]
        counts = arr.reshape(r * j, -1).sum(axis=1).astype(np.float64)
        per_pattern[name] = counts.reshape(r, j)
        n_bits = arr[0, 0].size
        total, expected = counts.sum(), counts.size * n_bits * p
        sd = math.sqrt(counts.size * n_bits * p * (1 - p)) if 0 < p < 1 else 0.0
        z = (abs(total - expected) - 0.5) / sd if sd else (0.0 if total == expected else math.inf)
        add(f"{name}: flip count", normal_two_sided(max(z, 0.0)),
            f"{int(total)} flips in {counts.size} patterns of {n_bits} bits; Binomial mean {expected:.1f}")
        if counts.size > 1 and 0 < p < 1:
            # the spread about their own mean (the count check judges the mean): chi-square, K - 1 df
            d = float(((counts - counts.mean()) ** 2).sum() / (n_bits * p * (1 - p)))
            add(f"{name}: spread", chi2_two_sided(d, counts.size - 1),
                f"index of dispersion {d:.1f} on {counts.size - 1} degrees of freedom")
        flat = arr.reshape(counts.size, -1)
        if flat.shape[1] >= 8 and total >= 40:
            by_pos = np.array([flat[:, k::8].sum() for k in range(8)], dtype=np.float64)
            share = np.array([flat[:, k::8].shape[1] for k in range(8)], dtype=np.float64)
            exp = total * share / share.sum()
            chi = float(((by_pos - exp) ** 2 / exp).sum())
            add(f"{name}: bit positions", 1 - gamma_lower(3.5, chi / 2),
                f"flips per bit position within a byte: {by_pos.astype(int).tolist()}")
    names = sorted(per_pattern)
    for a, b in itertools.combinations(names, 2):
        add(f"{a}, {b}: independent", _correlation_p(per_pattern[a].ravel(), per_pattern[b].ravel()),
            "correlation of per-pattern flip counts")
    for name in names:
        c = per_pattern[name]
        if c.shape[1] > 2:
            add(f"{name}: batches independent", _correlation_p(c[:, :-1].ravel(), c[:, 1:].ravel()),
                "correlation of flip counts of consecutive batches")
    # Bonferroni: the audit as a whole has level alpha, so an honest injector fails it with
    # probability at most alpha, however many checks there are.
    for c in checks:
        c["pass"] = bool(c["p_value"] >= alpha / len(checks))
    return checks


def _correlation_p(a: np.ndarray, b: np.ndarray) -> float:
    n = len(a)
    if n < 4 or a.std() == 0 or b.std() == 0:
        return 1.0 if n < 4 else (0.0 if np.array_equal(a, b) and a.std() == 0 and a.any() else 1.0)
    r = float(np.corrcoef(a, b)[0, 1])
    r = max(min(r, 0.999999999), -0.999999999)
    return t_two_sided(r * math.sqrt((n - 2) / (1 - r * r)), n - 2)
