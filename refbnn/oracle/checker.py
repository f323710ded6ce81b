"""`refbnn verify`: the oracle other implementations check their numbers against (docs/semantics.md §9).

A claims file is JSON in the layout `refbnn metrics --json` writes (any subset
of its keys), plus `predictions`. Each claimed number may be exact
(`{"exact": "p/q"}` or a "p/q" string: must match exactly) or a plain JSON
number (must lie within `atol` of the exact value).
"""
from __future__ import annotations

import json
from collections.abc import Sequence as SequenceABC
from fractions import Fraction
from typing import Any, Callable, Optional, Sequence

from ..biterrors.masks import ErrorModel
from ..biterrors.sweep import Summary, check_sweep_size, correct_under_errors
from ..engines.protocol import Engine
from ..formats.claimsfile import check_layout
from ..formats.datafile import Dataset
from ..formats.files import InputError, read_json
from ..formats.values import exact, parse_ber, parse_rational
from ..semantics.accuracy import accuracy
from ..semantics.importance import importance_variance
from ..semantics.margin import t_bar
from ..semantics.model import Model, NoNeuronsError
from .statistics import judge_accuracies


def read_claims(path: str) -> dict:
    """Read a claims file; unknown keys are an error (a typo must not pass silently)."""
    doc = read_json(path)
    check_layout(doc, path)
    return doc


class Replayed(SequenceABC):
    """The accuracy of each of `n` repetitions, computed when first read, in order: a check
    that stops at its first failure (the diagnosis) replays no repetition past it."""

    def __init__(self, n: int, one: Callable[[int], Fraction]):
        self.n, self.one, self.done = n, one, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, r):
        if isinstance(r, slice):
            return [self[k] for k in range(*r.indices(self.n))]
        if not 0 <= r < self.n:
            raise IndexError(r)
        while len(self.done) <= r:
            self.done.append(self.one(len(self.done)))
        return self.done[r]


class _FirstFailure(Exception):
    """Raised by a checker that stops at its first failing check."""


class _Checker:
    def __init__(self, path: str, atol: float, first_failure: bool = False, std_ddof: int = 1):
        self.path, self.atol, self.checks, self.first_failure = path, atol, [], first_failure
        self.std_ddof = std_ddof      # ddof of the spread over repetitions (1: the contract, §6)

    def _add(self, entry: dict) -> None:
        self.checks.append(entry)
        if self.first_failure and not entry["pass"]:
            raise _FirstFailure

    def number(self, field: str, claimed: Any, truth: Fraction) -> None:
        if isinstance(claimed, float):
            ok = abs(claimed - float(truth)) <= self.atol
            shown = repr(claimed)
        else:
            value = claimed["exact"] if isinstance(claimed, dict) and "exact" in claimed else claimed
            try:
                if isinstance(value, bool) or not isinstance(value, (str, int)):
                    raise ValueError
                q = Fraction(value) if isinstance(value, int) else parse_rational(value, field)
            except ValueError:
                raise InputError(f"{self.path}: {field}: expected {{\"exact\": \"p/q\"}} or a number, "
                                 f"got {json.dumps(claimed)[:40]}") from None
            ok = q == truth
            shown = f"{q.numerator}/{q.denominator}"
        self._add({"quantity": field, "claimed": shown, "exact": exact(truth), "pass": bool(ok)})

    def close(self, field: str, claimed: Any, truth: float | None) -> None:
        """A float that refbnn itself writes as a float (std, interval ends): within atol."""
        if truth is None:
            ok, shown = claimed is None, json.dumps(claimed)[:40]
        elif isinstance(claimed, bool) or not isinstance(claimed, (int, float)):
            raise InputError(f"{self.path}: {field}: expected a number")
        else:
            ok, shown = abs(claimed - truth) <= self.atol, repr(claimed)
        self._add({"quantity": field, "claimed": shown, "exact": truth, "pass": bool(ok)})

    def same(self, field: str, claimed: Any, truth: Any) -> None:
        """A descriptive field (a type name, a flag): equal in value and JSON type."""
        if type(claimed) is not type(truth):
            raise InputError(f"{self.path}: {field}: expected {type(truth).__name__}, got {json.dumps(claimed)[:40]}")
        self._add({"quantity": field, "claimed": claimed, "exact": truth, "pass": claimed == truth})

    def integer(self, field: str, claimed: Any, truth: int) -> None:
        if isinstance(claimed, bool) or not isinstance(claimed, int):
            raise InputError(f"{self.path}: {field}: expected an integer")
        self._add({"quantity": field, "claimed": claimed, "exact": truth, "pass": claimed == truth})

    def listed(self, field: str, claimed: Any, n: int) -> list:
        if not isinstance(claimed, list) or len(claimed) != n:
            raise InputError(f"{self.path}: {field}: expected a list of {n} entries")
        return claimed

    def bmap(self, field: str, claimed: Any) -> dict[str, Fraction]:
        if not isinstance(claimed, dict) or not claimed:
            raise InputError(f"{self.path}: {field}: expected an object from b to value")
        out = {}
        for name in claimed:
            try:
                out[name] = parse_rational(name, field)
            except ValueError:
                raise InputError(f"{self.path}: {field}: key {name[:40]!r} is not a rational b") from None
            if out[name] < 0:
                raise InputError(f"{self.path}: {field}: b = {name} is negative")
        return out


