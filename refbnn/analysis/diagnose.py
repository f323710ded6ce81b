"""Where and why another implementation differs (docs/semantics.md §11): the first
divergence of a trace, one-line patterns among the differences, and the alternative
conventions (refbnn.analysis.conventions) that reproduce the other side exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..formats.tracefile import Trace
from ..semantics.model import Conv2d, MaxPool2d, Model, Threshold
from .conventions import REGISTRY, Variant, VariantEngine, combine


@dataclass
class ArrayResult:
    """One trace array compared with refbnn: how many entries differ, the first, and patterns."""

    name: str
    entries: int
    differ: int = 0
    first: Optional[dict] = None
    patterns: list[str] = field(default_factory=list)
    compared: bool = True

    def as_json(self) -> dict:
        return {"array": self.name, "compared": self.compared, "entries": self.entries, "differ": self.differ,
                "first": self.first, "patterns": self.patterns}


@dataclass
class Match:
    """An alternative convention (or a pair) under which the other side's numbers are reproduced."""

    names: tuple[str, ...]

    def sentence(self, what: str) -> str:
        conv = [REGISTRY[n] for n in self.names]
        theirs = " and ".join(c.theirs for c in conv)
        contract = "; ".join(c.contract for c in conv)
        return f"your {what} match refbnn exactly if {theirs}; {contract}"

    def as_json(self) -> dict:
        return {"conventions": list(self.names), "theirs": [REGISTRY[n].theirs for n in self.names],
                "contract": [REGISTRY[n].contract for n in self.names]}


# -- the forward pass on refbnn's side -------------------------------------------------------

def reference_arrays(model: Model, x: np.ndarray, variant: Variant = Variant(),
                     given: Optional[Trace] = None) -> dict[str, np.ndarray]:
    """h{l}, a{l}, scores and predictions as refbnn computes them (under `variant`). With
    `given` (independent mode), each threshold layer's input is computed from the other
    side's own previous a{l'} where the trace holds it."""
    engine = VariantEngine(model, variant)
    out: dict[str, list] = {}
    for start in range(0, len(x), engine.batch_size):
        xb = x[start:start + engine.batch_size]
        if given is None:
            hs, acts, scores = engine.run(xb)
        else:
            hs, acts, scores = _independent(model, engine, xb, given, slice(start, start + len(xb)))
        for l, h in hs.items():
            out.setdefault(f"h{l}", []).append(h)
        for l, a in acts.items():
            out.setdefault(f"a{l}", []).append(a)
        out.setdefault("scores", []).append(scores)
        out.setdefault("predictions", []).append(engine.predicted(scores))
    return {k: np.concatenate(v) for k, v in out.items()}


def _independent(model: Model, engine: VariantEngine, xb, given: Trace, sl: slice):
    """Each block run from the other side's previous activations (where given)."""
    hs, acts = {}, {}
    a = np.asarray(xb, dtype=np.float64)
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Threshold):
            hs[i] = a
            a = engine.threshold_outputs(layer, a)
            acts[i] = a
            if i in given.a:
                a = given.a[i][sl].astype(np.float64)
        else:
            a = engine.run_layer(i, a)
    return hs, acts, a.reshape(len(a), -1)


# -- comparing -------------------------------------------------------------------------------

