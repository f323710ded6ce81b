"""The reference interpreter: integer-exact BNN inference on `bitarray`.

This module *defines* what a refbnn model computes (docs/semantics.md §1-2, which
make precise the paper "Bit Error Tolerance Metrics for Binarized Neural
Networks", Buschjaeger et al. 2021). Any disagreement between it and that contract
is a bug here. The inference path uses Python ints and bitarrays only: no NumPy,
no floats. (NumPy appears only where bit masks are accepted as arrays.)

Hidden weight layers use the paper's form h = 2*popcount(xnor(W, X)) - #bits;
the first weight layer sees integers and uses bit planes (see `_plane_sum`).
"""
from __future__ import annotations

from contextlib import contextmanager
from fractions import Fraction
from math import prod
from typing import Iterator, Optional, Sequence

from bitarray import bitarray
from bitarray.util import count_and, count_xor

from ..semantics.importance import neuron_importance
from ..semantics.margin import Tolerance, tolerance
from ..semantics.model import Conv2d, Linear, MaxPool2d, Model, Run, Threshold, check_masks


def _bits(values: Sequence[bool]) -> bitarray:
    return bitarray(list(values), endian="big")


def _pad(values: list[int], shape: tuple[int, int, int], p: int, fill: int) -> list[int]:
    """[C, H, W] flat -> [C, H+2p, W+2p] flat, new border entries set to `fill`."""
    c, h, w = shape
    wp = w + 2 * p
    out = []
    for ch in range(c):
        out += [fill] * (p * wp)
        for r in range(h):
            start = (ch * h + r) * w
            out += [fill] * p + values[start:start + w] + [fill] * p
        out += [fill] * (p * wp)
    return out


def _patches(plane: bitarray, shape: tuple[int, int, int], k: int) -> list[bitarray]:
    """Every k x k receptive field of a padded [C, Hp, Wp] bit plane, in output order.

    The bits of one field are in W[n]'s row-major order: channel, then row, then column."""
    c, hp, wp = shape
    out = []
    for u in range(hp - k + 1):
        for v in range(wp - k + 1):
            patch = bitarray(endian="big")
            for ch in range(c):
                for r in range(k):
                    start = (ch * hp + u + r) * wp + v
                    patch += plane[start:start + k]
            out.append(patch)
    return out


def _planes(values: list[int]) -> list[tuple[int, bitarray]]:
    """Write integers as a signed sum of bit planes: x_j = sum over (c, P) of c * P[j].

    Positive parts give planes with c = +2^k, negative parts planes with c = -2^k."""
    out = []
    for sign in (1, -1):
        mags = [v * sign if v * sign > 0 else 0 for v in values]
        top = max(mags, default=0).bit_length()
        for k in range(top):
            out.append((sign << k, _bits([(m >> k) & 1 for m in mags])))
    return out


def _plane_sum(row: bitarray, planes: list[tuple[int, bitarray]]) -> int:
    """h = sum_j w_j x_j for weight bits `row` (w_j = 2 b_j - 1) and planes of x.

    sum_j w_j P[j] = 2 * #(b & P) - #P, so h = sum_(c, P) c * (2 count_and(b, P) - count(P))."""
    return sum(c * (2 * count_and(row, p) - p.count()) for c, p in planes)


