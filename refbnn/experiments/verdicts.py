"""Verdicts with three outcomes on the paper's claims (docs/experiments.md, "Verdicts").

A claim compares the flip-trained models of a cell with the regular ones (training BER 0)
over the repetitions, in its own direction: T-bar is *higher*, VAR(Pi) is *lower*, or
VAR(Pi) is *not lower*. Each comparison gives

- the exact one-sided permutation p of the Mann-Whitney U statistic in the claim's
  direction and in the opposite one (`permutation_p`), and the smallest p the design can
  attain at all, 1 / C(m + n, n);
- the effect: the Hodges-Lehmann shift (the median of all differences other - base) with
  its exact confidence interval, the shifts that the exact U test does not reject
  (`shift_interval`);
- an outcome: *held*, *not held* (the data contradict the claim) or *cannot tell* (these
  repetitions cannot decide). "Higher" holds when higher is significant and is
  contradicted when lower is; "not lower" is contradicted when lower is significant and
  holds only when the one-sided lower confidence bound of the shift lies above
  -EQUIVALENCE_MARGIN x |median of the regular models| (an equivalence argument), never
  merely because nothing was significant.

A claim over many comparisons (sizes, training BERs) is held when more than half of
them hold and none contradicts it, not held when at least one contradicts it and no more
hold it than contradict it, and cannot tell otherwise (`aggregate`).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np

ALPHA = 0.05
EQUIVALENCE_MARGIN = 0.2          # "not lower": a decrease below 20% of the regular median is "not lower"
EXACT_SPLITS = 200_000            # enumerate every split up to this many; sample 20,000 beyond
EXACT_U_CELLS = 4_000             # the exact null distribution of U for m * n up to this; normal beyond
OUTCOMES = ("held", "not held", "cannot tell")


def permutation_p(lower: Sequence[float], higher: Sequence[float]) -> float:
    """One-sided p-value that `higher` tends to exceed `lower`: the Mann-Whitney U statistic
    (pairs with higher > lower, ties counting 1/2) against its exact permutation
    distribution, every split of the pooled values enumerated (seeded sampling of 20,000
    splits above 200,000)."""
    pooled = list(lower) + list(higher)
    n = len(higher)

    def u(hi_idx) -> float:
        chosen = set(hi_idx)
        his = [pooled[i] for i in chosen]
        los = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        return sum(1.0 if h > lo else 0.5 if h == lo else 0.0 for h in his for lo in los)

    observed = u(range(len(lower), len(pooled)))
    total = math.comb(len(pooled), n)
    if total <= EXACT_SPLITS:
        return sum(1 for s in itertools.combinations(range(len(pooled)), n) if u(s) >= observed) / total
    rng = np.random.default_rng(0)
    hits = sum(1 for _ in range(20_000) if u(rng.choice(len(pooled), n, replace=False).tolist()) >= observed)
    return (hits + 1) / 20_001


def smallest_p(m: int, n: int) -> float:
    """The smallest one-sided p an exact permutation test of m against n values can give."""
    return 1 / math.comb(m + n, n)


@lru_cache(maxsize=256)
def u_null_counts(m: int, n: int) -> tuple[int, ...]:
    """How many of the C(m + n, n) splits give U = 0, 1, ..., m n (no ties): the largest
    pooled value is either one of the n (it exceeds all m others: U gains m) or one of the m."""
    if m == 0 or n == 0:
        return (1,)
    a, b = u_null_counts(m, n - 1), u_null_counts(m - 1, n)
    out = [0] * (m * n + 1)
    for u, c in enumerate(a):
        out[u + m] += c
    for u, c in enumerate(b):
        out[u] += c
    return tuple(out)


def _critical(m: int, n: int, alpha: float) -> int | None:
    """The smallest c with P(U >= c) <= alpha under the null, or None if none is."""
    if m * n <= EXACT_U_CELLS:
        counts, total = u_null_counts(m, n), math.comb(m + n, n)
        tail = np.cumsum(counts[::-1])[::-1]            # tail[c] = #splits with U >= c
        ok = np.flatnonzero(tail <= alpha * total)
        return int(ok[0]) if len(ok) else None
    # normal approximation of U beyond the exact table (many repetitions)
    mean, sd = m * n / 2, math.sqrt(m * n * (m + n + 1) / 12)
    z = _normal_quantile(1 - alpha)
    return min(m * n, math.ceil(mean + z * sd + 0.5))


def _normal_quantile(p: float) -> float:
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class Shift:
    """The effect of `other` against `base`: the Hodges-Lehmann shift and its exact bounds."""

    estimate: float
    low: float          # two-sided (1 - alpha) interval
    high: float
    lower_bound: float  # one-sided (1 - alpha) lower bound
    upper_bound: float  # one-sided (1 - alpha) upper bound


def shift_interval(base: Sequence[float], other: Sequence[float], alpha: float = ALPHA) -> Shift:
    """The location shift of `other` against `base` with exact confidence bounds by
    inverting the U test: with the differences d (other_j - base_i) sorted, d_1..d_N, and c
    the U test's critical value, the shifts it does not reject are [d_{N-c+1}, d_c]
    (infinite where the design cannot reach the level)."""
    d = np.sort(np.subtract.outer(np.asarray(other, float), np.asarray(base, float)).ravel())
    m, n, big = len(base), len(other), len(d)

    def bounds(level: float) -> tuple[float, float]:
        c = _critical(m, n, level)
        if c is None:
            return -math.inf, math.inf
        return float(d[big - c]), float(d[c - 1])

    lo2, hi2 = bounds(alpha / 2)
    lo1, hi1 = bounds(alpha)
    return Shift(float(np.median(d)), lo2, hi2, lo1, hi1)


@dataclass
class Comparison:
    """One comparison of a claim: flip-trained (`other`) against regular (`base`) values."""

    label: str
    direction: str                 # "higher", "lower" or "not lower" (of other against base)
    base: list[float]
    other: list[float]
    p: float = 1.0                 # one-sided, in the claim's direction ("not lower": p of lower)
    p_against: float = 1.0         # one-sided, in the opposite direction
    p_min: float = 1.0
    shift: Shift | None = None
    outcome: str = "cannot tell"

    def line(self, what: str) -> str:
        s = self.shift
        ci = "(-inf, inf): too few repetitions for a 95% interval" if math.isinf(s.low) else \
            f"[{s.low:.3g}, {s.high:.3g}]"
        p = f"p(lower) = {self.p:.3g}" if self.direction == "not lower" else f"p = {self.p:.3g}"
        return (f"{self.label}: {what} {np.mean(self.other):.4g} vs {np.mean(self.base):.4g}; shift {s.estimate:.3g}, "
                f"95% CI {ci}; {p} (smallest attainable {self.p_min:.3g}): {self.outcome}")


def compare(label: str, direction: str, base: Sequence[float], other: Sequence[float],
            alpha: float = ALPHA, margin: float = EQUIVALENCE_MARGIN) -> Comparison:
    """The comparison's p-values, effect and outcome (the rule in the module docstring)."""
    c = Comparison(label, direction, list(base), list(other))
    up, down = permutation_p(base, other), permutation_p(other, base)
    c.p_min = smallest_p(len(base), len(other))
    c.shift = shift_interval(base, other, alpha)
    if direction == "higher":
        c.p, c.p_against = up, down
        c.outcome = "held" if up <= alpha else "not held" if down <= alpha else "cannot tell"
    elif direction == "lower":
        c.p, c.p_against = down, up
        c.outcome = "held" if down <= alpha else "not held" if up <= alpha else "cannot tell"
    elif direction == "not lower":
        c.p, c.p_against = down, up
        equivalent = c.shift.lower_bound >= -margin * abs(float(np.median(base)))
        c.outcome = "not held" if down <= alpha else "held" if equivalent else "cannot tell"
    else:
        raise ValueError(direction)
    return c


@dataclass
class ClaimResult:
    claim: str
    outcome: str = "cannot tell"
    comparisons: list[Comparison] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return self.outcome == "held"


def aggregate(res: ClaimResult) -> ClaimResult:
    """held: more than half of the comparisons hold and none contradicts the claim; not
    held: at least one contradicts it and no more hold it than contradict it; else cannot
    tell. The counts are appended to the claim."""
    outcomes = [c.outcome for c in res.comparisons]
    h, r, m = outcomes.count("held"), outcomes.count("not held"), len(outcomes)
    res.outcome = "held" if 2 * h > m and r == 0 else "not held" if r > 0 and h <= r else "cannot tell"
    res.claim += f" ({h} of {m} comparisons hold, {r} contradict it)"
    return res