def _border(model: Model, l: int, shape: tuple[int, ...], before_threshold: bool) -> Optional[np.ndarray]:
    """Positions of the tensor entering (or leaving) threshold layer l whose receptive field
    touches the padding of the conv layer that feeds it; None if that conv has no padding."""
    w = max(i for i in range(l) if hasattr(model.layers[i], "weight"))
    conv = model.layers[w]
    if not isinstance(conv, Conv2d) or conv.padding == 0 or len(model.shapes[w]) != 3:
        return None
    ho, wo = model.shapes[w][1:]
    p = conv.padding
    mask = np.zeros((ho, wo), dtype=bool)
    mask[:p, :], mask[-p:, :], mask[:, :p], mask[:, -p:] = True, True, True, True
    if any(isinstance(model.layers[i], MaxPool2d) for i in range(w + 1, l)):
        mask = mask[:ho // 2 * 2, :wo // 2 * 2].reshape(ho // 2, 2, wo // 2, 2).any(axis=(1, 3))
    return mask if mask.shape == tuple(shape[-2:]) else None


def _patterns(model: Model, name: str, ours: np.ndarray, theirs: np.ndarray, differ: np.ndarray,
              h_ours: Optional[np.ndarray]) -> list[str]:
    out = []
    n = int(differ.sum())
    d_ours, d_theirs = ours[differ], theirs[differ]
    if name[0] in "hs" and n:
        delta = d_theirs - d_ours
        if np.all(delta == delta[0]):
            out.append(f"all {n} differences are the same offset: got = expected {'+' if delta[0] > 0 else '-'} "
                       f"{abs(int(delta[0]))}")
        elif np.all(d_theirs == -d_ours):
            out.append(f"all {n} differences are negations: got = -expected")
        elif np.all(d_ours != 0) and np.all(d_theirs % np.where(d_ours == 0, 1, d_ours) == 0):
            ratio = d_theirs // d_ours
            if np.all(ratio == ratio[0]):
                out.append(f"all {n} differences are a factor: got = {int(ratio[0])} x expected")
    if name[0] in "ha" and n:
        l = int(name[1:])
        thr = model.layers[l]
        channel = np.broadcast_to(np.arange(ours.shape[1]).reshape((1, -1) + (1,) * (ours.ndim - 2)), ours.shape)
        if name[0] == "a" and h_ours is not None and h_ours.shape == ours.shape:
            s = np.array(thr.thresholds).reshape((1, -1) + (1,) * (ours.ndim - 2))
            tie = np.broadcast_to(h_ours == s, ours.shape)
            if np.all(tie[differ]):
                out.append(f"all {n} differences are at h = s (a threshold tie; refbnn gives -1 there "
                           "for polarity +1)")
        negative = np.array([p < 0 for p in thr.polarity])
        if negative.any() and np.all(negative[channel[differ]]):
            out.append(f"all {n} differences are in channels with polarity -1")
        if ours.ndim == 4:
            border = _border(model, l, ours.shape, name[0] == "h")
            if border is not None:
                at_border = np.broadcast_to(border, ours.shape)[differ]
                if np.all(at_border):
                    out.append(f"all {n} differences are at border positions (where the padding enters)")
    return out


def _first(name: str, differ: np.ndarray, ours: np.ndarray, theirs: np.ndarray) -> dict:
    idx = np.unravel_index(int(np.argmax(differ.reshape(-1))), differ.shape)
    first = {"input": int(idx[0])}
    if len(idx) > 1 and name not in ("scores",):
        first["channel"] = int(idx[1])
    elif name == "scores":
        first["class"] = int(idx[1])
    if len(idx) == 4:
        first["position"] = [int(idx[2]), int(idx[3])]
    first["expected"], first["got"] = int(ours[idx]), int(theirs[idx])
    return first


def compare_trace(model: Model, x: np.ndarray, trace: Trace, mode: str = "first") -> list[ArrayResult]:
    """Every trace array against refbnn's, in layer order. mode "first": against refbnn's own
    run, and the arrays after the first that differs are not compared (one early bug would
    flood them); "independent": each layer computed from the other side's previous a{l}."""
    ref = reference_arrays(model, x, given=trace if mode == "independent" else None)
    results, diverged = [], False
    for name in trace.names():
        theirs = _trace_array(trace, name)
        ours = ref[name].astype(np.int64)
        r = ArrayResult(name, int(theirs.size))
        if diverged and mode == "first":
            r.compared = False
            results.append(r)
            continue
        differ = ours != theirs
        r.differ = int(differ.sum())
        if r.differ:
            r.first = _first(name, differ, ours, theirs)
            h_ours = ref.get(f"h{name[1:]}") if name[0] == "a" else None
            r.patterns = _patterns(model, name, ours, theirs, differ, h_ours)
            if name == "predictions":
                r.patterns += _tie_pattern(ref["scores"], differ)
            diverged = True
        results.append(r)
    return results


def _tie_pattern(scores: np.ndarray, differ: np.ndarray) -> list[str]:
    top = np.sort(scores, axis=1)
    tied = top[:, -1] == top[:, -2] if scores.shape[1] > 1 else np.zeros(len(scores), bool)
    if differ.any() and np.all(tied[differ]):
        return [f"all {int(differ.sum())} differing predictions have tied top scores (the argmax tie rule)"]
    return []


def _trace_array(trace: Trace, name: str) -> np.ndarray:
    if name == "scores":
        return trace.scores
    if name == "predictions":
        return trace.predictions
    return (trace.h if name[0] == "h" else trace.a)[int(name[1:])].astype(np.int64)


# -- the conventions that explain a difference ---------------------------------------------------

def forward_alternatives(pairs: bool = True) -> list[tuple[tuple[str, ...], Variant]]:
    """The registry's forward-pass alternatives, single and (where they combine) in pairs."""
    single = [((c.name,), c.variant) for c in REGISTRY.values() if c.variant.forward or c.variant.argmax_last]
    out = list(single)
    if pairs:
        for k, (na, va) in enumerate(single):
            for nb, vb in single[k + 1:]:
                v = combine(va, vb)
                if v is not None:
                    out.append((na + nb, v))
    return out


def diagnose_trace(model: Model, x: np.ndarray, trace: Trace) -> list[Match]:
    """The alternatives (single first, then pairs) under which every trace array is reproduced."""
    matches = []
    for names, v in forward_alternatives():
        if any(set(m.names) <= set(names) for m in matches):
            continue     # a pair that only adds to a match already found
        ref = reference_arrays(model, x, v)
        if all(np.array_equal(ref[n].astype(np.int64), _trace_array(trace, n)) for n in trace.names()):
            matches.append(Match(names))
    return matches
