"""The accuracy A that Algorithm 1 and every report start from (docs/semantics.md §5)."""
from __future__ import annotations

from fractions import Fraction
from typing import Iterable, Sequence


def accuracy(predictions: Iterable[int], ys: Sequence[int]) -> Fraction:
    """A: the fraction of inputs whose prediction equals the label."""
    ys = list(ys)
    correct = sum(1 for p, y in zip(predictions, ys) if int(p) == int(y))
    return Fraction(correct, len(ys))
