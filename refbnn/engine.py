"""The fast exact engine: the reference interpreter's numbers at data-set scale.

Same interface as `refbnn.interpreter.Interpreter` (`predictions`, plus
`tolerance` and `importance` with the signatures of `refbnn.margin.tolerance`
and `refbnn.importance.neuron_importance`), and the very same results: the
tests demand exact equality.

Why float GEMM is exact here: every weight is +-1 and every input of a weight
layer is an integer with |x| <= M (M = Z for the first weight layer, 1 after a
threshold, 2 for a delta in Algorithm 1). Each product is then an integer of
magnitude <= M, and every partial sum, in whatever order or blocking BLAS uses
(FMA included), is an integer of magnitude <= fan_in * M. A binary float with a
p-bit significand represents every integer up to 2**p exactly, so if
fan_in * M <= 2**24 (float32) or 2**53 (float64) no rounding ever happens.
`_exact_dtype` picks the narrowest such type and refuses a layer past 2**53
(the model file limits keep real models far below it).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from math import ceil, prod
from typing import Callable, Optional, Sequence

import numpy as np

from .importance import relative_drop, require_accuracy
from .incremental import BatchFlips
from .ops import im2col, maxpool
from .margin import DEFAULT_B, Tolerance
from .model import Conv2d, Linear, MaxPool2d, Model, Threshold

DEFAULT_MEMORY = 2 * 2**30   # bytes of working memory per batch (documented in README)


def _exact_dtype(fan_in: int, magnitude: int) -> type:
    """The narrowest float type in which a +-1 dot product of length fan_in over integers
    of magnitude <= `magnitude` is exact (see the module docstring)."""
    bound = fan_in * magnitude
    if bound <= 2**24:
        return np.float32
    if bound <= 2**53:
        return np.float64
    raise ValueError(f"fan-in {fan_in} x input magnitude {magnitude} exceeds 2**53: "
                     f"no exact float type")


def weight_signs(model: Model, layer_index: int, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """The weight tensor of a layer as an int8 array of +-1, bit mask XORed in."""
    w = model.layers[layer_index].weight
    bits = np.unpackbits(np.frombuffer(w.bits.tobytes(), dtype=np.uint8), count=len(w.bits))
    bits = bits.reshape(w.shape).astype(bool)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != w.shape:
            raise ValueError(f"mask of shape {list(mask.shape)} for a weight of shape {list(w.shape)}")
        bits = bits ^ mask
    return np.where(bits, 1, -1).astype(np.int8)


class FastEngine:
    """Batched NumPy inference with exact float GEMMs; see the module docstring."""

    name = "fast"

    def __init__(self, model: Model, weight_masks: Optional[Sequence] = None,
                 memory: int = DEFAULT_MEMORY, threads: Optional[int] = None):
        self.model = model
        self.memory = memory
        self.threads = threads or min(4, len(os.sched_getaffinity(0)))
        masks = list(weight_masks) if weight_masks is not None else [None] * len(model.weight_indices)
        if len(masks) != len(model.weight_indices):
            raise ValueError(f"weight_masks: {len(masks)} entries for {len(model.weight_indices)} weight layers")
        self._w: dict[int, np.ndarray] = {}       # layer -> [N, fan_in] +-1 in its exact dtype
        self._dtype: dict[int, type] = {}         # layer -> dtype of its input and output
        first = model.weight_indices[0]
        for i, mask in zip(model.weight_indices, masks):
            signs = weight_signs(model, i, mask)
            fan_in = prod(signs.shape[1:])
            # Inputs: |x| <= Z in the first layer; deltas in Algorithm 1 are up to 2.
            dt = _exact_dtype(fan_in, model.Z if i == first else 2)
            self._dtype[i] = dt
            self._w[i] = signs.reshape(signs.shape[0], fan_in).astype(dt)
        self._thr: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for nl in model.neuron_layers:
            layer: Threshold = model.layers[nl.threshold_index]
            self._thr[nl.threshold_index] = (np.array(layer.thresholds, dtype=np.float64),
                                             np.array(layer.polarity) < 0)
        self.batch_size = self._batch_size()

    # -- sizing ---------------------------------------------------------------------------

    def _batch_size(self) -> int:
        """Inputs per batch so that one batch's tensors (all layer outputs kept, plus the
        largest im2col buffer, plus Algorithm 1's copies) stay within `self.memory`."""
        model = self.model
        per_input = 8 * prod(model.input_shape)
        for i, layer in enumerate(model.layers):
            per_input += 8 * prod(model.shapes[i]) * 3
            if isinstance(layer, Conv2d):
                per_input += 8 * prod(model.shapes[i][1:]) * prod(layer.weight.shape[1:])
        return max(1, int(self.memory // per_input))

    def _batches(self, n: int):
        for start in range(0, n, self.batch_size):
            yield slice(start, min(n, start + self.batch_size))

    # -- layers ---------------------------------------------------------------------------

    def _weight_layer(self, i: int, x: np.ndarray, channels: Optional[np.ndarray] = None) -> np.ndarray:
        """h = W x for layer i. With `channels`, x holds only those input channels (or
        columns) and only the matching part of W is used."""
        layer = self.model.layers[i]
        w = self._w[i]
        dt = self._dtype[i]
        x = x.astype(dt, copy=False)
        if isinstance(layer, Linear):
            return x @ (w if channels is None else w[:, channels]).T
        n, c, k, _ = layer.weight.shape
        if channels is not None:
            w = w.reshape(n, c, k * k)[:, channels].reshape(n, -1)
        cols = im2col(x, k, layer.padding)
        b, ho, wo, f = cols.shape
        h = cols.reshape(-1, f) @ w.T
        return h.reshape(b, ho, wo, n).transpose(0, 3, 1, 2)

    def _threshold(self, i: int, h: np.ndarray, channels: Optional[np.ndarray] = None) -> np.ndarray:
        """+-1 outputs of threshold layer i; with `channels`, h holds only those channels."""
        s, negative = self._thr[i]
        if channels is not None:
            s, negative = s[channels], negative[channels]
        shape = (1, -1) + (1,) * (h.ndim - 2)
        fires = (h > s.reshape(shape)) ^ negative.reshape(shape)   # polarity -1: h <= s
        return np.where(fires, np.int8(1), np.int8(-1))

    def _layer(self, i: int, x: np.ndarray) -> np.ndarray:
        layer = self.model.layers[i]
        if isinstance(layer, (Linear, Conv2d)):
            return self._weight_layer(i, x)
        if isinstance(layer, Threshold):
            return self._threshold(i, x)
        if isinstance(layer, MaxPool2d):
            return maxpool(x)
        return x.reshape(len(x), -1)   # flatten, C order

    def outputs(self, x: np.ndarray, flip: Optional[int] = None,
                act_masks: Optional[dict] = None) -> list[np.ndarray]:
        """The output of every layer for a batch x [B, *input_shape]; `flip` and
        `act_masks` (masks [B, ...] per hidden weight layer) as in `Interpreter.run`.
        outputs[-1] holds the class scores."""
        at = self.model.neuron(flip) if flip is not None else None
        outs = []
        for i in range(len(self.model.layers)):
            if act_masks and i in act_masks:
                x = np.where(act_masks[i].reshape(x.shape), -x, x)
            x = self._layer(i, x)
            if at is not None and at[0].threshold_index == i:
                x = x.copy()
                x[:, at[1]] *= -1
            outs.append(x)
        return outs

    @staticmethod
    def _argmax(scores: np.ndarray) -> np.ndarray:
        # np.argmax returns the first maximum: ties go to the smallest index.
        return np.argmax(scores.reshape(len(scores), -1), axis=1)

    # -- the common engine interface ------------------------------------------------------

    def predictions(self, xs: np.ndarray, flip: Optional[int] = None,
                    act_masks: Optional[dict] = None) -> np.ndarray:
        """The predicted class of every input; `act_masks[i]` holds one mask per input."""
        xs = np.asarray(xs)
        out = np.empty(len(xs), dtype=np.int64)
        for sl in self._batches(len(xs)):
            masks = {i: m[sl] for i, m in act_masks.items()} if act_masks else None
            out[sl] = self._argmax(self.outputs(xs[sl], flip, masks)[-1])
        return out

    def tolerance(self, xs: np.ndarray, bs: Sequence[Fraction] = DEFAULT_B) -> Tolerance:
        """The T tuple (eqs. 1-5), equal to `refbnn.margin.tolerance`.

        T_{i,n,u,v} >= b  <=>  m / (2 Z_l) >= b with m = |2(h - s) - 1| an odd integer,
        <=>  m >= ceil(2 b Z_l), an integer comparison. Summing eqs. 3-5:
        T^b = (1/(I N)) * sum_l (1/P_l) * C_l(b), with C_l(b) the count of (i, n, u, v) in
        layer l that pass; the layer breakdown is C_l(b) / (I N_l P_l)."""
        model = self.model
        xs = np.asarray(xs)
        bs = list(dict.fromkeys(bs))   # each distinct b once
        if model.neurons == 0:
            raise ValueError("the model has no neurons (no threshold layer): T is undefined")
        counts = [{b: 0 for b in bs} for _ in model.neuron_layers]
        for sl in self._batches(len(xs)):
            outs = self.outputs(xs[sl])
            for l, nl in enumerate(model.neuron_layers):
                z = model.Z if nl.first else 1
                needs = [ceil(2 * b * z) for b in bs]
                found = self._count_at_least(nl, outs[nl.threshold_index - 1], needs)
                for b, c in zip(bs, found):
                    counts[l][b] += c
        n_inputs = len(xs)
        layers = [{b: Fraction(c[b], n_inputs * nl.channels * nl.positions) for b in bs}
                  for c, nl in zip(counts, model.neuron_layers)]
        overall = {b: sum((Fraction(c[b], nl.positions) for c, nl in zip(counts, model.neuron_layers)),
                          Fraction(0)) / (n_inputs * model.neurons) for b in bs}
        return Tolerance(overall, layers)

    def _count_at_least(self, nl, h: np.ndarray, needs: list[int]) -> list[int]:
        """For each need: how many entries of h have m = |2(h - s) - 1| >= need.

        m is computed in the narrowest exact type: |m| <= 2 (|h|max + |s|max) + 1, and
        |h| <= fan-in * M; float32 holds every integer up to 2**24, float64 up to 2**53.
        Rows are taken in chunks of about 2**20 values so that the passes stay in cache."""
        s, _ = self._thr[nl.threshold_index]
        w = self.model.layers[nl.weight_index].weight
        h_max = prod(w.shape[1:]) * (self.model.Z if nl.first else 1)
        bound = 2 * (h_max + int(np.abs(s).max())) + 1
        dt = np.float32 if bound <= 2**24 else np.float64 if bound <= 2**53 else np.int64
        h = h.reshape(len(h), nl.channels, -1)
        shift = s.astype(dt)[None, :, None]
        counts = [0] * len(needs)
        chunk = max(1, 2**20 // (nl.channels * nl.positions))
        for start in range(0, len(h), chunk):
            m = h[start:start + chunk].astype(dt)
            m -= shift
            m *= 2
            m -= 1
            np.abs(m, out=m)
            for k, need in enumerate(needs):
                if need <= bound:
                    counts[k] += int(np.count_nonzero(m >= need))
        return counts

    def _margin2(self, threshold_index: int, h: np.ndarray) -> np.ndarray:
        """m = |2(h - s) - 1| = 2 T (times Z in the first layer), as exact int64."""
        s, _ = self._thr[threshold_index]
        shape = (1, -1) + (1,) * (h.ndim - 2)
        return np.abs(2 * (h.astype(np.int64) - s.astype(np.int64).reshape(shape)) - 1)

    def importance(self, xs: np.ndarray, ys: Sequence[int],
                   progress: Optional[Callable[[int, int], None]] = None) -> list[Fraction]:
        """Algorithm 1, equal to `refbnn.importance.neuron_importance` (flip, full re-run),
        but incremental: see `refbnn.incremental`."""
        model = self.model
        xs = np.asarray(xs)
        ys = np.asarray(ys)
        correct = np.zeros(model.neurons, dtype=np.int64)
        clean_correct = 0
        batches = list(self._batches(len(xs)))
        for k, sl in enumerate(batches):
            outs = self.outputs(xs[sl])
            clean_correct += int((self._argmax(outs[-1]) == ys[sl]).sum())
            flips = BatchFlips(self, outs, ys[sl])
            # Neurons are independent; NumPy releases the GIL in its loops, so threads help.
            with ThreadPoolExecutor(self.threads) as pool:
                for n, c in enumerate(pool.map(flips.correct_with_flip, range(model.neurons))):
                    correct[n] += c
                    if progress is not None:
                        progress(k * model.neurons + n + 1, len(batches) * model.neurons)
        a = Fraction(clean_correct, len(xs))
        require_accuracy(a)
        return [relative_drop(a, Fraction(int(c), len(xs))) for c in correct]
