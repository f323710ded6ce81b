"""A refbnn model as a `torch.nn.Module` (`to_torch`) and as a `.pt` state dict
(docs/semantics.md §13). Needs torch: `pip install 'refbnn[torch]'`.

The module computes like the ONNX export, so its forward gives refbnn's scores exactly:
the input map is undone and rounded to the integers x, weights are +-1 float32 (integer
sums below 2^24 are exact), and each threshold compares p (h - s - 1/2) > 0 in float64.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..formats.files import InputError
from ..semantics.model import Conv2d, Flatten, Linear, MaxPool2d, Model, Threshold
from .onnx import _check_input_map, _check_limits, signs32


def _torch():
    try:
        import torch
    except ImportError:
        raise InputError("this needs torch: pip install 'refbnn[torch]'") from None
    return torch


def to_torch(model: Model, input_a: Any = None, input_c: Any = 0.0):
    """A torch.nn.Module whose forward(u) gives refbnn's class scores for u = A x + B (default
    A = 1/Z, B = 0: `--input x/Z`); `signs(u)` gives the output of every threshold layer.

    >>> import numpy as np, torch
    >>> from refbnn.engines.fast import FastEngine
    >>> from refbnn.demo.bars import example_data, example_model
    >>> model = example_model(); x, _ = example_data(5)
    >>> net = to_torch(model)
    >>> scores = net(torch.tensor(x / model.Z, dtype=torch.float32))
    >>> bool((scores.argmax(1).numpy() == np.asarray(FastEngine(model).predictions(x))).all())
    True
    """
    torch = _torch()
    channels = model.input_shape[0]
    a = np.broadcast_to(np.asarray(1.0 / model.Z if input_a is None else input_a, dtype=np.float64), (channels,))
    b = np.broadcast_to(np.asarray(input_c, dtype=np.float64), (channels,))
    _check_limits(model, qonnx=False)
    _check_input_map(model, a, b)
    return _module(torch)(model, a, b)


def _module(torch):
    import torch.nn.functional as F

    class RefbnnModule(torch.nn.Module):
        """refbnn's integer model in torch (refbnn.export.torch)."""

        def __init__(self, model: Model, a: np.ndarray, b: np.ndarray):
            super().__init__()
            shape = (1, -1) + (1,) * (len(model.input_shape) - 1)
            self.register_buffer("input_offset", torch.tensor(b, dtype=torch.float32).reshape(shape))
            self.register_buffer("input_inverse_scale", torch.tensor(1.0 / a, dtype=torch.float32).reshape(shape))
            self.kinds: list[tuple[str, int]] = []
            if model.input_threshold is not None:
                self._threshold("input", model.input_threshold, len(model.input_shape) + 1)
            shapes = (model.input_shape,) + model.shapes
            for i, layer in enumerate(model.layers):
                if isinstance(layer, (Linear, Conv2d)):
                    self.register_buffer(f"w{i}", torch.tensor(signs32(model, i)))
                    self.kinds.append((layer.type, layer.padding if isinstance(layer, Conv2d) else 0, f"w{i}"))
                elif isinstance(layer, Threshold):
                    self._threshold(str(i), layer, len(shapes[i]) + 1)
                elif isinstance(layer, MaxPool2d):
                    self.kinds.append(("maxpool2d", 0, ""))
                elif isinstance(layer, Flatten):
                    self.kinds.append(("flatten", 0, ""))

        def _threshold(self, name: str, t: Threshold, rank: int) -> None:
            shape = (1, -1) + (1,) * (rank - 2)
            self.register_buffer(f"s{name}", torch.tensor(np.array(t.thresholds, dtype=np.float64) + 0.5,
                                                          dtype=torch.float64).reshape(shape))
            self.register_buffer(f"p{name}", torch.tensor(np.array(t.polarity, dtype=np.float64),
                                                          dtype=torch.float64).reshape(shape))
            self.kinds.append(("threshold", 0, name))

        def signs(self, u):
            """(scores, {threshold layer index or 'input': its +-1 output})."""
            v = torch.round((u - self.input_offset) * self.input_inverse_scale)
            outs = {}
            for kind, padding, name in self.kinds:
                if kind == "linear":
                    v = v @ getattr(self, name).T
                elif kind == "conv2d":
                    v = F.conv2d(v, getattr(self, name), padding=padding)
                elif kind == "threshold":
                    fires = getattr(self, f"p{name}") * (v.double() - getattr(self, f"s{name}")) > 0
                    v = torch.where(fires, 1.0, -1.0).float()
                    outs[name if name == "input" else int(name)] = v
                elif kind == "maxpool2d":
                    v = F.max_pool2d(v, 2)
                else:
                    v = torch.flatten(v, 1)
            return v, outs

        def forward(self, u):
            return self.signs(u)[0]

    return RefbnnModule


def save_pt(f, tensors: dict[str, np.ndarray]) -> None:
    """The tensors as a `.pt` state dict, written by `torch.save` (torch's own format)."""
    torch = _torch()
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, f)
