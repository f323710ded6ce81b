"""A small hand-built model and data set: horizontal versus vertical bars.

It needs no training and no download, so the first README command works on a
fresh machine. The weights are chosen by hand so the network makes sense:

- conv2d, 4 filters 3x3, padding 1, on 8x8 images with Z = 4: a horizontal
  line detector (middle row +1, outer rows -1), a vertical one, and the two
  diagonals; threshold 4 (the anti-diagonal with polarity -1: it fires where
  there is *no* anti-diagonal line);
- maxpool, flatten, and 4 hidden units that add up the detector maps with
  signs (+h -v, -h +v, each with +-diagonals), threshold 0;
- 2 class scores: class 0 (horizontal) = u0 + u1 - u2 - u3, class 1 = the negative.
"""
from __future__ import annotations

import numpy as np

from ..semantics.model import Conv2d, Flatten, Linear, MaxPool2d, Model, Threshold, Weight

SIZE, Z = 8, 4


def example_model() -> Model:
    """The hand-built bars model described in the module docstring.

    >>> model = example_model()
    >>> model.input_shape, model.Z, model.neurons, model.classes
    ((1, 8, 8), 4, 8, 2)
    """
    horizontal = np.array([[-1, -1, -1], [1, 1, 1], [-1, -1, -1]])
    diagonal = np.where(np.eye(3, dtype=bool), 1, -1)
    filters = np.stack([horizontal, horizontal.T, diagonal, diagonal[:, ::-1]])[:, None]
    cells = (SIZE // 2) ** 2
    h, v, d, a = (np.repeat(np.eye(4, dtype=int)[c], cells) for c in range(4))
    hidden = np.stack([h - v + d + a, h - v - d - a, v - h + d + a, v - h - d - a])
    out = np.array([[1, 1, -1, -1], [-1, -1, 1, 1]])
    return Model.build((1, SIZE, SIZE), Z, [
        Conv2d(Weight.from_array(filters), padding=1),
        Threshold((4, 4, 4, 4), (1, 1, 1, -1)),
        MaxPool2d(),
        Flatten(),
        Linear(Weight.from_array(hidden)),
        Threshold((0, 0, 0, 0)),
        Linear(Weight.from_array(out)),
    ])


def example_data(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n noisy 8x8 images (values 0..Z) with one bright bar; label 0 horizontal, 1 vertical.

    >>> x, y = example_data(3, seed=0)
    >>> x.shape, int(x.min()) >= 0, int(x.max()) <= 4, y.tolist()
    ((3, 1, 8, 8), True, True, [1, 1, 1])
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 2, (n, 1, SIZE, SIZE))
    for i in range(n):
        line = rng.integers(0, SIZE)
        bar = rng.integers(3, Z + 1, SIZE)
        if y[i] == 0:
            x[i, 0, line, :] = bar
        else:
            x[i, 0, :, line] = bar
    return x, y
