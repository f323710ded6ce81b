"""An engine that computes under the conventions of the registry (refbnn.oracle.conventions).

`VariantEngine` is a plain NumPy forward pass with the fields of a `Variant` as switches
(exact: every product is an integer below 2^53, see `_check_exact`), plus the metric
definitions with their switches; with every field at its default it equals the fast
engine, which the tests check.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from fractions import Fraction
from math import ceil, floor, prod
from typing import Callable, Optional, Sequence

import numpy as np

from ..biterrors.masks import ErrorModel, error_batches, keyed_mask, mask_shape
from ..engines.fast import FastEngine, weight_signs
from ..engines.ops import first_layer_input, im2col, maxpool
from ..semantics.accuracy import accuracy
from ..semantics.fliptargets import activation_targets, weight_targets
from ..semantics.importance import importance_variance, relative_drop
from ..semantics.margin import Tolerance
from ..semantics.model import Conv2d, Linear, MaxPool2d, Model, Threshold
from .checker import Replayed
from .conventions import Variant


def _order(model: Model, swap: bool) -> list[int]:
    """Layer indices in execution order; with `swap`, every threshold/maxpool pair swaps."""
    order = list(range(len(model.layers)))
    if swap:
        for i in range(len(order) - 1):
            a, b = model.layers[order[i]], model.layers[order[i + 1]]
            if {type(a), type(b)} == {Threshold, MaxPool2d}:
                order[i], order[i + 1] = order[i + 1], order[i]
    return order


class VariantEngine:
    """The model run under a Variant: predictions, T and Pi as check_claims asks for them.

    Exact: inputs are integers with |x| <= Z and weights +-1, so every sum is an integer
    of magnitude <= fan-in * Z < 2^53 (docs/semantics.md §3.3), exact in float64."""

    name = "variant"

    def __init__(self, model: Model, variant: Variant, batch_size: int = 256, shared: Optional[dict] = None):
        """`shared`: a dict in which forward runs are kept, keyed by the forward switches and the
        batch, so that variants that differ only in their metric switches run it once."""
        self.model, self.v, self.batch_size = model, variant, batch_size
        self.shared = shared
        # The weights as float64 +-1 and the contract's engine depend on the model only:
        # built once and kept in `shared` for every variant of one diagnosis.
        cache = shared if shared is not None else {}
        if "weights" not in cache:
            cache["weights"] = {i: weight_signs(model, i).astype(np.float64) for i in model.weight_indices}
            cache["fast"] = FastEngine(model)
        if variant.bits_little and "weights-little" not in cache:
            cache["weights-little"] = {i: weight_signs(model, i, bitorder="little").astype(np.float64)
                                       for i in model.weight_indices}
        self._w = cache["weights-little" if variant.bits_little else "weights"]
        self._fast = cache["fast"]
        self._flipped = False       # weights read through bit error masks: no shared runs

    def with_flips(self, weight_masks: Optional[Sequence]) -> "VariantEngine":
        """The same variant reading each weight through its mask (one per weight layer, None
        for a clean one), as the engines do (refbnn.engines.protocol): flipped weights negated."""
        if weight_masks is None or all(m is None for m in weight_masks):
            return self
        other = copy.copy(self)
        other._w = dict(self._w)
        for i, mask in zip(self.model.weight_indices, weight_masks):
            if mask is not None:
                other._w[i] = np.where(np.asarray(mask, dtype=bool), -self._w[i], self._w[i])
        other._flipped = True
        return other

    # -- the forward pass -------------------------------------------------------------------

    def run(self, x: np.ndarray, flip: Optional[int] = None,
            act_masks: Optional[dict] = None) -> tuple[dict[int, np.ndarray], dict, np.ndarray]:
        """(h entering each threshold layer, outputs of each threshold layer, class scores) for a
        batch; `flip` negates one neuron's output (or its h, with pi_flip_h); `act_masks`
        ({weight layer: bool [B, *its input shape]}) negate the +-1 inputs of hidden layers."""
        v, model = self.v, self.model
        at = model.neuron(flip) if flip is not None else None
        a = np.asarray(first_layer_input(model, np.asarray(x)), dtype=np.float64)
        hs, acts = {}, {}
        for i in _order(model, v.swap_pool):
            layer = model.layers[i]
            if act_masks and i in act_masks:
                a = np.where(np.asarray(act_masks[i]).reshape(a.shape), -a, a)
            if isinstance(layer, Threshold):
                h = a
                if at is not None and at[0].threshold_index == i and v.pi_flip_h:
                    h = h.copy()
                    h[:, at[1]] *= -1
                hs[i] = h
                a = self.threshold_outputs(layer, h)
                if at is not None and at[0].threshold_index == i and not v.pi_flip_h:
                    if v.pi_one_position and a.ndim == 4:
                        a[:, at[1], 0, 0] *= -1        # one position of the feature map only
                    else:
                        a[:, at[1]] *= -1
                acts[i] = a
            else:
                a = self.run_layer(i, a)
        return hs, acts, a.reshape(len(a), -1)

    def run_layer(self, i: int, a: np.ndarray) -> np.ndarray:
        """Layer i (not a threshold) on a batch, under the variant."""
        layer = self.model.layers[i]
        if isinstance(layer, Linear):
            return a.reshape(len(a), -1) @ self._w[i].T
        if isinstance(layer, Conv2d):
            return self._conv(i, a)
        if isinstance(layer, MaxPool2d):
            return maxpool(a)
        return (a.transpose(0, 2, 3, 1) if self.v.flatten_hwc else a).reshape(len(a), -1)   # flatten

    def _conv(self, i: int, a: np.ndarray) -> np.ndarray:
        layer, w = self.model.layers[i], self._w[i]
        n, c, k, _ = w.shape
        p = layer.padding
        if p and self.v.pad is not None:
            a = np.pad(a, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=self.v.pad)
            p = 0
        cols = im2col(a, k, p)
        b, ho, wo, f = cols.shape
        return (cols.reshape(-1, f) @ w.reshape(n, -1).T).reshape(b, ho, wo, n).transpose(0, 3, 1, 2)

    def threshold_outputs(self, layer: Threshold, h: np.ndarray) -> np.ndarray:
        """The +-1 outputs of a threshold layer for h, under the variant."""
        shape = (1, -1) + (1,) * (h.ndim - 2)
        s = np.array(layer.thresholds, dtype=np.float64).reshape(shape)
        fires = h >= s if self.v.tie_ge else h > s
        if not self.v.no_polarity:
            negative = (np.array(layer.polarity) < 0).reshape(shape)
            fires = np.where(negative, ~fires if not self.v.tie_ge else h < s, fires)
        return np.where(fires, 1.0, -1.0)

    def predicted(self, scores: np.ndarray) -> np.ndarray:
        if self.v.argmax_last:
            return scores.shape[1] - 1 - np.argmax(scores[:, ::-1], axis=1)
        return np.argmax(scores, axis=1)

    def _run_cached(self, xs, start: int) -> tuple[dict, np.ndarray]:
        xb = xs[start:start + self.batch_size]
        if self.shared is None:
            return self._plain_run(xb)
        key = (self.v.signature, id(xs), start)
        if key not in self.shared:
            self.shared[key] = self._plain_run(xb)
        return self.shared[key]

    def _plain_run(self, xb) -> tuple[dict, np.ndarray]:
        if self.v.forward:
            hs, _, scores = self.run(xb)
            return hs, scores
        outs = self._fast.outputs(xb)
        hs = {nl.threshold_index: outs[nl.threshold_index - 1].astype(np.float64) for nl in self.model.neuron_layers}
        return hs, outs[-1].reshape(len(xb), -1).astype(np.float64)

    def predictions(self, xs, flip: Optional[int] = None, act_masks=None) -> list[int]:
        out = []
        for start in range(0, len(xs), self.batch_size):
            if flip is not None or act_masks or self._flipped:
                sl = slice(start, start + self.batch_size)
                masks = {i: m[sl] for i, m in act_masks.items()} if act_masks else None
                scores = self.run(xs[sl], flip, masks)[2]
            else:
                scores = self._run_cached(xs, start)[1]
            out += self.predicted(scores).tolist()
        return out

    # -- T (eqs. 1-5 with the metric switches) -----------------------------------------------

    def tolerance(self, xs, bs: Sequence[Fraction]) -> Tolerance:
        """The T tuple and per-layer breakdown under the variant (docs/semantics.md §4 by default)."""
        model, v = self.model, self.v
        bs = list(dict.fromkeys(bs))
        counts = {b: [0] * len(model.neuron_layers) for b in bs}        # sum over inputs, neurons, positions
        pooled_positions = [0] * len(model.neuron_layers)
        for start in range(0, len(xs), self.batch_size):
            hs = self._run_cached(xs, start)[0]
            for l, nl in enumerate(model.neuron_layers):
                h = hs[nl.threshold_index].reshape(len(hs[nl.threshold_index]), nl.channels, -1)
                pooled_positions[l] = h.shape[2]
                at_least = self._margins_at_least(xs, start, l, h)
                z = model.Z if (nl.first and not v.no_z) else 1
                for b in bs:
                    need = 2 * b * z            # T >= b  <=>  m >= 2bZ; T > b  <=>  m > 2bZ
                    counts[b][l] += at_least(floor(need) + 1 if v.t_strict else ceil(need))
        n, inputs = model.neurons, len(xs)
        layers, overall = [], {}
        for b in bs:
            per_layer = [Fraction(counts[b][l], nl.channels * pooled_positions[l] * inputs)
                         for l, nl in enumerate(model.neuron_layers)]
            layers.append(per_layer)
            if v.pooled_mean:
                overall[b] = Fraction(sum(counts[b]), sum(nl.channels * pooled_positions[l] * inputs
                                                          for l, nl in enumerate(model.neuron_layers)))
            elif v.layers_unweighted:
                overall[b] = sum(per_layer, Fraction(0)) / len(per_layer)
            else:
                overall[b] = sum((t * nl.channels for t, nl in zip(per_layer, model.neuron_layers)),
                                 Fraction(0)) / n
        return Tolerance(overall, [{b: layers[k][l] for k, b in enumerate(bs)} for l in range(len(model.neuron_layers))])

    def _margins_at_least(self, xs, start: int, layer: int, h: np.ndarray) -> Callable[[int], int]:
        """For neuron layer `layer`'s h [B, N, P] in the batch at `start`: k -> how many of
        its margins m are >= k, m = 2T * Z_l as an integer, |2(h - s) - 1| (the odd margin)
        or |2(h - s)| without the 1/2 (h and s are integers, exact in float64). Counted once
        from the margins' histogram (then any b is one look-up) and kept in `shared`:
        variants with the same forward run and the same margin switches share it."""
        nl = self.model.neuron_layers[layer]
        no_s = nl.first and self.v.first_no_s
        key = ("margins", self.v.signature, id(xs), start, layer, self.v.no_half, no_s)
        if self.shared is not None and key in self.shared:
            return self.shared[key]
        s = np.array(self.model.layers[nl.threshold_index].thresholds, dtype=np.float64)[None, :, None]
        m = np.abs(2 * (h - (0 if no_s else s)) - (0 if self.v.no_half else 1))
        if m.size and m.max() <= 2**24:      # integers: a histogram, of which the filled bins
            hist = np.bincount(np.ravel(m, order="K").astype(np.int64))
            values = np.flatnonzero(hist)
            counts = hist[values]
        else:                                # huge margins (or none): sort the distinct ones
            values, counts = np.unique(m, return_counts=True)
        suffix = np.cumsum(counts[::-1])[::-1]   # suffix[i]: how many m >= values[i]

        def at_least(k: int) -> int:
            i = int(np.searchsorted(values, k))
            return int(suffix[i]) if i < len(values) else 0
        if self.shared is not None:
            self.shared[key] = at_least
        return at_least

    # -- Pi (Algorithm 1 with the switches) ---------------------------------------------------

    def importance(self, xs, ys, progress=None) -> list[Fraction]:
        v = self.v
        if not v.full_pi:
            key = ("pi", id(xs))                          # the contract's Pi, incremental, once
            if self.shared is not None and key in self.shared:
                pi = self.shared[key]
            else:
                pi = self._fast.importance(xs, ys)
                if self.shared is not None:
                    self.shared[key] = pi
        else:
            pi = self.full_importance(xs, ys)
        if v.pi_absolute:
            a = accuracy(self._clean_predictions(xs), np.asarray(ys))
            pi = [p * a for p in pi]                      # (A - A*) / A * A = A - A*
        if v.pi_over_flipped:
            pi = [p / (1 - p) for p in pi]                # A* = A (1 - Pi): (A - A*) / A* = Pi / (1 - Pi)
        return pi

    def _clean_predictions(self, xs) -> list[int]:
        """The predictions behind the accuracy A that Pi is scaled by: the variant's own forward
        pass if it changes the forward; otherwise the contract's, taken from the shared runs
        (a T computed on the same inputs already made them) where there are any."""
        if self.v.forward or (self.shared is not None and not self._flipped):
            return self.predictions(xs)
        return self._fast.predictions(xs)

    def full_importance(self, xs, ys) -> list[Fraction]:
        """Algorithm 1 as written, under the variant: one full forward pass per flipped neuron."""
        ys = np.asarray(ys)
        a = accuracy(self.predictions(xs), ys)
        return [relative_drop(a, accuracy(self.predictions(xs, flip=n), ys)) for n in range(self.model.neurons)]

    def importance_cost(self, n_inputs: int) -> int:
        """Multiply-adds of a full (non-incremental) Algorithm 1 under this variant; 0 when
        the contract's incremental one serves."""
        if not self.v.full_pi:
            return 0
        macs = sum(prod(self.model.shapes[i]) * prod(l.weight.shape[1:]) for i, l in enumerate(self.model.layers)
                   if isinstance(l, (Linear, Conv2d)))
        return macs * n_inputs * (self.model.neurons + 1)

    def variance(self, pi: Sequence[Fraction]) -> Fraction:
        """Eq. 6, or with ddof = 1."""
        if self.v.ddof1 and len(pi) > 1:
            return importance_variance(pi) * len(pi) / (len(pi) - 1)
        return importance_variance(pi)


