"""The bit-packed XNOR-popcount kernel (the `fast` extra: numba): the products of the fast
engine's weight layers computed on packed bits instead of float GEMMs.

A +-1 vector of length K is packed into ceil(K/64) 64-bit words, bit 1 for +1, the bits
past K zero. For two packed +-1 vectors a and w,

    sum_j a_j w_j = K - 2 * popcount(a XOR w)

(each position where they differ adds -1 instead of +1). With a padded convolution the
padded taps are absent (docs/semantics.md §2.2): a mask v of the real taps at an output
position makes the sum R - 2 * popcount((a XOR w) AND v), R = popcount(v). The first
layer reads integers: x = sum_p 2^p x_p over the bit planes x_p in {0, 1} of x + Z >= 0
(so that negative data are covered), and for a plane b and weights w in {+1, -1} with
their bits u (1 for +1), sum_j w_j b_j = 2 popcount(b AND u) - popcount(b); then
sum_j w_j x_j = sum_p 2^p (2 popcount(x_p AND u) - popcount(x_p)) - Z sum_j w_j. Every
step is integer arithmetic in int64, so the results are the integers of the definition
by construction; tests/test_bitkernel.py checks them against the plain products.

Compiled with `cache=True`: only the first call in a fresh environment compiles.
"""
from __future__ import annotations

import numpy as np

try:
    import numba
    from numba import prange
except ImportError:          # the NumPy engine stays the default without the extra
    numba = None

WORD = 64


def available() -> bool:
    """Whether the kernel can run (numba is installed)."""
    return numba is not None


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Rows of booleans (or any numbers: nonzero is 1) [R, K] -> rows of words
    [R, ceil(K/64)] (uint64), bit j of the row at bit j % 64 of word j // 64, the bits past
    K zero."""
    r, k = bits.shape
    out = np.zeros((r, (k + WORD - 1) // WORD), dtype=np.uint64)
    _pack(np.ascontiguousarray(bits).view(np.uint8) if bits.dtype == bool else
          (np.ascontiguousarray(bits) != 0).view(np.uint8), out)
    return out


def pack_signs(a: np.ndarray) -> np.ndarray:
    """Rows of +-1 [R, K] -> packed words (bit 1 for +1); see pack_bits."""
    return pack_bits(a > 0)


if numba is not None:
    from numba.core import types as _types
    from numba.extending import intrinsic

    @intrinsic
    def _popcount(typingctx, x):
        """The CPU's popcount of a 64-bit word (LLVM's ctpop)."""
        if not isinstance(x, _types.Integer):
            return None

        def codegen(context, builder, signature, args):
            return builder.ctpop(args[0])
        return _types.uint64(_types.uint64), codegen

    @numba.njit(parallel=True, cache=True)
    def _pack(bits, out):                      # pragma: no cover - compiled
        n_rows, k = bits.shape
        for i in prange(n_rows):
            for j in range(k):
                if bits[i, j]:
                    out[i, j >> 6] |= np.uint64(1) << np.uint64(j & 63)

    @numba.njit(parallel=True, cache=True)
    def _signs_product(a, w, k, out):          # pragma: no cover - compiled
        n_rows, n_out, words = a.shape[0], w.shape[0], a.shape[1]
        for i in prange(n_rows):
            for n in range(n_out):
                diff = 0
                for t in range(words):
                    diff += _popcount(a[i, t] ^ w[n, t])
                out[i, n] = k - 2 * np.int64(diff)

    @numba.njit(parallel=True, cache=True)
    def _masked_signs_product(a, w, valid, real, out):     # pragma: no cover - compiled
        # a: [rows, words] fields, valid: [positions, words], row i is at position i % positions
        n_rows, n_out, words, positions = a.shape[0], w.shape[0], a.shape[1], valid.shape[0]
        for i in prange(n_rows):
            p = i % positions
            for n in range(n_out):
                diff = 0
                for t in range(words):
                    diff += _popcount((a[i, t] ^ w[n, t]) & valid[p, t])
                out[i, n] = real[p] - 2 * np.int64(diff)

    @numba.njit(parallel=True, cache=True)
    def _planes_product(planes, u, counts, out):            # pragma: no cover - compiled
        # planes: [rows, n_planes, words] bits of x + Z; counts: [rows, n_planes] their popcounts
        n_rows, n_planes, words, n_out = planes.shape[0], planes.shape[1], planes.shape[2], u.shape[0]
        for i in prange(n_rows):
            for n in range(n_out):
                total = np.int64(0)
                for p in range(n_planes):
                    agree = 0
                    for t in range(words):
                        agree += _popcount(planes[i, p, t] & u[n, t])
                    total += (2 * np.int64(agree) - counts[i, p]) << p
                out[i, n] = total


def signs_product(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """a [R, K] and w [N, K], both +-1: a @ w.T as int64 [R, N], by XOR and popcount."""
    out = np.empty((len(a), len(w)), dtype=np.int64)
    _signs_product(pack_signs(a), pack_signs(w), a.shape[1], out)
    return out


def masked_signs_product(fields: np.ndarray, w: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fields [R, K] of +-1 (anything at the padded taps), weights [N, K] of +-1, and the
    real taps valid [P, K] (bool) of each of the P output positions, the fields of row i
    at position i % P: the sums over the real taps, int64 [R, N]."""
    out = np.empty((len(fields), len(w)), dtype=np.int64)
    _masked_signs_product(pack_signs(fields), pack_signs(w), pack_bits(valid),
                          valid.sum(axis=1).astype(np.int64), out)
    return out


def integer_product(x: np.ndarray, w: np.ndarray, z: int) -> np.ndarray:
    """x [R, K] integers with |x| <= z, w [N, K] of +-1: x @ w.T as int64 [R, N], by the
    bit planes of x + z (module docstring)."""
    u = x.astype(np.int64) + z
    n_planes = max(1, int(2 * z).bit_length())
    planes = np.stack([pack_bits(((u >> p) & 1).astype(bool)) for p in range(n_planes)], axis=1)
    counts = np.stack([((u >> p) & 1).sum(axis=1) for p in range(n_planes)], axis=1).astype(np.int64)
    out = np.empty((len(x), len(w)), dtype=np.int64)
    _planes_product(planes, pack_signs(w), counts, out)
    if z:
        out -= z * w.sum(axis=1, dtype=np.int64)[None, :]
    return out
