"""Where and why another implementation differs (docs/semantics.md §11): the first
divergence of a trace, one-line patterns among the differences, and the alternative
conventions (refbnn.oracle.conventions) that reproduce the other side exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..engines.ops import first_layer_input
from ..formats.tracefile import Trace
from ..semantics.model import Conv2d, MaxPool2d, Model, Threshold
from .conventions import REGISTRY, Variant, combine
from .variants import VariantEngine


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
    untested: Optional[str] = None       # what could not be recomputed under it, and why
    tested: Optional[str] = None         # the quantities it reproduces, where not all were tested

    def sentence(self, what: str) -> str:
        conv = [REGISTRY[n] for n in self.names]
        theirs = " and ".join(c.theirs for c in conv)
        contract = "; ".join(c.contract for c in conv)
        return f"your {self.tested or what} match refbnn exactly if {theirs}; {contract}" + \
            (f" ({self.untested})" if self.untested else "")

    def as_json(self) -> dict:
        out = {"conventions": list(self.names), "theirs": [REGISTRY[n].theirs for n in self.names],
               "contract": [REGISTRY[n].contract for n in self.names]}
        if self.untested:
            out["untested"] = self.untested
        return out


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
    a = np.asarray(first_layer_input(model, np.asarray(xb)), dtype=np.float64)
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

def _border(model: Model, l: int, shape: tuple[int, ...]) -> Optional[np.ndarray]:
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
            border = _border(model, l, ours.shape)
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

def forward_alternatives(model: Model, pairs: bool = True) -> list[tuple[tuple[str, ...], Variant]]:
    """The registry's forward-pass alternatives that can change something on `model`, single
    and (where they combine) in pairs."""
    single = [((c.name,), c.variant) for c in REGISTRY.values()
              if (c.variant.forward or c.variant.argmax_last) and _applicable(model, c.variant)]
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
    for names, v in forward_alternatives(model):
        if any(set(m.names) <= set(names) for m in matches):
            continue     # a pair that only adds to a match already found
        ref = reference_arrays(model, x, v)
        if all(np.array_equal(ref[n].astype(np.int64), _trace_array(trace, n)) for n in trace.names()):
            matches.append(Match(names))
    return matches


# -- claims ----------------------------------------------------------------------------------

FAMILY = {"accuracy": "forward", "predictions": "forward", "T": "T", "T_bar": "T", "layers": "T",
          "importance": "importance", "var_importance": "importance", "bit_errors": "bit_errors"}
_WORDS = {"accuracy": "accuracy", "predictions": "predictions", "T": "T", "T_bar": "T-bar", "layers": "per-layer T",
          "importance": "Pi", "var_importance": "VAR(Pi)", "bit_errors": "accuracies under bit errors"}
IMPORTANCE_BUDGET = 2**34     # multiply-adds one alternative's full Algorithm 1 may take


@dataclass
class Diagnosis:
    """The alternatives that reproduce the failing claims, and what was not tried and why."""

    matches: list[Match]
    what: str                    # the failing quantities, in words
    tried: int = 0
    skipped: list[str] = field(default_factory=list)
    closest: Optional[tuple[tuple[str, ...], list[str], list[str]]] = None   # (names, passing, failing) claims

    def lines(self) -> list[str]:
        if not self.matches:
            out = [f"diagnosis: no alternative convention reproduces your {self.what} "
                   f"({self.tried} tried; docs/semantics.md §11 lists them)"]
            if self.closest:
                names, passing, failing = self.closest
                theirs = " and ".join(REGISTRY[n].theirs for n in names)
                out.append(f"diagnosis: closest: if {theirs}, your {_words(passing)} match refbnn exactly; "
                           f"your {_words(failing)} still differ")
            return out
        return [f"diagnosis: {m.sentence(self.what)}" for m in self.matches]

    def as_json(self) -> dict:
        out = {"matches": [m.as_json() for m in self.matches], "tried": self.tried, "skipped": self.skipped}
        if self.closest:
            names, passing, failing = self.closest
            out["closest"] = {"conventions": list(names), "passing": passing, "failing": failing}
        return out


def _words(keys) -> str:
    words = [w for k, w in _WORDS.items() if k in keys] + sorted(set(keys) - set(_WORDS))
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def claim_key(quantity: str) -> str:
    """The top-level claim a checked quantity belongs to: "layers[0].T[2]" -> "layers"."""
    for sep in (".", "["):
        quantity = quantity.split(sep)[0]
    return quantity


def _applicable(model: Model, v: Variant) -> bool:
    """Whether a forward switch can change anything on this model (else it is not tried)."""
    layers = model.layers
    if v.pad is not None and not any(isinstance(l, Conv2d) and l.padding for l in layers):
        return False
    if v.swap_pool and not any(isinstance(l, MaxPool2d) for l in layers):
        return False
    if v.flatten_hwc and not any(len(s) == 3 and s[1] * s[2] > 1 for s in model.shapes):
        return False
    if v.no_polarity and not any(isinstance(l, Threshold) and -1 in l.polarity for l in layers):
        return False
    if v.pi_one_position and not any(nl.positions > 1 for nl in model.neuron_layers):
        return False
    return True


def candidates(model: Model, needed: set) -> list[tuple[tuple[str, ...], Variant, frozenset]]:
    """Single alternatives, then pairs, whose quantities cover every failing family."""
    single = [((c.name,), c.variant, c.affects) for c in REGISTRY.values() if _applicable(model, c.variant)]
    out = [s for s in single if needed <= s[2]]
    for k, (na, va, fa) in enumerate(single):
        for nb, vb, fb in single[k + 1:]:
            v = combine(va, vb)
            # both members must touch a failing quantity, or the pair is its other member again
            if v is not None and needed <= (fa | fb) and fa & needed and fb & needed:
                out.append((na + nb, v, fa | fb))
    return out


def diagnose_claims(model: Model, data, claims: dict, path: str, atol: float, checks: list[dict],
                    budget: int = IMPORTANCE_BUDGET) -> Diagnosis:
    """Recompute the claims under each alternative convention (docs/semantics.md §11.2) and
    return those under which every claim passes. Call only when some check failed."""
    from ..engines.fast import FastEngine

    failing = {claim_key(c["quantity"]) for c in checks if not c["pass"]}
    what = _words(failing)
    if not failing <= set(FAMILY):
        return Diagnosis([], what, skipped=[f"{', '.join(sorted(failing - set(FAMILY)))}: counts, not conventions"])
    needed = {FAMILY[k] for k in failing}
    diagnosis = Diagnosis([], what)
    fast = FastEngine(model)
    shared: dict = {}
    ordered = sorted(candidates(model, needed), key=lambda c: (len(c[0]), repr(c[1].signature)))
    signature = None
    for names, v, affects in ordered:
        if any(set(m.names) <= set(names) for m in diagnosis.matches):
            continue
        engine = VariantEngine(model, v, shared=shared)
        if v.signature != signature:       # keep one forward pass in memory at a time (and Pi)
            for key in [k for k in shared if isinstance(k, tuple) and isinstance(k[0], tuple)]:
                del shared[key]       # forward runs (keyed by a signature), not weights or Pi
            signature = v.signature
        sub = {k: val for k, val in claims.items() if FAMILY.get(k) in affects}
        untested = None
        if any(k in sub for k in ("importance", "var_importance")) and engine.importance_cost(len(data.y)) > budget:
            cost = engine.importance_cost(len(data.y))
            pi_keys = [k for k in ("importance", "var_importance") if k in sub]
            sub = {k: val for k, val in sub.items() if k not in pi_keys}
            untested = (f"your {_words(pi_keys)} were not recomputed under it: Algorithm 1 without the "
                        f"incremental engine would take {cost:.2g} multiply-adds")
            if not sub or not set(failing) - set(pi_keys):
                diagnosis.skipped.append(f"{' + '.join(names)}: {untested.split(': ', 1)[1]}")
                continue
        diagnosis.tried += 1
        if _reproduces(engine, fast, v, model, data, sub, path, atol):
            diagnosis.matches.append(Match(names, untested, _words(set(failing) - {"importance", "var_importance"})
                                           if untested else None))
    if not diagnosis.matches and len(failing) > 1:
        diagnosis.closest = _closest(model, data, claims, path, atol, failing, ordered, shared, fast, budget)
    return diagnosis


def differs_under(model: Model, data, claims: dict, variant: Variant, atol: float = 0.0) -> bool:
    """Whether an implementation with `variant`'s conventions would claim other numbers than
    `claims` (refbnn's own) on this model and data: some claim fails when recomputed under it."""
    from ..engines.fast import FastEngine

    return not _reproduces(VariantEngine(model, variant), FastEngine(model), variant, model, data, claims,
                           "claims", atol)


def _reproduces(engine: VariantEngine, fast, v: Variant, model: Model, data, claims: dict, path: str,
                atol: float) -> bool:
    """Whether every claim passes recomputed under `v` (checked up to the first failure: only
    the verdict matters). Bit errors are replayed on the variant's own forward pass where it
    differs from the contract's; a quantity undefined under `v` (A = 0, say) is no match."""
    from .checker import check_claims
    from .variants import bit_error_accuracies

    replay = engine if (v.forward or v.argmax_last) else fast
    try:
        checks = check_claims(engine, model, data, claims, path, atol, variance=engine.variance,
                              bit_error_accuracies=bit_error_accuracies(replay, data.x, data.y, v) if v.masks else None,
                              first_failure=True, std_ddof=0 if v.std_ddof0 else 1)
    except (ZeroDivisionError, ArithmeticError, ValueError):   # InputError is a ValueError
        return False
    return all(c["pass"] for c in checks)


def _closest(model: Model, data, claims: dict, path: str, atol: float, failing: set, ordered: list,
             shared: dict, fast, budget: int) -> Optional[tuple[tuple[str, ...], list[str], list[str]]]:
    """The single alternative under which the most failing claims pass (each claim checked
    up to its first failure), with those that pass and those that still fail; None if no
    alternative makes any failing claim pass."""
    best = None
    for names, v, affects in ordered:
        if len(names) != 1:
            continue
        engine = VariantEngine(model, v, shared=shared)
        keys = sorted(k for k in failing if FAMILY.get(k) in affects)
        if any(k in ("importance", "var_importance") for k in keys) and engine.importance_cost(len(data.y)) > budget:
            continue
        passing = [k for k in keys
                   if _reproduces(engine, fast, v, model, data,
                                  {k: claims[k], **({"T": claims["T"]} if k == "T_bar" else {})},   # T-bar averages T
                                  path, atol)]
        if passing and (best is None or len(passing) > len(best[1])):
            best = (names, passing, sorted(failing - set(passing)))
    return best


def failure_patterns(checks: list[dict]) -> list[str]:
    """One-line observations about which claims fail (docs/semantics.md §11.2)."""
    from fractions import Fraction

    bad = [c for c in checks if not c["pass"]]
    out = []
    whole_T = [c for c in checks if c["quantity"].startswith("T[")]
    layer_T = [c for c in checks if c["quantity"].startswith("layers[") and ".T[" in c["quantity"]]
    if whole_T and layer_T and all(c["pass"] for c in layer_T) and not all(c["pass"] for c in whole_T):
        out.append("per-layer T passes, whole-model T fails: the layers are averaged differently")
    t_checks = whole_T + layer_T
    if t_checks and any(not c["pass"] for c in t_checks):
        def b_of(c):
            return Fraction(c["quantity"].rsplit("[", 1)[1].rstrip("]"))
        failing_b = {b_of(c) for c in t_checks if not c["pass"]}
        passing_b = {b_of(c) for c in t_checks if c["pass"]}
        if all(b.denominator != 1 for b in failing_b) and any(b.denominator == 1 for b in passing_b):
            out.append("only non-integer b fail: T >= b against T > b? (a hidden margin is a half-integer, "
                       "so the two differ only there)")
    layers_bad = {c["quantity"].split("]")[0] for c in layer_T if not c["pass"]}
    if layers_bad == {"layers[0"} and len({c["quantity"].split("]")[0] for c in layer_T}) > 1:
        out.append("only the first layer's T fails: the 1/Z of eq. 2?")
    pos = [c for c in bad if c["quantity"].endswith(".positions")]
    if pos:
        out.append("a layer's positions (U*V) differ: pooling and threshold in another order?")
    if len(bad) > 1 and all(c["quantity"].startswith("importance[") or c["quantity"] == "var_importance"
                            for c in bad):
        out.append("only Pi fails, T and accuracy pass: the definition of Pi or of its variance")
    return out
