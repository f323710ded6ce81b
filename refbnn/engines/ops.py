"""Tensor helpers shared by the fast engine and its incremental Algorithm 1, and the one
way inputs are cut into consecutive batches (`input_slices`)."""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np


def input_slices(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most `size` inputs covering 0..n-1 in order (the last may be
    shorter). Every batching in refbnn is this one: the engine's memory batches, the bit
    error model's batches j (`refbnn.biterrors.masks.error_batches`), `import --check`."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def im2col(x: np.ndarray, k: int, padding: int) -> np.ndarray:
    """[B, C, H, W] -> [B, Ho, Wo, C*k*k]: every receptive field in W[n]'s row-major order.

    Zero padding makes padded taps contribute 0 to the sum, i.e. they are absent."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))  # B C Ho Wo k k
    b, c, ho, wo = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(b, ho, wo, c * k * k)


PIECE_BYTES = 2**21     # conv2d: the receptive fields of a piece of inputs, multiplied in the cache
WIDE = 16               # conv2d: input channels from which the fields are gathered channels last


def field_shape(x_shape: tuple, k: int, padding: int, channels_last: bool) -> tuple[tuple, tuple]:
    """The shapes of gather_fields' two buffers for inputs of x_shape [B, C, H, W]: the
    padded inputs and the fields, channels last ([B, Hp, Wp, C], [B, Ho, Wo, k, k, C]) or
    tap by tap ([C, B, Hp, Wp], [k, k, C, B, Ho, Wo])."""
    b, c, h, w = x_shape
    hp, wp = h + 2 * padding, w + 2 * padding
    ho, wo = hp - k + 1, wp - k + 1
    if channels_last:
        return (b, hp, wp, c), (b, ho, wo, k, k, c)
    return (c, b, hp, wp), (k, k, c, b, ho, wo)


def gather_fields(x: np.ndarray, k: int, padding: int, padded: np.ndarray, cols: np.ndarray,
                  channels_last: bool) -> None:
    """The one receptive-field gather (im2col) of the engine's conv2d and the trainer's
    convolution: write every k x k field of x [m, C, H, W] (zero padding) into cols, in the
    layout of field_shape. `padded` is a work buffer of field_shape whose border is zero
    (only its interior is written, so a buffer kept zeroed serves every call).

    Channels last is one block copy of k*C numbers per field and kernel row (many channels);
    tap by tap is one copy per tap of whole image rows (few channels, where a field's k*C
    numbers would be short runs). Both hold the same numbers as im2col(x)."""
    _, _, h, w = x.shape
    p = padding
    if channels_last:
        ho = padded.shape[1] - k + 1
        padded[:, p:p + h, p:p + w, :] = x.transpose(0, 2, 3, 1)
        # [m, Hp, Wo, k, C]: the k taps of a row, each a whole channel row
        rows = np.lib.stride_tricks.sliding_window_view(padded, k, axis=2).transpose(0, 1, 2, 4, 3)
        for r in range(k):
            cols[:, :, :, r] = rows[:, r:r + ho]
    else:
        ho, wo = padded.shape[2] - k + 1, padded.shape[3] - k + 1
        padded[:, :, p:p + h, p:p + w] = x.transpose(1, 0, 2, 3)
        for r in range(k):
            for s in range(k):
                cols[r, s] = padded[:, :, r:r + ho, s:s + wo]


def conv2d(x: np.ndarray, w: np.ndarray, k: int, padding: int, wide: Optional[int] = None) -> np.ndarray:
    """The stride-1 convolution of x [B, C, H, W] (zero padding) with w [N, C*k*k] (each
    row in the [C, k, k] order of a weight tensor), as [B, N, Ho, Wo], channels-last in
    memory, in w's dtype; the same sums as im2col(x) @ w.T.

    The receptive fields of a piece of inputs are gathered (gather_fields, channels last
    from `wide` input channels on, by default WIDE) and multiplied at once, while they are in the cache,
    instead of materialising every field of the batch first. The engine's inputs and
    weights are integers within its exact bound, so every sum is exact and the blocking
    cannot change a result (refbnn.engines.fast)."""
    b, c, h, wd = x.shape
    ho, wo = h + 2 * padding - k + 1, wd + 2 * padding - k + 1
    n = len(w)
    wk = w.reshape(n, c, k, k).transpose(0, 2, 3, 1).reshape(n, -1)     # [N, k, k, C] order
    out = np.empty((b, ho, wo, n), dtype=w.dtype)
    step = max(1, PIECE_BYTES // (ho * wo * k * k * c * w.itemsize))
    channels_last = c >= (WIDE if wide is None else wide)
    for start in range(0, b, step):
        sl = slice(start, min(b, start + step))
        pad_shape, col_shape = field_shape(x[sl].shape, k, padding, channels_last)
        padded, cols = np.zeros(pad_shape, dtype=w.dtype), np.empty(col_shape, dtype=w.dtype)
        gather_fields(x[sl], k, padding, padded, cols, channels_last)
        m = sl.stop - sl.start
        fields = cols.reshape(m * ho * wo, -1) if channels_last else cols.reshape(k * k * c, -1).T
        np.matmul(fields, wk.T, out=out[sl].reshape(-1, n))
    return out.transpose(0, 3, 1, 2)


def maxpool(x: np.ndarray) -> np.ndarray:
    """2x2 max pooling, stride 2, floor. On +-1 values the max is the OR of the bits.

    The max of the four strided quarters: the same numbers as
    x.reshape(b, c, h // 2, 2, w // 2, 2).max(axis=(3, 5)), in three passes."""
    h, w = x.shape[2] // 2 * 2, x.shape[3] // 2 * 2
    top = np.maximum(x[:, :, 0:h:2, 0:w:2], x[:, :, 0:h:2, 1:w:2])
    return np.maximum(top, np.maximum(x[:, :, 1:h:2, 0:w:2], x[:, :, 1:h:2, 1:w:2]), out=top)


def first_layer_input(model, x: np.ndarray) -> np.ndarray:
    """What the first weight layer reads from a batch x [B, *input shape]: x itself, or its
    binarisation when the model has an input threshold (docs/semantics.md §2.6): per input
    channel c, +1 iff x > s_c (polarity +1) or x <= s_c (polarity -1), else -1, as int8."""
    t = model.input_threshold
    if t is None:
        return x
    shape = (1, -1) + (1,) * (x.ndim - 2)
    fires = x > np.array(t.thresholds, dtype=np.int64).reshape(shape)
    fires ^= (np.array(t.polarity) < 0).reshape(shape)
    return fires.astype(np.int8) * np.int8(2) - np.int8(1)