def alternative_pattern(model: Model, em: ErrorModel, v: Variant, r: int, j: int, batch: int):
    """The flip pattern of repetition r, batch j under the mask alternatives of `v`
    (keys in another order, activation tensors numbered first)."""
    if em.p <= 0:
        return [None] * len(model.weight_indices), {}
    layers = set(em.targets(model))
    acts_t = activation_targets(model, first=v.acts_first) if em.activations else []
    shift = len(acts_t) if v.acts_first else 0     # weights numbered after the activations

    def key(t):
        return (em.seed, j, r, t) if v.keys_swapped else (em.seed, r, j, t)

    weights = [keyed_mask(*key(ft.t + shift), ft.shape, em.p) if ft.layer in layers else None
               for ft in weight_targets(model)]
    acts = {ft.layer: keyed_mask(*key(ft.t), mask_shape(ft, em.batch_size), em.p)[:batch] for ft in acts_t}
    return weights, acts


def bit_error_accuracies(engine, x: np.ndarray, y: np.ndarray, v: Variant
                         ) -> Callable[[ErrorModel, int], Replayed]:
    """accuracies(em, reps): the accuracy of each repetition under the mask alternatives of v."""
    from ..biterrors.sweep import correct_under_errors

    def accuracies(em: ErrorModel, reps: int) -> Replayed:
        n = len(y)
        if v.granularity is not None:
            em = replace(em, batch_size=1 if v.granularity == "input" else n)
        if v.output_clean:
            em = replace(em, layers=tuple(i for i in em.targets(engine.model) if i != engine.model.weight_indices[-1]))

        def one(r: int) -> Fraction:
            if not (v.keys_swapped or v.acts_first or v.persistent):
                return Fraction(correct_under_errors(engine, x, y, em, r), n)
            correct = 0
            stored = [None] * len(engine.model.weight_indices)     # persistent: the toggled bits so far
            for j, sl in error_batches(n, em.batch_size):
                weights, acts = alternative_pattern(engine.model, em, v, r, j, sl.stop - sl.start)
                if v.persistent:
                    stored = [w if s is None else s if w is None else s ^ w for s, w in zip(stored, weights)]
                    weights = stored
                flipped = engine.with_flips(weights) if any(w is not None for w in weights) else engine
                correct += int((np.asarray(flipped.predictions(x[sl], act_masks=acts or None)) == y[sl]).sum())
            return Fraction(correct, n)
        return Replayed(reps, one)      # computed as the checker reads them
    return accuracies