class Interpreter:
    """The reference engine. `weight_masks` (one bool array or None per weight layer, in
    layer order) are XORed into the stored weights: a transient bit error pattern."""

    name = "reference"

    def __init__(self, model: Model, weight_masks: Optional[Sequence] = None):
        self.model = model
        self._rows: dict[int, list[bitarray]] = {}
        for i, mask in zip(model.weight_indices, check_masks(weight_masks, model)):
            w = model.layers[i].weight
            bits = w.bits.copy()
            if mask is not None:
                bits ^= _mask_bits(mask)
            fan_in = prod(w.shape[1:])
            self._rows[i] = [bits[n * fan_in:(n + 1) * fan_in] for n in range(w.shape[0])]
        # the layer that reads integers (bit planes); none when the model binarises its input
        self._first = model.weight_indices[0] if model.input_threshold is None else None
        self._valid: dict[int, list[bitarray]] = {}
        self._stacked: Optional[list] = None      # the masks of the enclosing `flipped` blocks

    def with_flips(self, weight_masks: Optional[Sequence]) -> "Interpreter":
        """The interpreter of the same model with `weight_masks` XORed into its bits."""
        return Interpreter(self.model, weight_masks)

    @contextmanager
    def flipped(self, indices: Sequence) -> Iterator["Interpreter"]:
        """The interpreter with the weights at the given flat indices (one int array or None
        per weight layer) flipped: `with_flips` of the masks those indices set. Blocks nest:
        inside another `flipped` block of this interpreter, the flips add to the outer ones."""
        import numpy as np

        outer = self._stacked
        masks = []
        for k, (i, idx) in enumerate(zip(self.model.weight_indices, indices)):
            mask = None if outer is None or outer[k] is None else outer[k].copy()
            if idx is not None:
                if mask is None:
                    mask = np.zeros(self.model.layers[i].weight.shape, dtype=bool)
                mask.reshape(-1)[idx] ^= True
            masks.append(mask)
        self._stacked = masks
        try:
            yield self.with_flips(masks)
        finally:
            self._stacked = outer

    # -- one layer at a time ------------------------------------------------------------

    def _linear(self, i: int, x: list[int]) -> list[int]:
        rows = self._rows[i]
        if i == self._first:
            planes = _planes(x)
            return [_plane_sum(row, planes) for row in rows]
        xb = _bits([v > 0 for v in x])
        k = len(xb)
        # popcount(xnor(w, x)) = k - count_xor(w, x), so h = 2*(k - count_xor) - k.
        return [k - 2 * count_xor(row, xb) for row in rows]

    def _conv(self, i: int, x: list[int], shape: tuple[int, int, int]) -> list[int]:
        layer: Conv2d = self.model.layers[i]
        n_out, c, k, _ = layer.weight.shape
        p = layer.padding
        pshape = (c, shape[1] + 2 * p, shape[2] + 2 * p)
        rows = self._rows[i]
        if i == self._first:
            # Padded taps are 0 in every plane, so they add nothing to the sum.
            planes = [(cf, _patches(pl, pshape, k)) for cf, pl in _planes(_pad(x, shape, p, 0))]
            fields = range(prod(self.model.shapes[i][1:]))
            out = []
            for row in rows:
                out += [sum(cf * (2 * count_and(row, pp[f]) - pp[f].count()) for cf, pp in planes)
                        for f in fields]
            return out
        xb = _patches(_bits([v > 0 for v in _pad(x, shape, p, -1)]), pshape, k)
        if i not in self._valid:   # which taps of each field are real (not padding)
            self._valid[i] = _patches(_bits([v != 0 for v in _pad([1] * len(x), shape, p, 0)]), pshape, k)
        valid = self._valid[i]
        out = []
        for row in rows:
            for xf, vf in zip(xb, valid):
                # Only real taps count: #bits = count(valid), mismatches = count((w^x) & valid).
                nbits = vf.count()
                out.append(nbits - 2 * count_and(row ^ xf, vf))
        return out

    @staticmethod
    def _threshold(layer: Threshold, h: list[int], positions: int) -> list[int]:
        out = []
        for j, v in enumerate(h):
            n = j // positions
            fires = v > layer.thresholds[n]
            if layer.polarity[n] == -1:
                fires = not fires   # polarity -1: +1 iff h <= s_n
            out.append(1 if fires else -1)
        return out

    @staticmethod
    def _maxpool(x: list[int], shape: tuple[int, int, int]) -> list[int]:
        c, h, w = shape
        out = []
        for ch in range(c):
            for u in range(h // 2):
                for v in range(w // 2):
                    top = (ch * h + 2 * u) * w + 2 * v
                    out.append(max(x[top], x[top + 1], x[top + w], x[top + w + 1]))
        return out

    # -- whole network ------------------------------------------------------------------

    def run(self, x: Sequence[int], flip: Optional[int] = None,
            act_masks: Optional[dict] = None) -> Run:
        """Forward one input (`x` flat in C order, or nested lists of ints).

        `flip` is a global neuron number whose threshold output is negated at every
        position (Algorithm 1's "flip the output of neuron n"). `act_masks` maps a
        hidden weight layer's index to a mask over its +-1 input (any nesting, C order):
        those input bits are read flipped (a transient activation bit error)."""
        model = self.model
        values = _flatten(x)
        if len(values) != prod(model.input_shape):
            raise ValueError(f"input has {len(values)} values, the model expects {prod(model.input_shape)}")
        flip_at = model.neuron(flip) if flip is not None else None
        shape = model.input_shape
        if model.input_threshold is not None:      # the input binarisation of §2.6
            values = self._threshold(model.input_threshold, values, prod(shape[1:]) if len(shape) == 3 else 1)
        hs = []
        for i, layer in enumerate(model.layers):
            if act_masks and i in act_masks:
                values = [-v if m else v for v, m in zip(values, _flatten(act_masks[i]))]
            if isinstance(layer, Linear):
                values = self._linear(i, values)
            elif isinstance(layer, Conv2d):
                values = self._conv(i, values, shape)
            elif isinstance(layer, Threshold):
                positions = prod(shape[1:]) if len(shape) == 3 else 1
                hs.append(values)
                values = self._threshold(layer, values, positions)
                if flip_at is not None and flip_at[0].threshold_index == i:
                    c = flip_at[1]
                    values[c * positions:(c + 1) * positions] = [
                        -v for v in values[c * positions:(c + 1) * positions]]
            elif isinstance(layer, MaxPool2d):
                values = self._maxpool(values, shape)
            # flatten: values are already flat in C order
            shape = model.shapes[i]
        return Run(hs, values)

    def predictions(self, xs: Sequence, flip: Optional[int] = None,
                    act_masks: Optional[dict] = None) -> list[int]:
        """The predicted class of every input in `xs`; `act_masks[i]` holds one mask per input."""
        return [self.run(x, flip, {i: m[k] for i, m in act_masks.items()} if act_masks else None).prediction
                for k, x in enumerate(xs)]

    # The definitions live in refbnn.semantics; these bind them so that the interpreter
    # and the fast engine answer the same calls.

    def tolerance(self, xs: Sequence, bs: Sequence[Fraction]) -> Tolerance:
        """The T tuple by eqs. 1-5: `refbnn.semantics.margin.tolerance` on one run per input."""
        return tolerance(self.model, (self.run(x) for x in xs), bs)

    def importance(self, xs: Sequence, ys: Sequence[int], progress=None) -> list[Fraction]:
        """Algorithm 1 as written (flip, full re-run): `refbnn.semantics.importance.neuron_importance`."""
        return neuron_importance(self, xs, ys, progress)


def _flatten(x) -> list[int]:
    if hasattr(x, "tolist"):
        x = x.tolist()
    out: list[int] = []
    stack = [x]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
        else:
            out.append(int(item))
    return out


def _mask_bits(mask) -> bitarray:
    """A checked bool mask array (see `check_masks`) as a big-endian bitarray."""
    out = bitarray(endian="big")
    out.pack(mask.ravel().astype("u1").tobytes())
    return out
