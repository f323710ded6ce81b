"""`refbnn verify`: the oracle other implementations check their numbers against.

A claims file is JSON in the layout `refbnn metrics --json` writes (any subset
of its keys), plus `predictions`. Each claimed number may be exact
(`{"exact": "p/q"}` or a "p/q" string: must match exactly) or a plain JSON
number (must lie within `atol` of the exact value).
"""
from __future__ import annotations

import json
import os
from fractions import Fraction
from typing import Any

from .datafile import Dataset
from .files import InputError
from .importance import accuracy, importance_variance
from .margin import t_bar
from .model import Model
from .report import exact

KNOWN = {"accuracy", "T", "T_bar", "layers", "importance", "var_importance", "predictions",
         "inputs", "neurons", "engine", "model", "data"}   # engine, model, data: informational


def read_claims(path: str) -> dict:
    """Read a claims file; unknown keys are an error (a typo must not pass silently)."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a JSON object of claims")
    unknown = sorted(set(doc) - KNOWN)
    if unknown:
        raise InputError(f"{path}: {unknown[0]}: unknown claim (known: {', '.join(sorted(KNOWN))})")
    return doc


class _Checker:
    def __init__(self, path: str, atol: float):
        self.path, self.atol, self.checks = path, atol, []

    def number(self, field: str, claimed: Any, truth: Fraction) -> None:
        if isinstance(claimed, float):
            ok = abs(claimed - float(truth)) <= self.atol
            shown = repr(claimed)
        else:
            value = claimed["exact"] if isinstance(claimed, dict) and "exact" in claimed else claimed
            try:
                if isinstance(value, bool) or not isinstance(value, (str, int)):
                    raise ValueError
                q = Fraction(value)
            except (ValueError, ZeroDivisionError):
                raise InputError(f"{self.path}: {field}: expected {{\"exact\": \"p/q\"}} or a number, "
                                 f"got {json.dumps(claimed)[:40]}") from None
            ok = q == truth
            shown = f"{q.numerator}/{q.denominator}"
        self.checks.append({"quantity": field, "claimed": shown, "exact": exact(truth), "pass": bool(ok)})

    def integer(self, field: str, claimed: Any, truth: int) -> None:
        if isinstance(claimed, bool) or not isinstance(claimed, int):
            raise InputError(f"{self.path}: {field}: expected an integer")
        self.checks.append({"quantity": field, "claimed": claimed, "exact": truth, "pass": claimed == truth})

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
                out[name] = Fraction(name)
            except (ValueError, ZeroDivisionError):
                raise InputError(f"{self.path}: {field}: key {name!r} is not a rational b") from None
            if out[name] < 0:
                raise InputError(f"{self.path}: {field}: b = {name} is negative")
        return out


def check_claims(engine, model: Model, data: Dataset, claims: dict, path: str, atol: float) -> list[dict]:
    """Recompute every claimed quantity with `engine` and compare; one entry per number."""
    c = _Checker(path, atol)
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
        for l, entry in enumerate(layers):
            if not isinstance(entry, dict):
                raise InputError(f"{path}: layers[{l}]: expected an object")
            if "T" in entry:
                bs.update(c.bmap(f"layers[{l}].T", entry["T"]))
    if "T_bar" in claims and not bs:
        raise InputError(f"{path}: T_bar: needs the claimed T (its b values) beside it")
    if bs:
        values = sorted(set(bs.values()))
        tol = engine.tolerance(x, values)
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
            c.number("var_importance", claims["var_importance"], importance_variance(pi))
    if not c.checks:
        raise InputError(f"{path}: no claims to check")
    return c.checks
