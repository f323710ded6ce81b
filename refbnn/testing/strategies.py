"""Hypothesis strategies for BNN metric code: `cases`, `models`, `datasets`
(docs/semantics.md §12.3).

    from hypothesis import given
    from refbnn.testing import assert_claims, cases

    @given(cases(features={"fc", "conv", "polarity"}))
    def test_mine(case):
        assert_claims(case.model, case.x, case.y, my_metrics(case), request=case.request)

Every drawn model is valid under the contract, small, and built to reach the edges
where implementations disagree (ties at thresholds and between class scores, data
below Z and at Z, odd maps before pooling, padding in hidden layers, polarity -1, both
block orders, an input binarisation, b at and past the margins). Hypothesis shrinks a
failing case towards fewer layers, neurons, inputs, smaller maps and smaller Z.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import numpy as np
from hypothesis import strategies as st

from ..engines.fast import FastEngine
from ..semantics.model import Model
from .build import FEATURES, Case, Reach, build_case, inputs


class HypothesisDraws:
    """The builder's choices drawn by Hypothesis (so that they shrink)."""

    def __init__(self, draw):
        self.draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def choice(self, options: Sequence[Any]) -> Any:
        return self.draw(st.sampled_from(options))

    def values(self, n: int, lo: int, hi: int) -> np.ndarray:
        # two bytes per value, scaled onto lo..hi: one draw for the whole array, shrinking to lo
        raw = np.frombuffer(self.draw(st.binary(min_size=2 * n, max_size=2 * n)), dtype=">u2").astype(np.int64)
        return lo + (raw * (hi - lo + 1)) // 65536


def _reach(features: Optional[Iterable[str]], max_neurons: int, max_inputs: int, b: Optional[Sequence[str]],
           importance: bool, bit_errors: bool) -> Reach:
    return Reach(frozenset(FEATURES if features is None else features), max_neurons, max_inputs,
                 None if b is None else tuple(b), importance, bit_errors)


def cases(features: Optional[Iterable[str]] = None, max_neurons: int = 16, max_inputs: int = 8,
          b: Optional[Sequence[str]] = None, importance: bool = True,
          bit_errors: bool = True) -> st.SearchStrategy[Case]:
    """Cases (model, x, y, request, features) using only the given features (default all of
    `FEATURES`), with at most `max_neurons` neurons and `max_inputs` inputs; `b` fixes the
    request's b values (default: drawn at the edges).

    >>> from hypothesis import given
    >>> @given(cases(features={"fc"}, max_neurons=4))
    ... def test_sizes(case):
    ...     assert case.model.neurons <= 4 and "conv" not in case.features
    >>> test_sizes()
    """
    reach = _reach(features, max_neurons, max_inputs, b, importance, bit_errors)
    return st.composite(lambda draw: build_case(HypothesisDraws(draw), reach))()


def models(features: Optional[Iterable[str]] = None, max_neurons: int = 16) -> st.SearchStrategy[Model]:
    """Contract-valid models (the models of `cases`)."""
    return cases(features, max_neurons, importance=False, bit_errors=False).map(lambda case: case.model)


@st.composite
def _datasets(draw, model: Model, max_inputs: int) -> tuple[np.ndarray, np.ndarray]:
    d = HypothesisDraws(draw)
    x = inputs(d, model.input_shape, model.Z, max_inputs)
    pred = np.asarray(FastEngine(model).predictions(x), dtype=np.int64)
    y = (pred + d.values(len(x), 0, model.classes - 1)) % model.classes
    y[0] = pred[0]                  # accuracy > 0
    return x, y


def datasets(model: Model, max_inputs: int = 8) -> st.SearchStrategy[tuple[np.ndarray, np.ndarray]]:
    """Data (x, y) for `model`: inputs that reach Z, stay below it or are signed, labels
    mostly the model's own predictions (the first always, so that accuracy > 0)."""
    return _datasets(model, max_inputs)