def _as_fraction(c: _Checker, field: str, value: Any) -> Fraction:
    """A claimed accuracy as a number (their own draws: checked for consistency only)."""
    if isinstance(value, dict) and "exact" in value:
        value = value["exact"]
    try:
        if isinstance(value, bool):
            raise ValueError
        return Fraction(value) if isinstance(value, (int, float)) else parse_rational(str(value), field)
    except (ValueError, TypeError):
        raise InputError(f"{c.path}: {field}: expected an accuracy") from None


def check_claims(engine: Engine, model: Model, data: Dataset, claims: dict, path: str, atol: float,
                 variance: Callable[[Sequence[Fraction]], Fraction] = importance_variance,
                 bit_error_accuracies: Optional[Callable[[ErrorModel, int], list[Fraction]]] = None,
                 alpha: float = 0.01, first_failure: bool = False, std_ddof: int = 1) -> list[dict]:
    """Recompute every claimed quantity with `engine` and compare; one entry per number.

    `variance` (eq. 6) and `bit_error_accuracies(em, reps)` (the accuracy of each repetition
    under keyed masks) can be replaced, so that `refbnn.oracle.diagnose` can recompute
    the claims under an alternative convention; `alpha` is the level of the statistical
    tests for bit error claims drawn with another generator (docs/semantics.md §11.3).
    With `first_failure`, stop at the first failing check (the diagnosis only asks whether
    everything passes): the checks so far are returned, the failing one last."""
    check_layout(claims, path)    # claims built in Python (diagnose, profile) skip read_claims
    c = _Checker(path, atol, first_failure, std_ddof)
    try:
        _check_all(c, engine, model, data, claims, variance, bit_error_accuracies, alpha)
    except _FirstFailure:
        pass
    return c.checks


def _check_all(c: _Checker, engine: Engine, model: Model, data: Dataset, claims: dict,
               variance: Callable[[Sequence[Fraction]], Fraction],
               bit_error_accuracies: Optional[Callable[[ErrorModel, int], Sequence[Fraction]]], alpha: float) -> None:
    path = c.path
    x, y = data.x, data.y
    if "inputs" in claims:
        c.integer("inputs", claims["inputs"], len(y))
    if "neurons" in claims:
        c.integer("neurons", claims["neurons"], model.neurons)
    if "predictions" in claims or "accuracy" in claims:
        preds = [int(p) for p in engine.predictions(x)]
        if "predictions" in claims:
            for i, p in enumerate(c.listed("predictions", claims["predictions"], len(y))):
                c.integer(f"predictions[{i}]", p, preds[i])
        if "accuracy" in claims:
            c.number("accuracy", claims["accuracy"], accuracy(preds, y))
    bs: dict[str, Fraction] = {}
    if "T" in claims:
        bs.update(c.bmap("T", claims["T"]))
    layers = claims.get("layers")
    if layers is not None:
        c.listed("layers", layers, len(model.neuron_layers))
        for l, (entry, nl) in enumerate(zip(layers, model.neuron_layers)):
            facts = {"layer": nl.threshold_index, "weight_layer": nl.weight_index, "neurons": nl.channels,
                     "positions": nl.positions}
            for key, truth in facts.items():
                if key in entry:
                    c.integer(f"layers[{l}].{key}", entry[key], truth)
            if "type" in entry:
                c.same(f"layers[{l}].type", entry["type"], model.layers[nl.weight_index].type)
            if "first" in entry:
                c.same(f"layers[{l}].first", entry["first"], nl.first)
            if "T" in entry:
                bs.update(c.bmap(f"layers[{l}].T", entry["T"]))
    if bs:
        values = sorted(set(bs.values()))
        try:
            tol = engine.tolerance(x, values)
        except NoNeuronsError as e:
            raise InputError(f"{path}: T: {e}") from None
        if "T" in claims:
            T = {name: tol.overall[bs[name]] for name in claims["T"]}
            for name, v in claims["T"].items():
                c.number(f"T[{name}]", v, T[name])
            if "T_bar" in claims:
                c.number("T_bar", claims["T_bar"], t_bar(T))
        for l, entry in enumerate(layers or []):
            lt = {name: tol.layers[l][bs[name]] for name in entry.get("T", {})}
            for name, v in entry.get("T", {}).items():
                c.number(f"layers[{l}].T[{name}]", v, lt[name])
            if "T_bar" in entry and lt:
                c.number(f"layers[{l}].T_bar", entry["T_bar"], t_bar(lt))
    if "importance" in claims or "var_importance" in claims:
        pi = engine.importance(x, y)
        if "importance" in claims:
            for n, v in enumerate(c.listed("importance", claims["importance"], model.neurons)):
                c.number(f"importance[{n}]", v, pi[n])
        if "var_importance" in claims:
            c.number("var_importance", claims["var_importance"], variance(pi))
    if "bit_errors" in claims:
        _check_bit_errors(c, engine, model, data, claims["bit_errors"], bit_error_accuracies, alpha)
    if not c.checks:
        raise InputError(f"{path}: no claims to check")


