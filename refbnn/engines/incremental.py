"""Incremental Algorithm 1 for the fast engine: flip one neuron, recompute only what changes.

Definition (refbnn.semantics.importance.neuron_importance): negate neuron n's threshold
output at every position and re-run the whole network. Here, for one batch whose
clean layer outputs `outs` are known, the flip is pushed forward as a *change*:

- State between layers: `rows` (inputs whose tensor still differs from the clean
  run), `changed` (channels, or columns after flatten, where it may differ) and
  `sub`, the new values of outs[j][rows][:, changed]. Everything else is clean.
- Weight layer (linearity): h_new = h_clean + W[:, changed] (sub - clean_sub).
  Every value is an integer within the engine's exact bound (|delta| <= 2), so
  the float arithmetic is exact (see refbnn.engines.fast).
  A linear layer with many units multiplies through its packed weights, two units
  per float32 column (refbnn.engines.packed: exact while the change is sparse).
- Threshold: only outputs whose value really changed stay in the state; inputs
  without any change leave it, and when none is left the predictions are clean.
  A weight layer and its threshold never form the new h: an output fires (h > s) iff
  the change exceeds the clean excess s - h, computed once per batch.
- Conv layer (then max pooling) then threshold: computed in pieces of rows, each piece
  through all three layers while its tensors are in the cache (max(h) > s iff some
  h > s: the pooling is an OR of the entries that fire); only the threshold outputs
  and which rows and channels changed come out.
- Linear layer followed by a threshold, sparse shortcut: d = len(changed) changed
  columns act on each unit like d flipped summands (each moves h by at most 2), so
  by Theorem 1 the output of unit m for input i can only change if
  tolerated_flips(odd_margin(h, s)) < d, i.e. m < 4d. Only those candidate
  entries, found once per batch and d, are recomputed. A test checks this against
  the full re-run.
- On the bit kernel (refbnn.engines.bitkernel, docs/engine.md): a hidden dense layer's
  change is a masked XOR-popcount product of the change's signs; a conv
  channel negated everywhere (a neuron of the layer before flipped) goes through conv,
  pooling and threshold by a table of field sign patterns; and the last threshold
  layer's neurons, before a dense output layer, are flipped all at once (either kernel).
"""
from __future__ import annotations

from math import prod
from typing import Optional

import numpy as np

from ..semantics.model import Conv2d, Linear, MaxPool2d, Threshold
from .ops import conv2d, maxpool
from .packed import pack_pairs, packed_product

SPARSE_FRACTION = 0.25   # use the candidate shortcut while it covers at most this share
PIECE_BYTES = 2**21      # a conv step's piece of rows: its float maps stay in the cache
PACKED_UNITS = 33        # linear layers with this many units take the packed delta product
MAX_TABLE_TAPS = 9       # a kernel of at most 3 x 3 taps: 2^9 sign patterns per table, changes <= 18


