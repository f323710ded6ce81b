"""Fold a float BNN (steps in forward order) into the integer model (docs/semantics.md §10).

The fold keeps, for the tensor at hand, per channel: value = a * q + c, where q is
- the integer input x (the graph sees u = A x + B, docs/semantics.md §10.2),
- the integer h of the current weight layer (a float pre-activation), or
- a binary +-1 value s (the output of a sign: two levels c - a and c + a).

A weight layer with weights +-alpha_n turns a binary input (a, c) into
h-space: v_n = alpha_n a h_n + alpha_n sum_j w_nj c_j + bias_n. Affine steps and batch
norm compose into (a, c); a sign then decides +1 iff a h + c > 0 (or >= 0), which is
an integer threshold with a polarity: `refbnn.semantics.batchnorm.sign_threshold`, the
rule the trainer's export uses too (its table: docs/semantics.md §10.3), with
tau = -c / a computed exactly (as a Fraction) from the float64 a and c.
Everything that would need an approximation is refused with the step it came from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ..formats.files import InputError
from ..semantics.batchnorm import sign_threshold, tau_as_float
from ..semantics.model import Conv2d, Flatten, Linear, MaxPool2d, Model, ModelError, Threshold, Weight, infer_shapes
from .steps import (AffineStep, BatchNormStep, ClipStep, FlattenStep, MonotoneStep, PoolStep, RoundStep, SignStep,
                    Step, WeightStep)

# A float BNN evaluates a*h + c in float32. Where |h - tau| is below this many units
# of h (relative to the reachable |h|, see `_tie_tolerance`), the framework's rounding
# may decide either way: a float tie, reported, never silently resolved.
TIE_RELATIVE = 2.0 ** -16


class RefusedError(InputError):
    """A source that refbnn cannot represent exactly; the message names the node or step."""


@dataclass
class ThresholdFold:
    """How one threshold layer was folded: per channel tau = -c/a (float, for reports),
    the float-tie tolerance in units of h, and the source tensor of its signs."""

    layer: int                      # index of the threshold layer in the model
    tau: np.ndarray
    tolerance: float
    tensor: Optional[str]
    levels: tuple[float, float]
    zero: bool
    layout: tuple[int, ...] = ()     # the source tensor's axes, as SignStep.layout
    order: Optional[tuple[int, ...]] = None   # or its entries, as SignStep.order


@dataclass
class Imported:
    """The integer model and what the fold noticed on the way."""

    model: Model
    notes: list[str] = field(default_factory=list)
    folds: list[ThresholdFold] = field(default_factory=list)
    output_tensor: Optional[str] = None
    source: Optional[object] = None   # refbnn.importers.source.Source: how to run the original again


@dataclass
class _Tensor:
    kind: str                       # "input", "pre" (float h), "binary", "scores"
    shape: tuple[int, ...]
    a: np.ndarray                   # per channel, float64
    c: np.ndarray
    reach: int = 0                  # bound on |h| ("pre"); on |x| ("input")
    exact: bool = True              # the float h is an exact multiple of a (no rounding)
    clip: Optional[tuple[np.ndarray, np.ndarray]] = None   # per-channel bounds of a clip, in today's value
    pooled: bool = False
    flat: Optional[str] = None      # a pre-activation the source flattened before its sign (where)


def _per_channel(v, channels: int, where: str, what: str) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    if v.ndim == 0:
        return np.full(channels, float(v))
    if v.shape != (channels,):
        raise RefusedError(f"{where}: {what} has shape {list(v.shape)}, expected one value per channel ({channels})")
    return v.copy()


def _power_of_two(v: np.ndarray) -> bool:
    m = np.frexp(np.abs(v))[0]
    return bool(np.all((m == 0.5) | (v == 0)))


class _Folder:
    def __init__(self, input_shape: tuple[int, ...], z: int, input_a, input_c):
        ch = input_shape[0]
        self.z = z
        self.input_shape = input_shape
        self.t = _Tensor("input", input_shape, _per_channel(input_a, ch, "--input", "the scale"),
                         _per_channel(input_c, ch, "--input", "the offset"), reach=z)
        self.layers: list = []
        self.notes: list[str] = []
        self.folds: list[ThresholdFold] = []
        self.monotone_tail = False
        self.output_where = ""
        self.input_threshold: Optional[Threshold] = None

    # -- one method per step kind ------------------------------------------------------------

    def weight(self, s: WeightStep) -> None:
        t = self.t
        if t.kind not in ("input", "binary"):
            raise RefusedError(f"{s.where}: a weight layer on {self._what(t)}; refbnn needs a sign "
                               "between two weight layers")
        w = np.asarray(s.w, dtype=np.float64)
        n = w.shape[0]
        if s.kind == "linear":
            if len(t.shape) != 1 or w.ndim != 2 or w.shape[1] != t.shape[0]:
                raise RefusedError(f"{s.where}: weight shape {list(w.shape)} does not fit the input shape "
                                   f"{list(t.shape)} (a linear layer needs a vector; flatten first)")
            in_channel = np.arange(w.shape[1])            # a vector's "channels" are its entries
        else:
            if len(t.shape) != 3 or w.ndim != 4 or w.shape[1] != t.shape[0] or w.shape[2] != w.shape[3]:
                raise RefusedError(f"{s.where}: weight shape {list(w.shape)} does not fit the input shape "
                                   f"{list(t.shape)} (conv needs [N, C, k, k] on [C, H, W])")
            in_channel = np.broadcast_to(np.arange(w.shape[1])[:, None, None], w.shape[1:]).ravel()
        flat = w.reshape(n, -1)
        alpha = np.abs(flat[:, 0])
        if not np.all(np.abs(flat) == alpha[:, None]) or not np.all(alpha > 0):
            bad = int(np.argmax(~np.all(np.abs(flat) == alpha[:, None], axis=1) | (alpha == 0)))
            levels = len(np.unique(flat[bad]))
            raise RefusedError(f"{s.where}: binary weights expected: output channel {bad} has {levels} distinct "
                               f"values ({_sample(flat[bad])}), not +-alpha; binarise the weights (a sign or a "
                               "1-bit quantizer on them) to make it representable")
        a_in, c_in = t.a[in_channel], t.c[in_channel]
        if not np.all(a_in == a_in[0]) or a_in[0] == 0:
            raise RefusedError(f"{s.where}: the input channels are scaled differently ({_sample(t.a)}); "
                               "one integer h cannot express that (use one scale for all channels)")
        signs = np.where(flat > 0, 1.0, -1.0)
        if s.kind == "conv2d" and s.padding > 0 and np.any(c_in != 0):
            raise RefusedError(f"{s.where}: padding {s.padding} with an input offset ({_sample(t.c)}): "
                               "the offset's share of h would depend on the position; "
                               "feed an input without offset (e.g. --input x/Z) or remove the padding")
        bias = np.zeros(n) if s.bias is None else _per_channel(s.bias, n, s.where, "the bias")
        c = bias + alpha * (signs @ c_in)
        fan_in = flat.shape[1]
        magnitude = self.z if t.kind == "input" else 1
        bits = Weight.from_array(flat.reshape(w.shape) > 0)
        self.layers.append(Linear(bits) if s.kind == "linear" else Conv2d(bits, int(s.padding)))
        shape = self._shape_after(s.where)
        exact = t.exact and _power_of_two(alpha) and _power_of_two(a_in[:1])
        self.t = _Tensor("pre", shape, alpha * a_in[0], c, reach=fan_in * magnitude, exact=exact)
        self.output_where = s.where

    def affine(self, s: AffineStep) -> None:
        t = self.t
        if t.flat is not None:
            s = self._per_channel_of_flat(s)
        mul = _per_channel(s.mul, t.shape[0], s.where, "the factor")
        add = _per_channel(s.add, t.shape[0], s.where, "the summand")
        if t.clip is not None:
            # a clip followed by an affine map is the affine map followed by a clip to the
            # mapped bounds (the sign checks them); a factor 0 would make the sign constant
            if np.any(mul == 0):
                raise RefusedError(f"{s.where}: a factor 0 after a clip")
            lo, hi = mul * t.clip[0] + add, mul * t.clip[1] + add
            t.clip = (np.minimum(lo, hi), np.maximum(lo, hi))
        if self.monotone_tail and not (np.all(mul == mul[0]) and mul[0] > 0 and np.all(add == add[0])):
            raise RefusedError(f"{s.where}: a map after the class scores' softmax that can change the prediction")
        t.a, t.c = t.a * mul, t.c * mul + add
        if not _power_of_two(mul) or np.any(add != 0):
            t.exact = False

    def round_input(self, s: RoundStep) -> None:
        """Round(u') where u' = a x + c is the network input mapped back to the integers: a and c
        are integers up to the rounding of float constants (a = 1, c = 0 for refbnn's export),
        so Round gives a x + c exactly for integer x."""
        t = self.t
        if t.kind != "input":
            raise RefusedError(f"{s.where}: rounding of {self._what(t)}: refbnn rounds only the network input "
                               "back to its integers")
        a, c = np.round(t.a), np.round(t.c)
        if np.any(a == 0) or np.any(np.abs(t.a - a) > 1e-6 * np.abs(a)) or \
                np.any(np.abs(t.c - c) > 1e-6 * np.maximum(1.0, np.abs(t.c))):
            raise RefusedError(f"{s.where}: Round of the input u = {_sample(t.a)} x + {_sample(t.c)}: "
                               "not integers; scale the input back with the inverse of --input first")
        t.a, t.c = a, c

    def batchnorm(self, s: BatchNormStep) -> None:
        if self.t.kind == "input":
            raise RefusedError(f"{s.where}: batch norm on the network input (fold it into --input instead)")
        self.affine(s.as_affine())

    def clip(self, s: ClipStep) -> None:
        t = self.t
        lo = -math.inf if s.lo is None else s.lo
        hi = math.inf if s.hi is None else s.hi
        if t.kind == "pre":
            if not lo < hi:
                raise RefusedError(f"{s.where}: clip to [{lo}, {hi}]: an empty or one-point range is constant")
            old = t.clip if t.clip is not None else (np.full(t.shape[0], -math.inf), np.full(t.shape[0], math.inf))
            t.clip = (np.maximum(old[0], lo), np.minimum(old[1], hi))
            return
        low, high = (t.c - np.abs(t.a) * t.reach, t.c + np.abs(t.a) * t.reach) if t.kind == "input" \
            else (t.c - np.abs(t.a), t.c + np.abs(t.a))
        if np.any(low < lo) or np.any(high > hi):
            raise RefusedError(f"{s.where}: clip to [{lo}, {hi}] changes {self._what(t)} (values from "
                               f"{low.min():g} to {high.max():g})")

    def pool(self, s: PoolStep) -> None:
        t = self.t
        if t.flat is not None:
            raise RefusedError(f"{s.where}: max pooling of a flattened tensor")
        if t.kind == "input":
            raise RefusedError(f"{s.where}: max pooling of the network input")
        # A clip before the pool commutes with it (both are non-decreasing): nothing to track.
        if np.any(t.a < 0):
            raise RefusedError(f"{s.where}: max pooling after a negative scale (channel "
                               f"{int(np.argmax(t.a < 0))}) is a min-pooling of h, which refbnn does not have")
        if t.pooled:
            raise RefusedError(f"{s.where}: two max poolings in one block")
        self.layers.append(MaxPool2d())
        t.shape = self._shape_after(s.where)
        t.pooled = t.kind == "pre"

    def flatten(self, s: FlattenStep) -> None:
        t = self.t
        if len(t.shape) == 1:
            return                  # already a vector: nothing to do
        if t.kind == "pre":
            # Keras flattens before the next layer's input quantizer: the sign of a flattened
            # tensor is the flattened sign, so the flatten moves behind the threshold
            t.flat = s.where
            return
        self.layers.append(Flatten())
        hw = t.shape[1] * t.shape[2]
        t.a, t.c = np.repeat(t.a, hw), np.repeat(t.c, hw)
        t.shape = self._shape_after(s.where)

    def sign(self, s: SignStep) -> None:
        t = self.t
        if t.kind == "input":
            self._binarised_input(s)
            return
        if not (np.all(np.isfinite(t.a)) and np.all(np.isfinite(t.c))):
            bad = int(np.argmax(~(np.isfinite(t.a) & np.isfinite(t.c))))
            raise RefusedError(f"{s.where}: channel {bad} has a NaN or infinite scale or offset "
                               "(batch norm with a negative variance? a NaN parameter?)")
        if t.kind == "binary":
            self._sign_of_binary(s)
            return
        if t.clip is not None:
            # clip(v) > 0 <=> v > 0 (and >= alike) exactly when the bounds enclose 0 strictly:
            # then the clip never moves a value across the sign's threshold
            lo, hi = t.clip
            bad = ~((lo < 0) & (0 < hi))
            if np.any(bad):
                n = int(np.argmax(bad))
                raise RefusedError(f"{s.where}: a sign after a clip whose bounds do not enclose its threshold: "
                                   f"channel {n} is clipped to [{lo[n]:g}, {hi[n]:g}] around a threshold at 0, "
                                   "so the sign would be constant there (clip to bounds around the threshold)")
            t.clip = None
        thresholds, polarity, tau = [], [], []
        for n, (a, c) in enumerate(zip(t.a, t.c)):
            s_n, pol, tau_n = sign_threshold(float(a), float(c), s.strict, t.reach)
            thresholds.append(s_n)
            polarity.append(pol)
            tau.append(math.inf if tau_n is None else tau_as_float(tau_n))
        tau = np.array(tau)
        tol = _tie_tolerance(t)
        self.layers.append(Threshold(tuple(thresholds), tuple(polarity)))
        self._report_ties(s, t, tau, tol)
        self.folds.append(ThresholdFold(len(self.layers) - 1, tau, tol, s.tensor, s.levels, s.zero, s.layout,
                                        s.order))
        self.t = _Tensor("binary", t.shape, np.ones(t.shape[0]), np.zeros(t.shape[0]))
        if t.flat is not None:
            self.flatten(FlattenStep(t.flat))

    def monotone(self, s: MonotoneStep) -> None:
        if self.t.kind != "scores":
            self._check_scores(s.where)
        self.monotone_tail = True

    # -- helpers ------------------------------------------------------------------------------

    def _per_channel_of_flat(self, s: AffineStep) -> AffineStep:
        """An affine map on a flattened pre-activation (one value per entry, C order) as one
        value per channel of the tensor before the flatten; refused if it varies within one."""
        t = self.t
        positions = int(np.prod(t.shape[1:]))
        out = []
        for v, what in ((s.mul, "factor"), (s.add, "summand")):
            v = np.asarray(v, dtype=np.float64)
            if v.ndim == 0:
                out.append(v)
                continue
            rows = v.reshape(t.shape[0], positions)
            if not np.all(rows == rows[:, :1]):
                raise RefusedError(f"{s.where}: a {what} that varies within a channel of the flattened "
                                   "pre-activation: one integer threshold per channel cannot express it")
            out.append(rows[:, 0])
        return AffineStep(s.where, out[0], out[1])

    def _binarised_input(self, s: SignStep) -> None:
        """A sign on the network input (FINN's 2x - 1 then BipolarQuant; Larq's input
        quantizer on the first layer): the model's input binarisation, docs/semantics.md §2.6.
        The decision a x + c > 0 (or >= 0) on integers |x| <= Z is x > s or x <= s."""
        t = self.t
        if self.input_threshold is not None:
            raise RefusedError(f"{s.where}: a second sign on the network input")
        if not (np.all(np.isfinite(t.a)) and np.all(np.isfinite(t.c))):
            raise RefusedError(f"{s.where}: the input's scale or offset is not finite")
        thresholds, polarity, near, zero_at = [], [], [], []
        tol = TIE_RELATIVE * max(1.0, float(np.max(np.abs(t.c / np.where(t.a == 0, 1, t.a)))))
        for c, (a, off) in enumerate(zip(t.a, t.c)):
            s_c, pol, tau = sign_threshold(float(a), float(off), s.strict, self.z)
            thresholds.append(s_c)
            polarity.append(pol)
            if tau is not None:
                f = tau_as_float(tau)
                near += [c] if abs(f - round(f)) <= tol and abs(round(f)) <= self.z and tau.denominator != 1 else []
                zero_at += [c] if s.zero and tau.denominator == 1 and abs(tau) <= self.z else []
        if near:
            self.notes.append(f"input binarisation ({s.where}): the threshold is within float rounding of an "
                              f"integer for channel(s) {_ids(np.array(near))}: the source may decide either way there")
        if zero_at:
            self.notes.append(f"input binarisation ({s.where}): Sign outputs 0 where the input equals its "
                              f"threshold for channel(s) {_ids(np.array(zero_at))}; refbnn gives "
                              f"{'+1' if not s.strict else '-1'} there")
        if len(t.shape) != len(self.input_shape):
            # the input was flattened first (FINN's FC models): one rule per entry, which
            # must be one rule per input channel, since the binarisation reads the raw input
            rows = np.array([thresholds, polarity]).reshape(2, self.input_shape[0], -1)
            if not np.all(rows == rows[:, :, :1]):
                raise RefusedError(f"{s.where}: an input binarisation that differs within an input channel")
            thresholds, polarity = list(rows[0, :, 0]), list(rows[1, :, 0])
        self.input_threshold = Threshold(tuple(int(v) for v in thresholds), tuple(int(v) for v in polarity))
        self.t = _Tensor("binary", t.shape, np.ones(t.shape[0]), np.zeros(t.shape[0]))

    def _sign_of_binary(self, s: SignStep) -> None:
        t = self.t
        low, high = t.c - t.a, t.c + t.a             # the values for s = -1 and s = +1
        if s.zero and np.any((low == 0) | (high == 0)):
            raise RefusedError(f"{s.where}: a sign of a binary tensor with a level 0 outputs three values")
        up_low = (low > 0) if s.strict else (low >= 0)
        up_high = (high > 0) if s.strict else (high >= 0)
        if np.any(up_low == up_high):
            raise RefusedError(f"{s.where}: a sign of a binary tensor that is constant (levels {_sample(low)}, "
                               f"{_sample(high)})")
        t.a = np.where(up_high, 1.0, -1.0)
        t.c = np.zeros_like(t.a)

    def _report_ties(self, s: SignStep, t: _Tensor, tau: np.ndarray, tol: float) -> None:
        layer = len(self.layers) - 1
        finite = np.isfinite(tau)
        tau = np.where(finite, tau, 0.0)            # constant channels: no tie to report
        near = finite & (np.abs(tau - np.round(tau)) <= tol) & (np.abs(np.round(tau)) <= t.reach)
        if np.any(near):
            ids = np.flatnonzero(near)
            self.notes.append(f"layer {layer} ({s.where}): tau within float rounding (+-{tol:.3g}) of an integer "
                              f"for {len(ids)} channel(s) {_ids(ids)}: the source framework may decide "
                              "either way where h equals it (a float tie)")
        if s.zero:
            exact_int = finite & (tau == np.round(tau)) & (np.abs(tau) <= t.reach)
            if np.any(exact_int):
                ids = np.flatnonzero(exact_int)
                self.notes.append(f"layer {layer} ({s.where}): Sign outputs 0 where h equals tau, an integer, "
                                  f"for {len(ids)} channel(s) {_ids(ids)}; refbnn gives "
                                  f"{'+1' if not s.strict else '-1'} there")
        constant = ~finite
        if np.any(constant):
            ids = np.flatnonzero(constant)
            self.notes.append(f"layer {layer} ({s.where}): {len(ids)} channel(s) {_ids(ids)} have a constant "
                              "output (scale 0, e.g. gamma = 0)")

    def _check_scores(self, where: str) -> None:
        t = self.t
        if not (np.all(np.isfinite(t.a)) and np.all(np.isfinite(t.c))):
            raise RefusedError(f"{where}: the class scores have a NaN or infinite scale or offset")
        if t.kind != "pre" or t.clip is not None:
            raise RefusedError(f"{where}: the class scores must be the last weight layer's output, "
                               f"got {self._what(t)}")
        if not (np.all(t.a == t.a[0]) and t.a[0] > 0):
            raise RefusedError(f"{self.output_where}: the output layer's scale differs between classes or is "
                               f"not positive ({_sample(t.a)}): that changes the prediction")
        if not np.all(t.c == t.c[0]):
            raise RefusedError(f"{self.output_where}: a bias on the output layer ({_sample(t.c)}) changes the "
                               "prediction; refbnn's class scores have none")
        t.kind = "scores"

    def _shape_after(self, where: str) -> tuple[int, ...]:
        try:
            return infer_shapes(self.input_shape, tuple(self.layers))[-1]
        except ModelError as e:
            raise RefusedError(f"{where}: {e}") from None

    @staticmethod
    def _what(t: _Tensor) -> str:
        return {"input": "the network input", "pre": "a pre-activation", "binary": "a binary tensor",
                "scores": "the class scores"}[t.kind]

    def finish(self) -> Model:
        if self.t.kind != "scores":
            self._check_scores("the graph's output")
        try:
            return Model.build(self.input_shape, self.z, self.layers, self.input_threshold)
        except ModelError as e:
            raise RefusedError(f"the folded model: {e}") from None


def _tie_tolerance(t: _Tensor) -> float:
    """How far (in units of h) a float evaluation may be off: a few float32 roundings of
    the terms; more when h itself is a rounded float sum (weights or input not powers of 2)."""
    with np.errstate(over="ignore"):        # |c/a| past the float range: an infinite tolerance, no tie
        tol = TIE_RELATIVE / 16 * max(1.0, float(np.max(np.abs(t.c / np.where(t.a == 0, 1, t.a)))))
    if not t.exact:
        tol += TIE_RELATIVE * max(1, t.reach)
    return tol


def _sample(v: np.ndarray, k: int = 3) -> str:
    v = np.asarray(v).ravel()
    shown = ", ".join(f"{x:.6g}" for x in v[:k])
    return f"[{shown}{', ...' if len(v) > k else ''}]"


def _ids(ids: np.ndarray, k: int = 8) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:k])
    return f"[{shown}{', ...' if len(ids) > k else ''}]"


_HANDLERS = {WeightStep: "weight", AffineStep: "affine", BatchNormStep: "batchnorm", ClipStep: "clip",
             PoolStep: "pool", FlattenStep: "flatten", SignStep: "sign", MonotoneStep: "monotone",
             RoundStep: "round_input"}


def fold(steps: Sequence[Step], input_shape: Sequence[int], z: int, input_a=1.0, input_c=0.0,
         output_tensor: Optional[str] = None) -> Imported:
    """The integer model computing what `steps` compute on u = input_a * x + input_c
    (per input channel), for integer inputs |x| <= z (docs/semantics.md §10).

    Raises RefusedError, naming the step, for anything refbnn cannot represent exactly."""
    if not isinstance(z, int) or isinstance(z, bool) or z < 1:
        raise RefusedError(f"--z: the input range Z must be a positive integer, got {z!r}")
    folder = _Folder(tuple(int(d) for d in input_shape), z, input_a, input_c)
    for s in steps:
        if folder.t.kind == "scores" and not isinstance(s, (AffineStep, MonotoneStep)):
            raise RefusedError(f"{s.where}: a step after the class scores' softmax")
        getattr(folder, _HANDLERS[type(s)])(s)
    model = folder.finish()
    return Imported(model, folder.notes, folder.folds, output_tensor)


