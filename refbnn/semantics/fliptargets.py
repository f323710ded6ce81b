"""The tensors a bit error can flip, and how they are numbered (docs/semantics.md §6).

Keys (`default_rng([seed, r, j, t])`) and mask files (arrays `w{t}`, `a{t}`) both name a
tensor by its number t. Tensors are numbered **weights first**: t = 0 .. L-1 for the L
weight tensors in layer order, then t = L, L+1, ... for the activation tensors: the
+-1 inputs of the hidden weight layers, in layer order (shape per input: the input
shape of that layer). This module is the only place that numbering is written.
"""
from __future__ import annotations

from dataclasses import dataclass

from .model import Model


@dataclass(frozen=True)
class FlipTarget:
    """One flippable tensor: its number `t`, `kind` "w" (weight bits) or "a" (the binary
    inputs of a hidden weight layer), the weight `layer` (index in model.layers) it belongs
    to, and its `shape` (activations: per input, without the batch axis)."""

    t: int
    kind: str
    layer: int
    shape: tuple[int, ...]

    @property
    def name(self) -> str:
        """The array name in a mask file: w{t} or a{t}."""
        return f"{self.kind}{self.t}"


def activation_layers(model: Model) -> list[int]:
    """The hidden weight layers, whose +-1 inputs can be targeted."""
    return list(model.weight_indices[1:])


def weight_targets(model: Model) -> list[FlipTarget]:
    """The weight tensors, t = 0 .. L-1 in layer order."""
    return [FlipTarget(t, "w", i, model.layers[i].weight.shape) for t, i in enumerate(model.weight_indices)]


def activation_targets(model: Model, first: bool = False) -> list[FlipTarget]:
    """The activation tensors, t = L, L+1, ... in layer order. `first=True` numbers them
    0, 1, ... instead (and the weights after them): a convention other implementations
    use, which `refbnn verify` recognises (docs/semantics.md §11.2); never refbnn's own."""
    offset = 0 if first else len(model.weight_indices)
    return [FlipTarget(offset + k, "a", i, model.shapes[i - 1]) for k, i in enumerate(activation_layers(model))]


def flip_targets(model: Model) -> list[FlipTarget]:
    """Every flippable tensor of `model`, weights first (the contract's numbering)."""
    return weight_targets(model) + activation_targets(model)
