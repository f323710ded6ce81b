"""The bit-packed XNOR-popcount kernel (the `fast` extra: numba): the products of the fast
engine's weight layers computed on packed bits instead of float GEMMs.

A +-1 vector of length K is packed into ceil(K/64) 64-bit words, bit 1 for +1, the bits
past K zero. For two packed +-1 vectors a and w,

    sum_j a_j w_j = K - 2 * popcount(a XOR w)

(each position where they differ adds -1 instead of +1). With a padded convolution the
padded taps are absent (docs/semantics.md §2.2): a mask v of the real taps at an output
position makes the sum R - 2 * popcount((a XOR w) AND v), R = popcount(v). A dense first
layer reads integers: x = sum_p 2^p x_p over the bit planes x_p in {0, 1} of x (of
x + Z >= 0 where the data hold negative values), and for a plane b and weights w in {+1, -1} with
their bits u (1 for +1), sum_j w_j b_j = 2 popcount(b AND u) - popcount(b); then
sum_j w_j x_j = sum_p 2^p (2 popcount(x_p AND u) - popcount(x_p)) (- Z sum_j w_j). Every
step is integer arithmetic in int64, so the results are the integers of the definition
by construction; tests/test_bitkernel.py checks them against the plain products.

Around the products, compiled as well: max pooling, the thresholds and T's margin counts
(in the channels-last layout the packed convolution leaves), a first convolution on
integers by direct sums, bit error flips XORed into packed weights, and Algorithm 1's
steps (a change of +-1 inputs by masked XOR-popcounts, the same through a threshold, and
a conv channel negated everywhere by a table of field sign patterns); docs/engine.md says
why each is exact.

Compiled with `cache=True`: only the first call in a fresh environment compiles.
"""
from __future__ import annotations

