"""The inter-neuron bit error tolerance metric VAR(Pi) (paper section IV, docs/semantics.md §5).

`neuron_importance` is Algorithm 1 as written: flip one neuron's output, re-run
the whole network on the data set, compare accuracies. It works with anything
that offers `model` and `predictions(xs, flip=None)` (both engines do); the fast
engine's incremental version (`FastEngine.importance`) must equal it exactly.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable, Optional, Protocol, Sequence

from .accuracy import accuracy
from .model import Model, NoNeuronsError


class Predictor(Protocol):
    """What Algorithm 1 needs of an engine: the model and predictions with one neuron flipped."""

    model: Model

    def predictions(self, xs: Sequence, flip: Optional[int] = None) -> Sequence[int]: ...


class ZeroAccuracyError(ValueError):
    """Pi[n] = (A - A*_n) / A is undefined when A = 0."""


def require_accuracy(a: Fraction) -> None:
    """Algorithm 1 divides by A: refuse A = 0 with an explanation."""
    if a == 0:
        raise ZeroAccuracyError("accuracy A is 0 on this data set, so Pi[n] = (A - A*_n) / A "
                                "is undefined (Algorithm 1 divides by A)")


def relative_drop(a: Fraction, a_star: Fraction) -> Fraction:
    """Pi[n] = (A - A*_n) / A (Algorithm 1, line 6)."""
    require_accuracy(a)
    return (a - a_star) / a


def neuron_importance(engine: Predictor, xs: Sequence, ys: Sequence[int],
                      progress: Optional[Callable[[int, int], None]] = None) -> list[Fraction]:
    """Algorithm 1: Pi[n] = (A - A*_n) / A for every neuron n, where A*_n is the accuracy
    with neuron n's output flipped at every position. Output units get no Pi."""
    a = accuracy(engine.predictions(xs), ys)
    require_accuracy(a)
    pi = []
    for n in range(engine.model.neurons):
        pi.append(relative_drop(a, accuracy(engine.predictions(xs, flip=n), ys)))
        if progress is not None:
            progress(n + 1, engine.model.neurons)
    return pi


def importance_variance(pi: Sequence[Fraction]) -> Fraction:
    """Eq. (6): VAR(Pi) = (1/N) * sum_n (Pi[n] - mean(Pi))^2 (population variance)."""
    if not pi:
        raise NoNeuronsError("VAR(Pi)")
    mean = sum(pi, Fraction(0)) / len(pi)
    return sum(((p - mean) ** 2 for p in pi), Fraction(0)) / len(pi)