def _check_bit_errors(c: _Checker, engine, model: Model, data: Dataset, claim: Any,
                      accuracies: Optional[Callable[[ErrorModel, int], list[Fraction]]], alpha: float) -> None:
    """Recompute each claimed accuracy under the keyed masks (refbnn.biterrors), or, for
    claims drawn with another generator ("rng": "other"), judge them statistically."""
    where = "bit_errors"     # the layout is checked (formats.claimsfile); here the values
    seed, size = claim.get("seed", 0), claim.get("batch_size", 128)
    layers, acts = claim.get("layers"), claim.get("activations", False)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"{c.path}: {where}.seed: expected a non-negative integer")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 2**20:
        raise InputError(f"{c.path}: {where}.batch_size: expected an integer in 1..2^20")
    if "inputs" in claim:
        c.integer(f"{where}.inputs", claim["inputs"], len(data.y))
    if layers is not None and (not isinstance(layers, list) or any(l not in model.weight_indices for l in layers)):
        raise InputError(f"{c.path}: {where}.layers: expected null or a list of weight layer indices "
                         f"({', '.join(map(str, model.weight_indices))})")
    if not isinstance(acts, bool):
        raise InputError(f"{c.path}: {where}.activations: expected true or false")
    rng = claim.get("rng", "refbnn")
    if rng not in ("refbnn", "other"):
        raise InputError(f"{c.path}: {where}.rng: expected \"refbnn\" (keyed masks, replayed exactly) or "
                         "\"other\" (another generator, judged statistically)")
    n = len(data.y)
    for k, entry in enumerate(claim["results"]):
        field = f"{where}.results[{k}]"
        try:
            p = parse_ber(entry["ber"], f"{field}.ber")
        except ValueError as e:
            raise InputError(f"{c.path}: {e}") from None
        claimed = entry["accuracies"]
        em = ErrorModel(p, seed, size, None if layers is None else tuple(layers), acts)
        check_sweep_size(model, n, len(claimed), 1, em, f"{c.path}: {field}.accuracies")
        if rng == "other":
            truths = [_as_fraction(c, f"{field}.accuracies[{r}]", v) for r, v in enumerate(claimed)]
            verdict = judge_accuracies(engine, data.x, data.y, em, truths, alpha)
            c.checks.append({"quantity": f"{field}.accuracies", "claimed": f"mean {verdict['their_mean']:.6g}",
                             "exact": f"{verdict['test']}: p = {verdict['p_value']:.3g}", "pass": verdict["pass"],
                             "statistics": verdict})
        elif accuracies is not None:
            truths = accuracies(em, len(claimed))
        else:
            truths = Replayed(len(claimed), lambda r, em=em: Fraction(correct_under_errors(engine, data.x, data.y,
                                                                                              em, r), n))
        if rng == "refbnn":
            for r, value in enumerate(claimed):
                c.number(f"{field}.accuracies[{r}]", value, truths[r])
        summary = Summary(entry["ber"], truths, ddof=c.std_ddof)
        if "reps" in entry:
            c.integer(f"{field}.reps", entry["reps"], len(truths))
        for key, truth in (("mean", summary.mean), ("min", min(truths)), ("max", max(truths))):
            if key in entry:
                c.number(f"{field}.{key}", entry[key], truth)
        if "std" in entry:
            c.close(f"{field}.std", entry["std"], summary.std)
        if "ci95" in entry:
            ci = summary.ci95
            claimed_ci = entry["ci95"]
            if ci is None or claimed_ci is None:
                c.close(f"{field}.ci95", claimed_ci, None if ci is None else ci[0])
            elif not isinstance(claimed_ci, list) or len(claimed_ci) != 2:
                raise InputError(f"{c.path}: {field}.ci95: expected null or [low, high]")
            else:
                c.close(f"{field}.ci95[0]", claimed_ci[0], ci[0])
                c.close(f"{field}.ci95[1]", claimed_ci[1], ci[1])
