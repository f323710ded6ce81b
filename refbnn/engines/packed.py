"""Two output units per float32 column: an exact product for sparse changes (Algorithm 1).

When Algorithm 1 flips a first-layer neuron of a CNN, about a tenth of a linear layer's
inputs change in every input row, spread over all columns, so the change of that layer's
h is a dense product as large as the layer's forward (refbnn.engines.incremental,
docs/engine.md). Each changed input moves from -1 to +1 or back, so the change is
2 x with x in {-1, 0, 1}, and a row of x has few non-zero entries. That sparsity buys
a product half as large: the weight rows are packed in pairs,

    P[j] = W[2j] + BASE * W[2j + 1]        (entries +-4095 or +-4097, exact in float32)

and one product v = x @ P.T gives both units: v[i, j] = lo + BASE * hi with
lo = x_i . W[2j], hi = x_i . W[2j + 1].

Why it is exact. Let S = sum_k |x_ik| be a row's weight (its count of non-zero
entries), with S <= MAX_ROW_WEIGHT = 2047. Every partial sum of the products, in any
order or blocking BLAS uses (FMA included), is an integer of magnitude at most
S * (BASE + 1) = 2047 * 4097 < 2**24, so float32 holds each exactly and v is exact.
Then |lo| <= S < BASE / 2, so v / BASE = hi + lo / BASE (a division by a power of two:
exact) lies strictly within 1/2 of the integer hi, and rint gives hi; lo = v - BASE * hi
is a difference of integers below 2**24: exact. A row heavier than MAX_ROW_WEIGHT
cannot be packed, and the caller falls back to the plain product.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

BASE = 4096
MAX_ROW_WEIGHT = 2047      # S * (BASE + 1) < 2**24 and S < BASE / 2


def pack_pairs(w: np.ndarray) -> np.ndarray:
    """[N, K] +-1 weights -> [ceil(N / 2), K] float32 rows W[2j] + BASE * W[2j + 1]
    (a zero row pads an odd N)."""
    n, k = w.shape
    pairs = np.zeros((2 * ((n + 1) // 2), k), dtype=np.float32)
    pairs[:n] = w
    packed = pairs[1::2] * np.float32(BASE)
    packed += pairs[0::2]
    return packed


def packed_product(x: np.ndarray, packed: np.ndarray, n_out: int) -> Optional[np.ndarray]:
    """x @ W.T [rows, n_out] in float32 for x with entries in {-1, 0, 1} (int8), through
    `pack_pairs(W)`; None when some row of x has more than MAX_ROW_WEIGHT non-zero
    entries (the packing would no longer be exact: see the module docstring)."""
    if len(x) and np.count_nonzero(x, axis=1).max() > MAX_ROW_WEIGHT:
        return None
    v = x.astype(np.float32) @ packed.T
    hi = np.rint(v * np.float32(1 / BASE))
    out = np.empty((len(x), 2 * packed.shape[0]), dtype=np.float32)
    np.multiply(hi, np.float32(-BASE), out=out[:, 0::2])
    out[:, 0::2] += v           # lo = v - BASE * hi
    out[:, 1::2] = hi
    return out[:, :n_out]
