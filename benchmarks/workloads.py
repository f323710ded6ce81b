"""The workloads the benchmarks share: the paper's Table II networks with random weights
(Fashion FC 2048-2048-10 and the CNN), and the bare float32 forward pass that is the floor
for exact +-1 products. Every script in benchmarks/ imports these from here (a script's
own folder is on its import path when run as `python benchmarks/NAME.py`)."""
from __future__ import annotations

import time

import numpy as np

from refbnn.engines.ops import conv2d
from refbnn.semantics.model import Conv2d, Flatten, Linear, MaxPool2d, Model, Threshold, Weight


def _w(rng, *shape):
    return Weight.from_array(rng.integers(0, 2, shape))


def fashion_fc(rng) -> Model:
    """In -> FC 2048 -> FC 2048 -> 10 (Table II)."""
    return Model.build((1, 28, 28), 255, [
        Flatten(), Linear(_w(rng, 2048, 784)), Threshold(tuple(rng.integers(-300, 300, 2048).tolist())),
        Linear(_w(rng, 2048, 2048)), Threshold(tuple(rng.integers(-10, 10, 2048).tolist())),
        Linear(_w(rng, 10, 2048))])


def fashion_cnn(rng) -> Model:
    """In -> C64 -> MP2 -> C64 -> MP2 -> FC2048 -> 10 (Table II), the authors' block order
    conv -> pool -> threshold, padding 1."""
    return Model.build((1, 28, 28), 255, [
        Conv2d(_w(rng, 64, 1, 3, 3), 1), MaxPool2d(), Threshold(tuple(rng.integers(0, 300, 64).tolist())),
        Conv2d(_w(rng, 64, 64, 3, 3), 1), MaxPool2d(), Threshold(tuple(rng.integers(0, 20, 64).tolist())),
        Flatten(), Linear(_w(rng, 2048, 3136)), Threshold(tuple(rng.integers(-10, 10, 2048).tolist())),
        Linear(_w(rng, 10, 2048))])


def float32_weights(model: Model) -> dict:
    return {i: np.where(np.frombuffer(model.layers[i].weight.bits.unpack(), dtype=bool), 1, -1)
            .astype(np.float32).reshape(model.layers[i].weight.shape[0], -1) for i in model.weight_indices}


def bare_float32(model: Model, ws: dict, x: np.ndarray, batch: int) -> None:
    """The same GEMMs/convs in float32 with nothing else: the floor for exact +-1 products."""
    for start in range(0, len(x), batch):
        v = x[start:start + batch].astype(np.float32)
        for i, layer in enumerate(model.layers):
            if isinstance(layer, Linear):
                v = v @ ws[i].T
            elif isinstance(layer, Conv2d):
                # the engine's own convolution, its fastest: fields gathered and multiplied
                # piece by piece (a whole-batch im2col copy made this "floor" 1.7x slower)
                v = conv2d(v, ws[i], layer.weight.shape[-1], layer.padding)
            elif isinstance(layer, MaxPool2d):
                b, c, h, w = v.shape
                v = v[:, :, :h // 2 * 2, :w // 2 * 2].reshape(b, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
            elif isinstance(layer, Flatten):
                v = v.reshape(len(v), -1)


def timed(f, *args, repeat: int = 1, **kwargs):
    """Best of `repeat` wall-clock runs, and the result."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = f(*args, **kwargs)
        best = min(best, time.perf_counter() - t)
    return best, out
