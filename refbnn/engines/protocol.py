"""The one interface both engines implement (the reference interpreter and the fast one).

Every command and metric talks to an engine through these calls only, so a test can
run the same check on both and demand identical results.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable, ContextManager, Optional, Protocol, Sequence

from ..semantics.margin import Tolerance
from ..semantics.model import Model


class Engine(Protocol):
    """Built as `Engine(model, weight_masks=None)`; masks are XORed into the weight bits.

    `with_flips(weight_masks)` returns an engine for the same model with those masks XORed
    in, without redoing the work that does not depend on them (bit error sweeps)."""

    name: str
    model: Model

    def predictions(self, xs: Sequence, flip: Optional[int] = None,
                    act_masks: Optional[dict] = None) -> Sequence[int]:
        """Predicted classes; `flip` negates one neuron's output (Algorithm 1),
        `act_masks` flips input bits of hidden weight layers (bit errors)."""

    def with_flips(self, weight_masks: Optional[Sequence]) -> "Engine":
        """The same engine reading every weight bit through the masks (one per weight layer)."""

    def flipped(self, indices: Sequence) -> ContextManager["Engine"]:
        """A context: the engine with the weights at these distinct flat indices (one int array
        or None per weight layer) flipped, for the duration of the block. Blocks nest: inside
        another `flipped` block of the same engine, the flips add to the outer ones."""

    def tolerance(self, xs: Sequence, bs: Sequence[Fraction]) -> Tolerance:
        """The T tuple (eqs. 1-5) and its per-layer breakdown."""

    def importance(self, xs: Sequence, ys: Sequence[int],
                   progress: Optional[Callable[[int, int], None]] = None) -> list[Fraction]:
        """Pi per neuron (Algorithm 1)."""
