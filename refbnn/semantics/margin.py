"""The neuron-level bit error tolerance metric T (paper section III, eqs. 1-5).

Each equation is one function over exact `Fraction`s, computed from recorded
forward passes (`Run`s). The reference interpreter feeds its runs to `tolerance`;
the fast engine (`refbnn.engines.fast.FastEngine.tolerance`) must return the very
same numbers, and the tests compare the two exactly. docs/semantics.md §4.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import ceil
from typing import Iterable, Sequence

from .model import Model, NoNeuronsError, Run
from .theorem1 import odd_margin

DEFAULT_B = tuple(Fraction(b) for b in (2, 4, 8, 16, 32, 64))


def margin(h: int, s: int, Z: int = 1) -> Fraction:
    """Eq. (1): T_{i,n,u,v} = |h - s_n - 1/2|; eq. (2) for the first weight layer: the same / Z.

    Pass Z = 1 for a neuron outside the first weight layer."""
    return Fraction(odd_margin(h, s), 2 * Z)


def min_odd_margin(b: Fraction, Z: int = 1) -> int:
    """The least odd margin m that passes T >= b: T = m / 2Z >= b iff m >= ceil(2bZ), an
    integer comparison (the fast engine counts with it)."""
    return ceil(2 * Fraction(b) * Z)


def neuron_tolerance(h: Sequence[int], s: int, Z: int, b: Fraction) -> Fraction:
    """Eq. (3): T^b_{i,n} = (1/UV) * #{(u, v) : T_{i,n,u,v} >= b}.

    `h` holds the neuron's pre-activation at each of its U*V positions."""
    return Fraction(sum(1 for v in h if margin(v, s, Z) >= b), len(h))


def _neuron_tolerances(model: Model, run: Run, b: Fraction) -> list[list[Fraction]]:
    """T^b_{i,n} for every neuron, grouped by threshold layer."""
    out = []
    for nl, h in zip(model.neuron_layers, run.h):
        s = model.layers[nl.threshold_index].thresholds
        z = model.Z if nl.first else 1
        p = nl.positions
        out.append([neuron_tolerance(h[c * p:(c + 1) * p], s[c], z, b) for c in range(nl.channels)])
    return out


def input_tolerance(model: Model, run: Run, b: Fraction) -> Fraction:
    """Eq. (4): T^b_i = (1/N) * sum over all N neurons of T^b_{i,n}."""
    per_neuron = [t for layer in _neuron_tolerances(model, run, b) for t in layer]
    if not per_neuron:
        raise NoNeuronsError("T")
    return sum(per_neuron, Fraction(0)) / len(per_neuron)


def dataset_tolerance(per_input: Sequence[Fraction]) -> Fraction:
    """Eq. (5): T^b = (1/I) * sum over inputs of T^b_i."""
    return sum(per_input, Fraction(0)) / len(per_input)


def t_bar(T: dict) -> Fraction:
    """T-bar (paper Table III): the mean of the entries of the tuple T."""
    return sum(T.values(), Fraction(0)) / len(T)


@dataclass(frozen=True)
class Tolerance:
    """The T tuple over a data set (eq. 5 at each b) and, for each threshold layer, the same
    mean restricted to that layer's neurons: (1/I) sum_i (1/N_l) sum_{n in l} T^b_{i,n}."""

    overall: dict[Fraction, Fraction]
    layers: list[dict[Fraction, Fraction]]


def tolerance(model: Model, runs: Iterable[Run], bs: Sequence[Fraction] = DEFAULT_B) -> Tolerance:
    """The T tuple by the definitions (eqs. 1-5), from one run per input."""
    bs = list(dict.fromkeys(bs))   # each distinct b once
    per_input = {b: [] for b in bs}
    layer_sums = [{b: Fraction(0) for b in bs} for _ in model.neuron_layers]
    count = 0
    for run in runs:
        count += 1
        for b in bs:
            per_input[b].append(input_tolerance(model, run, b))
            for l, values in enumerate(_neuron_tolerances(model, run, b)):
                layer_sums[l][b] += sum(values, Fraction(0)) / len(values)
    overall = {b: dataset_tolerance(per_input[b]) for b in bs}
    layers = [{b: total / count for b, total in sums.items()} for sums in layer_sums]
    return Tolerance(overall, layers)