from typing import Optional

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
    """Rows [R, K] -> rows of words [R, ceil(K/64)] (uint64): bit j of a row (1 where the
    entry is > 0: True, 1, +1) at bit j % 64 of word j // 64, the bits past K zero."""
    r, k = bits.shape
    out = np.empty((r, (k + WORD - 1) // WORD), dtype=np.uint64)
    _pack_positive(np.ascontiguousarray(bits).view(np.uint8) if bits.dtype == bool else np.ascontiguousarray(bits), out)
    return out


def pack_signs(a: np.ndarray) -> np.ndarray:
    """Rows of +-1 [R, K] -> packed words (bit 1 for +1); see pack_bits."""
    return pack_bits(a)


def pack_channels(x: np.ndarray) -> np.ndarray:
    """+-1 maps [B, C, H, W] -> words [B, H, W, ceil(C/64)]: each position's C channels
    packed (bit 1 for +1), the bits past C zero; for the direct convolution."""
    b, c, h, w = x.shape
    rows = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(b * h * w, c)
    return pack_bits(rows).reshape(b, h, w, -1)


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
    def _pack_positive(a, out):                # pragma: no cover - compiled
        n_rows, k = a.shape
        for i in prange(n_rows):
            for t in range(out.shape[1]):
                word = np.uint64(0)
                base = t * 64
                for j in range(min(64, k - base)):
                    if a[i, base + j] > 0:
                        word |= np.uint64(1) << np.uint64(j)
                out[i, t] = word

    @numba.njit(parallel=True, cache=True)
    def _pack_planes(u, planes, counts):      # pragma: no cover - compiled
        # u [R, K] non-negative integers -> planes [R, P, W] (bit p of each entry), counts [R, P]
        n_rows, k = u.shape
        n_planes, words = planes.shape[1], planes.shape[2]
        for i in prange(n_rows):
            for p in range(n_planes):
                ones = 0
                for t in range(words):
                    word = np.uint64(0)
                    base = t * 64
                    for j in range(min(64, k - base)):
                        bit = (u[i, base + j] >> p) & 1
                        ones += bit
                        word |= np.uint64(bit) << np.uint64(j)
                    planes[i, p, t] = word
                counts[i, p] = ones

    @numba.njit(parallel=True, cache=True)
    def _conv_packed(xp, wt, k, c, pad, out):  # pragma: no cover - compiled
        # xp [B, H, W, Wc] packed channels, wt [k*k*Wc, N] (taps in row-major order, each its
        # Wc words; transposed, so that the inner loop runs over the outputs), out
        # [B, Ho, Wo, N]: the sum over the real taps (a padded tap is absent: its words and
        # its mask are 0) of the C-channel +-1 products
        n_b, h, w, n_words = xp.shape
        n_out = wt.shape[1]
        ho, wo = out.shape[1], out.shape[2]
        span = k * k * n_words
        for bi in prange(n_b):
            field = np.zeros(span, dtype=np.uint64)
            mask = np.zeros(span, dtype=np.uint64)
            diff = np.zeros(n_out, dtype=np.int64)
            for u in range(ho):
                for v in range(wo):
                    real = 0
                    for r in range(k):
                        y = u + r - pad
                        for s_ in range(k):
                            xx = v + s_ - pad
                            base = (r * k + s_) * n_words
                            inside = 0 <= y < h and 0 <= xx < w
                            real += inside
                            for t in range(n_words):
                                field[base + t] = xp[bi, y, xx, t] if inside else np.uint64(0)
                                mask[base + t] = ~np.uint64(0) if inside else np.uint64(0)
                    diff[:] = 0
                    for t in range(span):
                        word = field[t]
                        m = mask[t]
                        for n in range(n_out):
                            diff[n] += _popcount((word ^ wt[t, n]) & m)
                    for n in range(n_out):
                        out[bi, u, v, n] = real * c - 2 * diff[n]

    @numba.njit(parallel=True, cache=True)
    def _signs_product(a, wt, k, out):         # pragma: no cover - compiled
        # a [rows, words], wt [words, N] (the weights' words transposed, so that the inner
        # loop runs over the outputs: contiguous, and vectorised with a vector popcount)
        n_rows, words, n_out = a.shape[0], a.shape[1], wt.shape[1]
        for i in prange(n_rows):
            diff = np.zeros(n_out, dtype=np.int64)
            for t in range(words):
                word = a[i, t]
                for n in range(n_out):
                    diff[n] += _popcount(word ^ wt[t, n])
            for n in range(n_out):
                out[i, n] = k - 2 * diff[n]

    @numba.njit(parallel=True, cache=True)
    def _pack_change(delta, signs, nonzero, counts):    # pragma: no cover - compiled
        # delta [rows, K] -> bits where it is > 0 and where it is != 0, and the count of those
        n_rows, k = delta.shape
        for i in prange(n_rows):
            total = 0
            for t in range(signs.shape[1]):
                pos, nz = np.uint64(0), np.uint64(0)
                base = t * 64
                for j in range(min(64, k - base)):
                    v = delta[i, base + j]
                    pos |= np.uint64(v > 0) << np.uint64(j)
                    nz |= np.uint64(v != 0) << np.uint64(j)
                    total += v != 0
                signs[i, t], nonzero[i, t] = pos, nz
            counts[i] = total

    @numba.njit(cache=True)
    def _row_differ(signs, nonzero, wt):        # pragma: no cover - compiled
        # one row's [words] change bits against wt [words, N]: per output, how many changed
        # inputs have the other sign than the weight, popcount((sigma XOR w) AND D)
        differ = np.zeros(wt.shape[1], dtype=np.int64)
        for t in range(len(signs)):
            s, m = signs[t], nonzero[t]
            if m == 0:          # no change in these 64 columns (a fifth of the words, after a conv flip)
                continue
            for n in range(wt.shape[1]):
                differ[n] += _popcount((s ^ wt[t, n]) & m)
        return differ

    @numba.njit(parallel=True, cache=True)
    def _change_product(signs, nonzero, counts, wt, out):   # pragma: no cover - compiled
        # signs, nonzero [rows, words]: where a change is positive, where it is not zero;
        # counts [rows] the non-zero changes; wt [words, N] the weights' bits transposed
        for i in prange(signs.shape[0]):
            differ = _row_differ(signs[i], nonzero[i], wt)
            for n in range(wt.shape[1]):
                out[i, n] = 2 * (counts[i] - 2 * differ[n])

    @numba.njit(parallel=True, cache=True)
    def _change_fires(signs, nonzero, counts, wt, rows, excess, clean, negative, new, row_changed,
                      unit_changed):                      # pragma: no cover - compiled
        # _change_product's change dh, compared at once with the threshold: an output fires
        # iff dh > excess[rows[i]] (the clean s - h); new: +-1 after polarity (negative);
        # row_changed, unit_changed [R, N]: where fires differs from clean[rows[i]]
        n_out = wt.shape[1]
        for i in prange(signs.shape[0]):
            differ = _row_differ(signs[i], nonzero[i], wt)
            b = rows[i]
            changed = unit_changed[i]
            for n in range(n_out):
                fires = 2 * (counts[i] - 2 * differ[n]) > excess[b, n]
                new[i, n] = 1 if fires != negative[n] else -1
                changed[n] = fires != clean[b, n]
            any_row = False
            for n in range(n_out):
                any_row |= changed[n]
            row_changed[i] = any_row

    @numba.njit(parallel=True, cache=True)
    def _planes_product(planes, ut, counts, out):           # pragma: no cover - compiled
        # planes [rows, n_planes, words] bits of x (+ Z), n_planes a multiple of 4 (the planes
        # past the highest bit are zero words), counts [rows, n_planes] their popcounts,
        # ut [words, N] the weights' bits transposed (inner loop over the outputs). Four
        # planes per pass over the weights: each weight word loaded once for four popcounts
        # and the running sums read and written once (measured 2x faster than a plane a pass)
        n_rows, n_planes, words, n_out = planes.shape[0], planes.shape[1], planes.shape[2], ut.shape[1]
        for i in prange(n_rows):
            agree = np.zeros(n_out, dtype=np.int64)          # sum_p 2^p popcount(x_p AND u)
            for g in range(0, n_planes, 4):
                for t in range(words):
                    a, b = planes[i, g, t], planes[i, g + 1, t]
                    c, d = planes[i, g + 2, t], planes[i, g + 3, t]
                    for n in range(n_out):
                        u = ut[t, n]
                        agree[n] += (_popcount(a & u) + (_popcount(b & u) << 1) + (_popcount(c & u) << 2)
                                     + (_popcount(d & u) << 3)) << g
            ones = 0                                          # sum_p 2^p popcount(x_p)
            for p in range(n_planes):
                ones += counts[i, p] << p
            for n in range(n_out):
                out[i, n] = 2 * agree[n] - ones

    @numba.njit(parallel=True, cache=True)
    def _integer_conv(x, wt, pad, out):         # pragma: no cover - compiled
        # x [B, C, H, W] integers, wt [k, k, C, N] +-1, both in the accumulator's type,
        # out [B, Ho, Wo, N]: the sum over the real taps (a padded tap is skipped), the
        # inner loop over the outputs
        n_b, c, h, w = x.shape
        k, n_out = wt.shape[0], wt.shape[3]
        ho, wo = out.shape[1], out.shape[2]
        for bi in prange(n_b):
            acc = np.zeros(n_out, dtype=wt.dtype)
            for u in range(ho):
                for v in range(wo):
                    acc[:] = 0
                    for r in range(k):
                        y = u + r - pad
                        if 0 <= y < h:
                            for s_ in range(k):
                                xx = v + s_ - pad
                                if 0 <= xx < w:
                                    for ci in range(c):
                                        val = x[bi, ci, y, xx]
                                        for n in range(n_out):
                                            acc[n] += val * wt[r, s_, ci, n]
                    for n in range(n_out):
                        out[bi, u, v, n] = acc[n]

    @numba.njit(parallel=True, cache=True)
    def _maxpool(x, out):                      # pragma: no cover - compiled
        # 2x2, stride 2, floor: out [B, C, H//2, W//2]
        n_b, c = x.shape[0], x.shape[1]
        ho, wo = out.shape[2], out.shape[3]
        for bi in prange(n_b):
            for ci in range(c):
                for u in range(ho):
                    for v in range(wo):
                        m = max(x[bi, ci, 2 * u, 2 * v], x[bi, ci, 2 * u, 2 * v + 1])
                        m = max(m, x[bi, ci, 2 * u + 1, 2 * v])
                        out[bi, ci, u, v] = max(m, x[bi, ci, 2 * u + 1, 2 * v + 1])


    @numba.njit(parallel=True, cache=True)
    def _maxpool_last(x, out):                 # pragma: no cover - compiled
        # channels last: x [B, H, W, C], out [B, H//2, W//2, C], the inner loop contiguous
        n_b, ho, wo, c = x.shape[0], out.shape[1], out.shape[2], x.shape[3]
        for bi in prange(n_b):
            for u in range(ho):
                for v in range(wo):
                    for ci in range(c):
                        m = max(x[bi, 2 * u, 2 * v, ci], x[bi, 2 * u, 2 * v + 1, ci])
                        m = max(m, x[bi, 2 * u + 1, 2 * v, ci])
                        out[bi, u, v, ci] = max(m, x[bi, 2 * u + 1, 2 * v + 1, ci])

    @numba.njit(parallel=True, cache=True)
    def _threshold_last(h, s, negative, out):    # pragma: no cover - compiled
        # h [rows, C] (channels last), s [C] in h's type (exact), negative [C]: polarity -1;
        # out [rows, C] int8: +1 iff h > s (iff h <= s for polarity -1), else -1
        n_rows, c = h.shape
        for r in prange(n_rows):
            for j in range(c):
                fires = (h[r, j] > s[j]) != negative[j]
                out[r, j] = 1 if fires else -1

    @numba.njit(parallel=True, cache=True)
    def _count_margins(h, s, channel_axis, needs, out):     # pragma: no cover - compiled
        # h [rows, A, B] integers (any numeric type), s [C] along axis 1 or 2 and needs, both in
        # the type m is computed in (exact for every m here: see margins_at_least):
        # out[r, k] = #entries of row r with m = |2(h - s) - 1| >= needs[k]
        n_rows, n_a, n_b = h.shape
        for r in prange(n_rows):
            m = np.empty(n_a * n_b, dtype=s.dtype)
            for i in range(n_a):        # (the channel's axis decided outside the inner loop)
                if channel_axis == 1:
                    si = s[i]
                    for j in range(n_b):
                        m[i * n_b + j] = abs(2 * (h[r, i, j] - si) - 1)
                else:
                    for j in range(n_b):
                        m[i * n_b + j] = abs(2 * (h[r, i, j] - s[j]) - 1)
            for k in range(len(needs)):
                need = needs[k]
                hits = 0
                for e in range(n_a * n_b):
                    hits += m[e] >= need
                out[r, k] = hits

    @numba.njit(parallel=True, cache=True)
    def _negated_channel_fires(signs, change, mask_id, rows, k, pad, pooled, excess, clean, fires,
                               row_changed, channel_changed):      # pragma: no cover - compiled
        # signs [R, H, W] (bool: +1) of one input channel, every entry of which is negated;
        # change [masks, 2^(k*k), N]: the change of an output, by its field's sign pattern
        # (bit r*k + s for tap (r, s)) and by which taps are real (mask_id [Ho, Wo]), in the
        # excess's type (so that the comparison runs on vectors of one type). excess [B, Ho, Wo, N]
        # (s - clean h, channels last), clean [B, H', W', N]; out: fires [R, H', W', N], row_changed
        # [R], channel_changed [R, N].
        n_r, h, w = signs.shape
        n_out = change.shape[2]
        ho, wo = excess.shape[1], excess.shape[2]
        for i in prange(n_r):
            field = np.zeros((h + 2 * pad, w + 2 * pad), dtype=np.int64)
            for y in range(h):
                for x in range(w):
                    field[y + pad, x + pad] = signs[i, y, x]
            above = np.empty((ho, wo, n_out), dtype=np.bool_)
            b = rows[i]
            for u in range(ho):
                for v in range(wo):
                    pattern = 0
                    for r in range(k):
                        for s_ in range(k):
                            pattern |= field[u + r, v + s_] << (r * k + s_)
                    m = mask_id[u, v]
                    for n in range(n_out):
                        above[u, v, n] = change[m, pattern, n] > excess[b, u, v, n]
            changed = channel_changed[i]
            for u in range(fires.shape[1]):
                for v in range(fires.shape[2]):
                    for n in range(n_out):    # branch-free (vectorised over the outputs)
                        if pooled:            # a window fires iff one of its entries does
                            f = (above[2 * u, 2 * v, n] | above[2 * u, 2 * v + 1, n]
                                 | above[2 * u + 1, 2 * v, n] | above[2 * u + 1, 2 * v + 1, n])
                        else:
                            f = above[u, v, n]
                        fires[i, u, v, n] = f
                        changed[n] |= f != clean[b, u, v, n]
            any_row = False
            for n in range(n_out):
                any_row |= changed[n]
            row_changed[i] = any_row


    @numba.njit(cache=True)
    def _flip_weight_bits(words, idx, fan_in, taps, n_words):   # pragma: no cover - compiled
        # words: packed weights' flat view ([taps, n_words, N]: Linear taps = 1); idx: flat
        # indices into [N, fan-in], fan-in in [C, taps] order; several may share a word
        n = len(words) // (taps * n_words)
        for e in range(len(idx)):
            row, col = idx[e] // fan_in, idx[e] % fan_in
            ch, tap = col // taps, col % taps
            words[(tap * n_words + ch // 64) * n + row] ^= np.uint64(1) << np.uint64(ch % 64)


def flip_weight_bits(packed: np.ndarray, idx: np.ndarray, fan_in: int, taps: int = 1) -> None:
    """Negate, in packed weights (pack_weights: [words, N]; pack_conv_weights: [k, k, Wc, N]
    with taps = k*k), the weights at the flat indices idx into [N, fan-in] (fan-in in the
    [C, k, k] order of a weight tensor): each its bit flipped in place, so flipping again
    undoes it (a bit error mask applied to the packed words)."""
    _flip_weight_bits(packed.reshape(-1), np.asarray(idx, dtype=np.int64), fan_in, taps, packed.shape[-2])


def threadsafe() -> bool:
    """Whether the kernels may be launched from several threads at once: numba's threading
    layer is OpenMP or TBB (its own "workqueue" layer takes one launch at a time). Asked
    after a kernel has run (the layer is chosen at the first parallel launch); False before."""
    try:
        return numba.threading_layer() != "workqueue"
    except ValueError:          # no parallel launch yet
        return False


def set_threads(threads: int) -> None:
    """Run the kernel's loops (over inputs) on this many threads of the calling thread
    (numba's setting is per calling thread); the integers do not depend on it."""
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


def signs_product(a: np.ndarray, w: np.ndarray, packed_w: Optional[np.ndarray] = None,
                  dtype=np.int64) -> np.ndarray:
    """a [R, K] and w [N, K], both +-1: a @ w.T [R, N] (in `dtype`; the integers are exact in
    any type that holds K), by XOR and popcount. `packed_w`: w already packed."""
    out = np.empty((len(a), len(w)), dtype=dtype)
    _signs_product(pack_signs(a), pack_weights(w) if packed_w is None else packed_w, a.shape[1], out)
    return out


def change_product(delta: np.ndarray, w: np.ndarray, packed_w: Optional[np.ndarray] = None,
                   dtype=np.int64) -> np.ndarray:
    """delta [R, K] with entries in {-2, 0, 2} (a change of +-1 inputs) and w [N, K] of +-1:
    delta @ w.T [R, N] in `dtype`. With D the non-zero entries of a row and sigma their
    signs, sum_{j in D} 2 sigma_j w_j = 2 (|D| - 2 popcount((sigma XOR w) AND D)): one
    masked XOR-popcount per word. `packed_w`: pack_weights(w) already made."""
    signs, nonzero, counts = _packed_change(delta)
    out = np.empty((len(delta), len(w)), dtype=dtype)
    _change_product(signs, nonzero, counts, pack_weights(w) if packed_w is None else packed_w, out)
    return out


def _packed_change(delta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, k = delta.shape
    signs, nonzero = (np.empty((r, (k + WORD - 1) // WORD), dtype=np.uint64) for _ in range(2))
    counts = np.empty(r, dtype=np.int64)
    _pack_change(np.ascontiguousarray(delta), signs, nonzero, counts)
    return signs, nonzero, counts


def change_fires(delta: np.ndarray, w: np.ndarray, packed_w: Optional[np.ndarray], rows: np.ndarray,
                 excess: np.ndarray, clean: np.ndarray,
                 negative: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A dense layer and its threshold after a change delta [R, K] in {-2, 0, 2} of its +-1
    inputs (Algorithm 1): the change dh = delta @ w.T (change_product), and an output fires
    iff dh exceeds the clean excess s - h (excess [B, N], of the batch rows `rows`). Returns
    the new +-1 outputs [R, N] (int8, polarity -1 where `negative`), which rows and which
    units fire otherwise than `clean` [B, N] (the clean outputs before polarity)."""
    signs, nonzero, counts = _packed_change(delta)
    r, n = len(delta), len(w)
    new = np.empty((r, n), dtype=np.int8)
    row_changed = np.empty(r, dtype=bool)
    unit_changed = np.empty((r, n), dtype=bool)
    _change_fires(signs, nonzero, counts, pack_weights(w) if packed_w is None else packed_w,
                  np.asarray(rows, dtype=np.int64), excess, clean, np.asarray(negative, dtype=np.bool_), new,
                  row_changed, unit_changed)
    return new, row_changed, unit_changed.any(axis=0)


def pack_weights(w: np.ndarray) -> np.ndarray:
    """Dense weights [N, K] of +-1 -> their words transposed, [ceil(K/64), N], as the
    products read them."""
    return np.ascontiguousarray(pack_signs(w).T)


def pack_conv_weights(w: np.ndarray, c: int, k: int) -> np.ndarray:
    """Conv weights [N, C*k*k] (+-1, the [C, k, k] order of a weight tensor) -> their words
    per tap, transposed: [k, k, Wc, N]."""
    taps = np.ascontiguousarray(w.reshape(len(w), c, k, k).transpose(0, 2, 3, 1)).reshape(-1, c)
    return np.ascontiguousarray(pack_bits(taps).reshape(len(w), k, k, -1).transpose(1, 2, 3, 0))


def conv_product(x: np.ndarray, w: np.ndarray, k: int, padding: int, packed_w: Optional[np.ndarray] = None,
                 dtype=np.int64) -> np.ndarray:
    """The stride-1 convolution of +-1 maps x [B, C, H, W] with +-1 weights w [N, C*k*k],
    padded taps absent: [B, N, Ho, Wo] in `dtype`, directly on packed channels (no field
    gather). `packed_w`: pack_conv_weights(w, C, k) already made."""
    b, c, h, wd = x.shape
    out = np.empty((b, h + 2 * padding - k + 1, wd + 2 * padding - k + 1, len(w)), dtype=dtype)
    packed_w = pack_conv_weights(w, c, k) if packed_w is None else packed_w
    _conv_packed(pack_channels(x), packed_w.reshape(-1, len(w)), k, c, padding, out)
    return out.transpose(0, 3, 1, 2)


def integer_conv(x: np.ndarray, w: np.ndarray, k: int, padding: int, z: int, dtype=np.int64) -> np.ndarray:
    """The stride-1 convolution of integer maps x [B, C, H, W] (|x| <= z) with +-1 weights
    w [N, C*k*k], padded taps absent: [B, N, Ho, Wo] in `dtype`, channels last in memory, by
    direct sums (a first layer: a field holds a few numbers per channel), exact: in float32
    where fan-in * z <= 2^24, else in int64."""
    b, c, h, wd = x.shape
    n = len(w)
    bound = c * k * k * max(z, 1)
    # numba widens integer products to int64 (8 per 512-bit vector); float32 products stay
    # float32 (16), and every partial sum is an integer of magnitude <= bound: exact below 2^24
    acc = np.float32 if bound <= 2**24 else np.int64
    wt = np.ascontiguousarray(w.reshape(n, c, k, k).transpose(2, 3, 1, 0)).astype(acc)
    out = np.empty((b, h + 2 * padding - k + 1, wd + 2 * padding - k + 1, n), dtype=dtype)
    _integer_conv(np.ascontiguousarray(x).astype(acc, copy=False), wt, padding, out)
    return out.transpose(0, 3, 1, 2)


def maxpool(x: np.ndarray) -> np.ndarray:
    """2x2 max pooling, stride 2, floor (refbnn.engines.ops.maxpool), in one pass. Maps laid
    out channels last in memory (conv_product's output) are pooled in that layout and come
    back as the same kind of view: read across channels, the loop runs contiguously."""
    b, c, h, w = x.shape
    last = x.transpose(0, 2, 3, 1)
    if last.flags.c_contiguous:
        out = np.empty((b, h // 2, w // 2, c), dtype=x.dtype)
        _maxpool_last(last, out)
        return out.transpose(0, 3, 1, 2)
    out = np.empty((b, c, h // 2, w // 2), dtype=x.dtype)
    _maxpool(np.ascontiguousarray(x), out)
    return out


def field_tables(w: np.ndarray, k: int, h: int, wd: int, padding: int) -> tuple[np.ndarray, np.ndarray]:
    """For one input channel's weights w [N, k*k] (+-1) of a stride-1 convolution of H x W
    maps: table [masks, 2^(k*k), N] (int32), the sum over a field's real taps of its +-1
    inputs times the weights, for every sign pattern of the field (bit r*k + s set where tap
    (r, s) reads +1; a padded tap is absent, docs/semantics.md §2.2), and mask_id [Ho, Wo],
    which of the masks of real taps each output position has. Negating the channel changes
    an output by -2 times its entry (negated_channel_fires reads that, in the excess's type)."""
    ho, wo = h + 2 * padding - k + 1, wd + 2 * padding - k + 1
    r, s = np.divmod(np.arange(k * k), k)
    ys = np.arange(ho)[:, None, None] + r[None, None, :] - padding
    xs = np.arange(wo)[None, :, None] + s[None, None, :] - padding
    real = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < wd)                  # [Ho, Wo, k*k]
    masks, mask_id = np.unique(real.reshape(-1, k * k), axis=0, return_inverse=True)
    patterns = ((np.arange(2 ** (k * k))[:, None] >> np.arange(k * k)) & 1) * 2 - 1     # [2^kk, kk]
    # small integers (|sum| <= k*k), exact in float32: one matrix product per mask
    table = (patterns[None, :, :] * masks[:, None, :]).astype(np.float32) @ w.T.astype(np.float32)
    return np.ascontiguousarray(table, dtype=np.int32), mask_id.reshape(ho, wo)


def negated_channel_fires(signs: np.ndarray, change: np.ndarray, mask_id: np.ndarray, padding: int,
                          rows: np.ndarray, pooled: bool, excess: np.ndarray,
                          clean: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Algorithm 1's step through a hidden conv layer, its 2x2 max pooling (if `pooled`) and
    threshold when one input channel is negated everywhere (a neuron of the layer before
    flipped): the change of each output is -2 times the sum over its field's real taps of
    the clean signs [R, H, W] times the weights: `change` is -2 x the table of `field_tables`,
    in the excess's type (exact: small integers); an entry fires
    iff its change exceeds the clean excess s - h (excess [B, Ho, Wo, N], channels last, of
    the batch rows `rows`), a pooled entry iff one of its window's does (max(h) > s iff some
    h > s). Returns whether each output fires [R, H', W', N] (channels last), which rows and
    which channels differ from `clean` [B, H', W', N]. Integers throughout."""
    fires = np.empty((len(signs),) + clean.shape[1:], dtype=bool)
    row_changed = np.empty(len(signs), dtype=bool)
    channel_changed = np.zeros((len(signs), change.shape[2]), dtype=bool)
    k = int(round(np.log2(change.shape[1]) ** 0.5))
    _negated_channel_fires(np.ascontiguousarray(signs), change.astype(excess.dtype, copy=False), mask_id,
                           np.asarray(rows, dtype=np.int64), k, padding, pooled, excess, clean, fires, row_changed,
                           channel_changed)
    return fires, row_changed, channel_changed.any(axis=0)


def threshold_signs(h: np.ndarray, s: np.ndarray, negative: np.ndarray) -> Optional[np.ndarray]:
    """The +-1 outputs (int8) of a threshold layer for h [B, C] or maps [B, C, H, W] laid out
    channels last in memory: +1 iff h > s, iff h <= s where `negative` (polarity -1), in the
    layout h came in; s in a type that holds it and h exactly (refbnn.engines.fast). None
    for maps laid out channels first (the caller's NumPy comparison takes those)."""
    if h.ndim == 2 and h.flags.c_contiguous:
        rows = h
    elif h.ndim == 4 and h.transpose(0, 2, 3, 1).flags.c_contiguous:
        rows = h.transpose(0, 2, 3, 1).reshape(-1, h.shape[1])
    else:
        return None
    out = np.empty(rows.shape, dtype=np.int8)
    _threshold_last(rows, np.asarray(s, dtype=h.dtype), np.asarray(negative, dtype=np.bool_), out)
    if h.ndim == 2:
        return out
    b, c, hh, ww = h.shape
    return out.reshape(b, hh, ww, c).transpose(0, 3, 1, 2)


def margins_at_least(h: np.ndarray, s: np.ndarray, needs: list[int], bound: int) -> list[int]:
    """For each need: how many entries of h [B, C, ...] (integers in any numeric type)
    have m = |2(h - s) - 1| >= need, s [C] integers per channel, every m at most `bound`;
    one pass over h. m is computed in float32 where bound + 1 <= 2^24, float64 where it is
    <= 2^53 (every integer up to there is exact, and a need past the bound is counted as
    bound + 1, which no m reaches), else int64. Maps laid out channels last in memory are
    read in that layout (no copy)."""
    dt = np.float32 if bound + 1 <= 2**24 else np.float64 if bound + 1 <= 2**53 else np.int64
    if h.ndim == 4 and h.transpose(0, 2, 3, 1).flags.c_contiguous:
        h3, axis = h.transpose(0, 2, 3, 1).reshape(len(h), -1, h.shape[1]), 2
    else:
        h3, axis = np.ascontiguousarray(h).reshape(len(h), h.shape[1], -1), 1
    if h3.dtype != dt:
        h3 = h3.astype(dt)
    out = np.empty((len(h), len(needs)), dtype=np.int64)
    _count_margins(h3, np.asarray(s).astype(dt), axis, np.array([min(k, bound + 1) for k in needs], dtype=dt), out)
    return [int(v) for v in out.sum(axis=0)]


def integer_product(x: np.ndarray, w: np.ndarray, z: int, packed_w: Optional[np.ndarray] = None,
                    dtype=np.int64) -> np.ndarray:
    """x [R, K] integers with |x| <= z, w [N, K] of +-1: x @ w.T [R, N] in `dtype`, by the
    bit planes of x (of x + z where x has negative entries; module docstring). `packed_w`:
    pack_weights(w) already made (then w is read only for its shape)."""
    x = x.astype(np.int64, copy=False)
    off = z if x.size and int(x.min()) < 0 else 0
    u = x + off
    n_planes = -(-max(1, int(2 * z if off else z).bit_length()) // 4) * 4     # a multiple of 4, see _planes_product
    planes = np.empty((len(u), n_planes, (u.shape[1] + WORD - 1) // WORD), dtype=np.uint64)
    counts = np.empty((len(u), n_planes), dtype=np.int64)
    _pack_planes(np.ascontiguousarray(u), planes, counts)
    # with the offset, the sums before its correction reach 2Z per tap: int64 until corrected
    out = np.empty((len(x), len(w)), dtype=np.int64 if off else dtype)
    ut = pack_weights(w) if packed_w is None else packed_w
    _planes_product(planes, ut, counts, out)
    if off:      # the offset's share: off * sum_j w_j per output, sum_j w_j = 2 popcount(u) - K
        sums = 2 * np.bitwise_count(ut).sum(axis=0, dtype=np.int64) - x.shape[1]
        out -= off * sums[None, :]
        return out.astype(dtype, copy=False)
    return out
