"""Recognising binarisations: Sign, comparisons with Where or Cast, Not, and the QONNX
quantizers (BipolarQuant, 1-bit Quant, one-step MultiThreshold) become sign steps with
their value at the tie."""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np

from ..fold import RefusedError
from ..steps import AffineStep, SignStep
from .symbols import OpsBase, Sym, attrs

QUANT_CUTS = {   # 1-bit unsigned Quant: clamp y to [0, 1], then round; high iff y > cut (strict) or >= cut
    "ROUND": (0.5, True), "HALF_EVEN": (0.5, True), "HALF_UP": (0.5, False), "HALF_DOWN": (0.5, True),
    "CEIL": (0.0, True), "FLOOR": (1.0, False), "UP": (0.0, True), "DOWN": (1.0, False)}


def _sign_of_shifted_sign(steps: tuple) -> Optional[tuple[tuple, float]]:
    """(steps before the inner Sign, c) when `steps` end in Sign (with its 0) then + c,
    0 < |c| < 1, the same c for every channel; else None."""
    if len(steps) < 2 or not isinstance(steps[-2], SignStep) or not steps[-2].zero:
        return None
    shift = steps[-1]
    if not isinstance(shift, AffineStep) or np.any(np.asarray(shift.mul) != 1):
        return None
    add = np.ravel(np.asarray(shift.add, dtype=np.float64))
    if not (np.all(add == add[0]) and 0 < abs(add[0]) < 1):
        return None
    return steps[:-2], float(add[0])