class BatchFlips:
    """Algorithm 1 on one batch: `correct_with_flip(n)` for each neuron n.

    A friend of `FastEngine`: besides its public surface it calls `_weight_layer` and
    `_threshold` to recompute the changed channels of one layer."""

    def __init__(self, engine, outs: list[np.ndarray], y: np.ndarray, tables: Optional[dict] = None):
        """`tables`: a dict to keep the field tables in across batches (they depend on the
        weights only)."""
        self.engine = engine
        self.model = engine.model
        self.outs = outs
        self.ok = engine.predicted(outs[-1]) == y
        self.clean_correct = int(self.ok.sum())
        self.y = y
        self._candidates: dict[tuple[int, int], tuple | None] = {}
        self._wt: dict[int, np.ndarray] = {}
        self._pk: dict[int, np.ndarray] = {}
        self._ex: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._g: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._tables = {} if tables is None else tables     # (conv, channel): its field tables
        self._ex8: dict = {}                                 # conv: its excess clipped to int8 (see below)

    def correct_with_flip(self, n: int) -> int:
        """Correct predictions in this batch with neuron n's output negated everywhere."""
        nl, c = self.model.neuron(n)
        t = nl.threshold_index
        rows = np.arange(len(self.y))
        changed = np.array([c])
        sub = -self.outs[t][:, c:c + 1]
        flips = None   # (row pos, column pos) of negated +-1 entries, when a sparse step knows them
        j = t + 1
        layers = self.model.layers
        while j < len(layers):
            layer = layers[j]
            if sub is None and not self._takes_flips(j):
                sub = _gather(self.outs[j - 1], rows, changed, copy=True)
                sub[flips[0], flips[1]] *= -1
            t = self._threshold_after(j) if isinstance(layer, Conv2d) else None
            if t is not None:
                rows, changed, sub = self._conv_threshold_step(j, t, rows, changed, sub)
                if len(rows) == 0:
                    return self.clean_correct
                flips = None
                j = t + 1
                continue
            if isinstance(layer, Linear) and j + 1 < len(layers) and isinstance(layers[j + 1], Threshold):
                step = self._sparse_linear_threshold(j, rows, changed, sub)
                if step is not None:
                    rows, changed, flips = step
                    sub = None
                else:
                    rows, changed, sub = self._linear_threshold_step(j, rows, changed, sub)
                    flips = None
                j += 2
                if len(rows) == 0:
                    return self.clean_correct
                continue
            if isinstance(layer, (Linear, Conv2d)):
                sub = self._weight_step(j, rows, changed, sub, flips)
                changed = np.arange(sub.shape[1])
            elif isinstance(layer, Threshold):
                rows, changed, sub = self._threshold_step(j, rows, changed, sub)
                if len(rows) == 0:
                    return self.clean_correct
            elif isinstance(layer, MaxPool2d):
                sub = maxpool(sub)
            else:   # flatten: channel c becomes columns c*P .. c*P + P - 1
                p = prod(sub.shape[2:])
                sub = sub.reshape(len(rows), -1)
                changed = (changed[:, None] * p + np.arange(p)).ravel()
            flips = None
            j += 1
        new_ok = self.engine.predicted(sub) == self.y[rows]
        return self.clean_correct - int(self.ok[rows].sum()) + int(new_ok.sum())

    def correct_with_each_last_flip(self) -> "np.ndarray | None":
        """For the neurons of the last threshold layer, where the output layer is a linear layer
        right after it: the correct predictions with each of them flipped, all at once
        (negating output a_m moves every class score by -2 a_m W[:, m]); else None.
        Integers in int32: a score is at most the output layer's fan-in in magnitude."""
        layers, engine = self.model.layers, self.engine
        j = len(layers) - 1
        if not (isinstance(layers[j], Linear) and j >= 1 and isinstance(layers[j - 1], Threshold)):
            return None
        a = self.outs[j - 1]
        scores = self.outs[j].astype(np.int32)
        w = engine.weight_matrix(j).T.astype(np.int32)                # [N, classes]
        out = np.empty(a.shape[1], dtype=np.int64)
        step = max(1, 2**22 // (len(a) * w.shape[1]))                 # [rows, step, classes] at a time
        for m in range(0, a.shape[1], step):
            moved = scores[:, None, :] - 2 * a[:, m:m + step, None].astype(np.int32) * w[None, m:m + step, :]
            out[m:m + step] = (np.argmax(moved, axis=2) == self.y[:, None]).sum(axis=0)    # ties: the first
        return out

    def _takes_flips(self, j: int) -> bool:
        """Layer j is the output layer, linear with few class scores: it takes the list of
        negated entries directly, without a dense tensor."""
        return (j == len(self.model.layers) - 1 and isinstance(self.model.layers[j], Linear)
                and self.engine.weight_matrix(j).shape[0] <= 32)

    def _delta(self, j: int, rows: np.ndarray, changed: np.ndarray, sub: np.ndarray) -> np.ndarray:
        """sub - clean input of layer j, on the changed rows and channels (values in -2..2)."""
        clean = _gather(self.outs[j - 1], rows, changed)
        return np.subtract(sub, clean, dtype=np.int8)

    def _weight_step(self, j: int, rows, changed, sub, flips=None) -> np.ndarray:
        """New full output h of weight layer j for `rows`: h_clean + W[:, changed] delta."""
        h = _take_rows(self.outs[j], rows)
        if flips is None:
            return h + self._change(j, rows, changed, sub)
        # The sparse step listed the negated entries (few class scores): add up W[:, col] * delta
        # over them, grouped by row (the sparse step lists them in row order).
        r, col, vals = flips
        if len(r) == 0:
            return h
        starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        dh = np.add.reduceat(self._w_t(j)[changed[col]] * vals[:, None].astype(np.float32), starts, axis=0)
        h = h.copy() if h is self.outs[j] else h
        h[r[starts]] += dh.astype(h.dtype)
        return h

    def _change(self, j: int, rows, changed, sub) -> np.ndarray:
        """The change of weight layer j's h on `rows`: W[:, changed] delta, for a hidden dense
        layer on the bit kernel by masked XOR-popcounts (bitkernel.change_product: one word
        operation per 64 changed columns, however many of them changed)."""
        delta = self._delta(j, rows, changed, sub)
        if not self._on_bits(j):
            return self._delta_product(j, delta, changed)
        from . import bitkernel
        return bitkernel.change_product(delta, *self._changed_weights(j, changed), self.engine.layer_dtype(j))

    def _on_bits(self, j: int) -> bool:
        """Whether hidden dense layer j takes its change from the bit kernel."""
        return isinstance(self.model.layers[j], Linear) and j != self.model.weight_indices[0] \
            and self.engine._on_bits(j)

    def _changed_weights(self, j: int, changed: np.ndarray) -> tuple[np.ndarray, "np.ndarray | None"]:
        """Layer j's weight columns `changed`, and their packed words where these are the
        engine's own (every column), for the bit kernel's change products."""
        w = self.engine.weight_matrix(j)
        if len(changed) == w.shape[1]:
            return w, self.engine._packed(j)
        return w[:, changed], None

    def _delta_product(self, j: int, delta: np.ndarray, changed: np.ndarray) -> np.ndarray:
        """W[:, changed] delta for weight layer j. A linear layer with many units takes the
        packed product (two units per column, refbnn.engines.packed) while the delta is
        sparse enough; where most columns changed, the delta is scattered into full width
        first: one GEMM with the stored W costs less than gathering most of its columns."""
        w = self.engine.weight_matrix(j)
        if not isinstance(self.model.layers[j], Linear) or len(w) < PACKED_UNITS:
            return self.engine._weight_layer(j, delta, changed)
        packed = self._packed(j)
        if len(changed) == w.shape[1]:          # every column: the delta is already full width
            full = delta
        elif 2 * len(changed) > w.shape[1]:
            full = np.zeros((len(delta), w.shape[1]), dtype=np.int8)
            full[:, changed] = delta
        else:
            full, packed, w = delta, packed[:, changed], w[:, changed]
        # Every input of a hidden weight layer is +-1 (threshold outputs, pooled or
        # flattened), so a change is +-2: delta >> 1 is in {-1, 0, 1}.
        dh = packed_product(full >> 1, packed, len(w))
        if dh is None:                          # too many changes in some row to pack
            return full.astype(w.dtype) @ w.T
        dh *= 2
        return dh

    def _packed(self, j: int) -> np.ndarray:
        """pack_pairs of layer j's weights, once per batch."""
        if j not in self._pk:
            self._pk[j] = pack_pairs(self.engine.weight_matrix(j))
        return self._pk[j]

    def _w_t(self, j: int) -> np.ndarray:
        """W of layer j transposed (fan-in major), cached: its rows gather fast. float32 is
        exact here: the sums are of at most fan-in terms of magnitude 2 (< 2**24)."""
        if j not in self._wt:
            self._wt[j] = np.ascontiguousarray(self.engine.weight_matrix(j).T, dtype=self.engine.layer_dtype(j))
        return self._wt[j]

    def _threshold_step(self, j: int, rows, changed, sub):
        """Apply threshold j on the changed channels; keep only entries that really changed."""
        new = self.engine._threshold(j, sub, changed)
        diff = (new != _gather(self.outs[j], rows, changed)).reshape(len(rows), len(changed), -1)
        return _kept(rows, changed, new, diff.any(axis=(1, 2)), diff.any(axis=(0, 2)))

    def _linear_threshold_step(self, j: int, rows, changed, sub):
        """Linear layer j and threshold j+1 on every entry (where the candidate shortcut does
        not pay): an output fires (h > s) iff the change dh exceeds the clean excess s - h,
        so the new h is never formed (`_excess`); then as _threshold_step. On the bit kernel
        the change and the comparison are one compiled pass (bitkernel.change_fires)."""
        excess, clean_fires = self._excess(j, j + 1)
        if self._on_bits(j):
            from . import bitkernel
            new, row_changed, unit_changed = bitkernel.change_fires(
                self._delta(j, rows, changed, sub), *self._changed_weights(j, changed), rows, excess, clean_fires,
                self.engine.thresholds(j + 1)[1])
            return _kept(rows, np.arange(new.shape[1]), new, row_changed, unit_changed)
        dh = self._change(j, rows, changed, sub)
        fires = dh > _take_rows(excess, rows)
        diff = fires != _take_rows(clean_fires, rows)
        fires ^= self.engine.thresholds(j + 1)[1]       # polarity -1: +1 iff not fires
        new = fires.view(np.int8) * np.int8(2) - np.int8(1)
        return _kept(rows, np.arange(new.shape[1]), new, diff.any(axis=1), diff.any(axis=0))

    def _threshold_after(self, j: int):
        """The index of the threshold that directly follows conv layer j, or follows the max
        pooling that follows it; else None."""
        layers = self.model.layers
        t = j + 2 if j + 1 < len(layers) and isinstance(layers[j + 1], MaxPool2d) else j + 1
        return t if t < len(layers) and isinstance(layers[t], Threshold) else None

    def _conv_threshold_step(self, j: int, t: int, rows, changed, sub):
        """Conv j, the max pooling if any, and threshold t for `rows`, piece by piece of rows,
        so the [rows, N, H, W] maps never exist whole and each piece stays in the cache.

        An entry fires (h > s) iff the change dh exceeds the clean excess s - h, and a
        pooled entry fires iff one of its window's entries does (max(h) > s iff some
        h > s), so the new h and its max are never formed: one comparison with the
        excess, three ORs of booleans (`_excess`). Polarity -1 negates fires on
        both sides of the comparison with the clean outputs. (On threads the pieces ran
        slower, 2-3x under load: a piece is many short NumPy calls, and the threads
        queue for the interpreter lock between them.)"""
        delta = self._delta(j, rows, changed, sub)
        excess, clean_fires = self._excess(j, t)
        pooled = t == j + 2
        fires = np.empty((len(rows),) + clean_fires.shape[1:], dtype=bool)
        row_changed = np.zeros(len(rows), dtype=bool)
        step = max(1, PIECE_BYTES // (4 * prod(excess.shape[1:])))
        pieces = [slice(k, min(k + step, len(rows))) for k in range(0, len(rows), step)]
        all_rows = len(rows) == len(excess)
        layer = self.model.layers[j]
        n, c, k, _ = layer.weight.shape
        w_changed = self.engine.weight_matrix(j).reshape(n, c, k * k)[:, changed].reshape(n, -1)

        def piece(sl: slice) -> np.ndarray:
            at = sl if all_rows else rows[sl]
            dh = conv2d(delta[sl], w_changed, k, layer.padding).transpose(0, 2, 3, 1)   # channels last
            above = dh > excess[at]
            f = fires[sl]
            if pooled:
                h, w = above.shape[1] // 2 * 2, above.shape[2] // 2 * 2
                np.logical_or(above[:, 0:h:2, 0:w:2], above[:, 0:h:2, 1:w:2], out=f)
                f |= above[:, 1:h:2, 0:w:2]
                f |= above[:, 1:h:2, 1:w:2]
            else:
                f[...] = above
            diff = f != clean_fires[at]
            row_changed[sl] = diff.any(axis=(1, 2, 3))
            return diff.any(axis=(0, 1, 2))

        if len(changed) == 1 and k * k <= MAX_TABLE_TAPS and self.engine._on_bits(j) and np.all(delta):
            # one channel negated everywhere (the flip of a neuron just before): each field's
            # change read from a table by its sign pattern, compiled, one pass per row
            from . import bitkernel
            # The step reads the whole excess of every row, which bounds its time: in int8, a
            # quarter of float32's bytes. A change here is at most 2 k*k <= 18 in magnitude, so
            # an excess clipped to [-127, 127] gives every comparison dh > excess its answer.
            if j not in self._ex8:
                self._ex8[j] = np.clip(excess, -127, 127).astype(np.int8)
            narrow = self._ex8[j]
            key = (j, int(changed[0]))
            if key not in self._tables:
                table, mask_id = bitkernel.field_tables(w_changed, k, delta.shape[2], delta.shape[3], layer.padding)
                self._tables[key] = (-2 * table).astype(narrow.dtype), mask_id     # the change of each output
            fires, row_changed, channel_changed = bitkernel.negated_channel_fires(
                delta[:, 0] < 0, *self._tables[key], layer.padding, rows, pooled, narrow, clean_fires)
        else:
            channel_changed = np.logical_or.reduce([piece(sl) for sl in pieces])
        fires ^= self.engine.thresholds(t)[1]          # polarity -1: +1 iff not fires
        new = (fires.view(np.int8) * np.int8(2) - np.int8(1)).transpose(0, 3, 1, 2)   # as the engine's maps
        return _kept(rows, np.arange(new.shape[1]), new, row_changed, channel_changed)

    def _excess(self, j: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        """For weight layer j and threshold t (after max pooling, if any), once per batch:
        the excess s - h of the clean h (maps channels last, [B, H, W, N]) and whether each
        clean output fires (h > s, or the window's max h > s; maps [B, H', W', N]). The
        comparison thresholds are the engine's, clipped to [-bound - 1, bound] (bound =
        fan-in: a hidden layer reads +-1), so |s - h| <= 2 * bound + 1, exact in float32
        up to 2**24."""
        if j not in self._ex:
            h, out = self.outs[j], self.outs[t] > 0
            if h.ndim == 4:
                h, out = h.transpose(0, 2, 3, 1), out.transpose(0, 2, 3, 1)
            bound = prod(self.model.layers[j].weight.shape[1:])
            dtype = np.float32 if 2 * bound + 1 <= 2**24 else np.float64
            excess = self.engine._cmp[t].astype(dtype) - h.astype(dtype, copy=False)
            self._ex[j] = (excess, np.ascontiguousarray(out ^ self.engine.thresholds(t)[1]))
        return self._ex[j]

    def _sparse_linear_threshold(self, j: int, rows, changed, sub):
        """Linear layer j and threshold j+1 on the candidate entries only: the new
        (rows, changed, flips), or None when the candidates are too many (see the module
        docstring for the bound)."""
        cand = self._candidate_entries(j, len(changed))
        if cand is None:
            return None
        ci, cm, g, old = cand
        n_batch = len(self.y)
        if len(rows) != n_batch:
            pos = np.full(n_batch, -1, dtype=np.int32)
            pos[rows] = np.arange(len(rows))
            keep = pos[ci] >= 0
            ci, cm, g, old = ci[keep], cm[keep], g[keep], old[keep]
            rpos = pos[ci]
        else:
            rpos = ci   # rows is arange(n_batch)
        delta = self._delta(j, rows, changed, sub)
        w = self.engine.weight_matrix(j)[:, changed].astype(np.int8)
        if len(changed) == 1:
            dh = delta[:, 0][rpos].astype(np.int32) * w[:, 0][cm]
        else:
            dh = np.einsum("ek,ek->e", delta[rpos], w[cm], dtype=np.int32)
        # g = 2(h - s) - 1 is odd; the output flips iff g + 2 dh has the other sign
        # (either polarity: polarity -1 only swaps which side is +1).
        flipped = np.flatnonzero(g * (g + 2 * dh) < 0)   # index arrays gather faster than masks
        fi, fm = ci[flipped], cm[flipped]
        new_rows, row_pos = _compress(fi, n_batch)
        new_changed, col_pos = _compress(fm, self.outs[j + 1].shape[1])
        vals = -2.0 * old[flipped]   # a negated +-1 output changes by -2 * its clean value
        return new_rows, new_changed, (row_pos[fi], col_pos[fm], vals)

    def _candidate_entries(self, j: int, d: int):
        """For layer j's h and threshold j+1: the entries (i, m) that d changed columns may
        flip (tolerated_flips < d), with g = 2(h - s) - 1 and the clean output there;
        or None if they exceed SPARSE_FRACTION of all entries. Cached per (layer, d)."""
        key = (j, d)
        if key not in self._candidates:
            g_all, m_all = self._margins(j)
            # tolerated_flips(m) < d  <=>  floor(m / 4) < d  <=>  m < 4d: one comparison pass
            hit = m_all < 4 * d
            entry = None
            if np.count_nonzero(hit) <= SPARSE_FRACTION * hit.size:
                ci, cm = (a.astype(np.int32) for a in np.nonzero(hit))
                # |g| < 4d <= 4 * fan-in, so int32 holds g + 2 dh
                entry = (ci, cm, g_all[ci, cm].astype(np.int32), self.outs[j + 1][ci, cm])
            self._candidates[key] = entry
        return self._candidates[key]

    def _margins(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """g = signed_margin and m = odd_margin of layer j's h at threshold j+1, once per layer."""
        if j not in self._g:
            g = self.engine.signed_margins(j + 1, self.outs[j])
            self._g[j] = (g, np.abs(g))
        return self._g[j]


def _kept(rows: np.ndarray, columns: np.ndarray, new: np.ndarray, row_changed: np.ndarray,
          column_changed: np.ndarray):
    """The state after a threshold: the rows that changed, and of `columns` (new's
    columns) those that changed, with their new values; all columns while most of them
    changed (selecting them would cost more than it saves, and the next product needs no
    scatter into full width)."""
    keep_rows = np.flatnonzero(row_changed)
    if 2 * np.count_nonzero(column_changed) > len(column_changed):
        return rows[keep_rows], columns, _take_rows(new, keep_rows)
    return rows[keep_rows], columns[column_changed], new[keep_rows][:, column_changed]


def _compress(idx: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct values of idx (all in 0..size-1) and a map value -> position."""
    present = np.bincount(idx, minlength=size) > 0
    return np.flatnonzero(present), np.cumsum(present) - 1


def _take_rows(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """a[rows]: `a` itself (not a copy: do not write to it) when rows are all of them."""
    return a if len(rows) == len(a) else a[rows]


def _gather(a: np.ndarray, rows: np.ndarray, channels: np.ndarray, copy: bool = False) -> np.ndarray:
    """a[rows][:, channels], without copying the unselected channels of every row: `a`
    itself when both are complete (read only, unless `copy`). rows and channels are
    sorted and distinct, so a full-length one is an arange."""
    all_rows, all_channels = len(rows) == len(a), len(channels) == a.shape[1]
    if all_rows and all_channels:
        return a.copy() if copy else a
    if all_rows:
        if channels[-1] - channels[0] == len(channels) - 1:    # a run of channels: a view
            return a[:, channels[0]:channels[-1] + 1].copy() if copy else a[:, channels[0]:channels[-1] + 1]
        return a[:, channels]
    if all_channels:
        return a[rows]
    return a[rows[:, None], channels[None, :]]
