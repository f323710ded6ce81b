"""Models leaving refbnn (docs/semantics.md §13): `onnx` (a standard graph, or FINN's QONNX
dialect) whose float decisions equal the integer model's, `statedict` (tensors with a
layout file), and `torch` (`to_torch`, a torch.nn.Module; `.pt` files). `refbnn import`
reads every file back unchanged."""
from __future__ import annotations

from typing import Any


def to_torch(model, input_a: Any = None, input_c: Any = 0.0):
    """A torch.nn.Module whose forward gives refbnn's class scores (refbnn.export.torch)."""
    from .torch import to_torch as build
    return build(model, input_a, input_c)