class BinariseOps(OpsBase):
    """One method per op: op_<OpType>(node, name) returns the output's Sym."""

    def op_Sign(self, node, name):
        x = self._act(node, name)
        idiom = _sign_of_shifted_sign(x.steps)
        if idiom is not None:
            # Sign(Sign(v) + c), 0 < |c| < 1 (Larq's ste_sign through tf2onnx): +-1 stay, and
            # Sign's 0 at v = 0 becomes sign(c): one binarisation, v >= 0 for c > 0, v > 0 for c < 0
            inner, c = idiom
            return x.derive(x.steps[:-2] + (SignStep(name, strict=c < 0, **self._seen_at(x, node.output[0])),),
                            base=inner)
        return self._then(x, SignStep(name, strict=True, zero=True, **self._seen_at(x, node.output[0])),
                          base=x.steps)

    @staticmethod
    def _seen_at(x: Sym, tensor: Optional[str]) -> dict:
        """Where `--check` reads a sign's output in the source: the tensor, and its layout or
        entry order where the source holds it otherwise than refbnn."""
        if tensor is None:
            return {}
        return {"tensor": tensor, "layout": x.layout, "order": x.order}

    def _compare(self, node, name, strict: bool, greater: bool):
        x, const, pos = self._one_act(node, name)
        if x.kind != "act":
            raise RefusedError(f"{name}: comparison of a {x.kind} tensor")
        v = self._channels(const, x, name)
        # x > c is x - c > 0; c > x (x < c) is c - x > 0.
        if greater == (pos == 0):
            step = AffineStep(name, add=-v)
        else:
            step = AffineStep(name, mul=np.float64(-1), add=v)
        return x.derive(x.steps + (step,), kind="cond", strict=strict, base=x.steps)

    def op_Greater(self, node, name):
        return self._compare(node, name, True, True)

    def op_GreaterOrEqual(self, node, name):
        return self._compare(node, name, False, True)

    def op_Less(self, node, name):
        return self._compare(node, name, True, False)

    def op_LessOrEqual(self, node, name):
        return self._compare(node, name, False, False)

    def op_Not(self, node, name):
        c = self.sym[node.input[0]]
        if c.kind != "cond":
            raise RefusedError(f"{name}: Not of a non-boolean tensor")
        # not (v > 0) is -v >= 0, and not (v >= 0) is -v > 0.
        return replace(c, steps=c.steps + (AffineStep(name, mul=np.float64(-1)),), strict=not c.strict)

    def _binarise(self, c: Sym, name: str, tensor: str, low, high) -> Sym:
        """The two-level tensor `high` where cond holds, else `low`."""
        low = self._channels(low, c, name)
        high = self._channels(high, c, name)
        if np.any(np.asarray(low) == np.asarray(high)):
            raise RefusedError(f"{name}: both branches equal: a constant, not an activation")
        levels = (float(np.ravel(low)[0]), float(np.ravel(high)[0]))
        sign = SignStep(name, strict=c.strict, levels=levels,
                        **self._seen_at(c, tensor if np.ndim(low) == 0 and np.ndim(high) == 0 else None))
        affine = AffineStep(name, mul=(np.asarray(high) - np.asarray(low)) / 2, add=(np.asarray(high) + low) / 2)
        return c.derive(c.steps + (sign, affine), base=c.base)

    def op_Where(self, node, name):
        c = self.sym.get(node.input[0])
        if c is None or c.kind != "cond" or node.input[1] not in self.const or node.input[2] not in self.const:
            raise RefusedError(f"{name}: Where needs a comparison and two constant branches")
        return self._binarise(c, name, node.output[0], self.const[node.input[2]], self.const[node.input[1]])

    def op_Cast(self, node, name):
        c = self.sym[node.input[0]]
        if c.kind == "cond":
            return self._binarise(c, name, node.output[0], np.float64(0), np.float64(1))
        if c.kind == "act":
            return c      # a float-to-float cast
        raise RefusedError(f"{name}: cast of a {c.kind} tensor")

    def op_BipolarQuant(self, node, name):
        x = self._act(node, name)
        scale = self._channels(self._const_input(node, 1, name), x, name)
        if np.any(np.asarray(scale) <= 0):
            raise RefusedError(f"{name}: a scale that is not positive")
        cond = x.derive(x.steps, kind="cond", strict=False, base=x.steps)
        return self._binarise(cond, name, node.output[0], -np.asarray(scale), np.asarray(scale))

    def op_Quant(self, node, name):
        x = self._act(node, name)
        a = attrs(node)
        scale, zeropt, bits = (self._const_input(node, k, name) for k in (1, 2, 3))
        if not np.all(bits == 1):
            raise RefusedError(f"{name}: a quantizer of {int(np.ravel(bits)[0])} bits gives activations with more "
                               "than two levels; refbnn's activations are +-1 (a 1-bit quantizer is representable)")
        scale = self._channels(scale, x, name)
        zeropt = self._channels(zeropt, x, name)
        if np.any(np.asarray(scale) <= 0):
            raise RefusedError(f"{name}: a scale that is not positive")
        if a.get("signed", 1):
            qlo, qhi, cut, strict = -1.0, 1.0, 0.0, False    # qonnx: 1-bit signed is bipolar, y >= 0
        else:
            if a.get("narrow", 0):
                raise RefusedError(f"{name}: a 1-bit unsigned narrow quantizer is constant")
            mode = a.get("rounding_mode", b"ROUND")
            mode = (mode.decode() if isinstance(mode, bytes) else mode).upper()
            if mode not in QUANT_CUTS:
                raise RefusedError(f"{name}: rounding mode {mode!r}")
            cut, strict = QUANT_CUTS[mode]
            qlo, qhi = 0.0, 1.0
        # y = x / scale + zeropt is high iff y > cut (or >=): x - scale (cut - zeropt) > 0.
        shift = AffineStep(name, add=-np.asarray(scale) * (cut - np.asarray(zeropt)))
        cond = x.derive(x.steps + (shift,), kind="cond", strict=strict, base=x.steps)
        low = (qlo - np.asarray(zeropt)) * np.asarray(scale)
        high = (qhi - np.asarray(zeropt)) * np.asarray(scale)
        return self._binarise(cond, name, node.output[0], low, high)

    op_IntQuant = op_Quant

    def op_MultiThreshold(self, node, name):
        x = self._act(node, name)
        a = attrs(node)
        layout = a.get("data_layout", b"NCHW")
        layout = layout.decode() if isinstance(layout, bytes) else layout
        if layout not in ("", "NCHW", "NC"):
            raise RefusedError(f"{name}: data layout {layout!r}; refbnn reads channels first")
        t = np.asarray(self._const_input(node, 1, name), dtype=np.float64)
        if t.ndim != 2 or t.shape[1] != 1:
            raise RefusedError(f"{name}: {t.shape[-1] if t.ndim == 2 else '?'} thresholds per channel: "
                               "activations with more than two levels")
        # one threshold per channel: channels are axis 1 of [batch, C, H, W] (NCHW) or [batch, C]
        per_channel = t[:, 0].reshape((-1,) + (1,) * (len(x.actual_shape) - 1))
        thr = self._channels(per_channel if t.shape[0] > 1 else t[0, 0], x, name)
        cond = x.derive(x.steps + (AffineStep(name, add=-np.asarray(thr)),), kind="cond", strict=False,
                        base=x.steps)
        scale, bias = float(a.get("out_scale", 1.0)), float(a.get("out_bias", 0.0))
        return self._binarise(cond, name, node.output[0], np.float64(bias), np.float64(scale + bias))
