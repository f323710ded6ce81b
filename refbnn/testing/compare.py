"""A request, the claims it asks for, and the judgement of an implementation's claims
against refbnn (docs/semantics.md §12.1).

A request is JSON: `{"b": ["2", "1/2"], "importance": true, "bit_errors": null}` or with
`"bit_errors": {"ber": ["0.05"], "reps": R, "seed": S, "batch_size": B, "activations": false}`.
It asks for `accuracy`, `predictions`, `T` at every b, `T_bar`, `layers[l].T` at every b
for every threshold layer, with `importance` also `importance` and `var_importance`, and
with `bit_errors` the keyed-mask sweep: `seed`, `batch_size`, `activations` as asked and,
per BER, `accuracies` (one per repetition), `mean` and `std`. Claims it does not ask
for are not checked; claims it asks for and the file lacks are a finding.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..biterrors.masks import ErrorModel
from ..biterrors.sweep import accuracy_sweep, check_sweep_size
from ..engines.fast import FastEngine
from ..formats.claimsfile import check_layout
from ..formats.datafile import Dataset
from ..formats.files import InputError
from ..formats.values import parse_ber, parse_rational
from ..measure.metrics import metrics
from ..semantics.model import Model
from ..oracle.checker import check_claims
from ..oracle.diagnose import claim_key

REQUEST_KEYS = {"b", "importance", "bit_errors", "onnx"}     # onnx: the input of a model given as ONNX
BIT_ERROR_KEYS = {"ber", "reps", "seed", "batch_size", "activations"}
RESULT_ASKED = ("ber", "accuracies", "mean", "std")
MAX_REQUEST_BS = 64


def check_request(doc: Any, name: str = "request") -> dict:
    """Validate a request (unknown keys are an error at every depth); returns it with
    `activations` filled in (default false)."""
    if not isinstance(doc, dict) or set(doc) - REQUEST_KEYS or "b" not in doc:
        raise InputError(f"{name}: expected an object with b, importance and bit_errors "
                         f"(unknown: {', '.join(sorted(set(doc) - REQUEST_KEYS)) if isinstance(doc, dict) else '-'})")
    bs = doc["b"]
    if not isinstance(bs, list) or not bs or len(bs) > MAX_REQUEST_BS or not all(isinstance(b, str) for b in bs):
        raise InputError(f"{name}: b: expected a list of 1 to {MAX_REQUEST_BS} strings (\"2\", \"1/2\", \"0.5\")")
    for b in bs:
        try:
            if parse_rational(b, f"{name}: b") < 0:
                raise ValueError(f"{name}: b: {b} is negative")
        except ValueError as e:
            raise InputError(str(e)) from None
    if not isinstance(doc.get("importance", False), bool):
        raise InputError(f"{name}: importance: expected true or false")
    out = {"b": list(bs), "importance": doc.get("importance", False), "bit_errors": None}
    if "onnx" in doc:
        onnx = doc["onnx"]
        if not isinstance(onnx, dict) or set(onnx) != {"input", "Z"} or not isinstance(onnx["input"], str) \
                or isinstance(onnx["Z"], bool) or not isinstance(onnx["Z"], int):
            raise InputError(f"{name}: onnx: expected {{\"input\": \"x/Z\", \"Z\": 255}}")
        out["onnx"] = dict(onnx)
    be = doc.get("bit_errors")
    if be is not None:
        if not isinstance(be, dict) or set(be) - BIT_ERROR_KEYS or not {"ber", "reps", "seed", "batch_size"} <= set(be):
            raise InputError(f"{name}: bit_errors: expected null or an object with ber, reps, seed, batch_size "
                             "and optionally activations")
        if not isinstance(be["ber"], list) or not be["ber"] or not all(isinstance(p, str) for p in be["ber"]):
            raise InputError(f"{name}: bit_errors.ber: expected a list of BERs as strings")
        for p in be["ber"]:
            try:
                parse_ber(p, f"{name}: bit_errors.ber")
            except ValueError as e:
                raise InputError(str(e)) from None
        for key, lo, hi in (("reps", 1, 1000), ("seed", 0, 2**63 - 1), ("batch_size", 1, 2**20)):
            v = be[key]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise InputError(f"{name}: bit_errors.{key}: expected an integer in {lo}..{hi}")
        if not isinstance(be.get("activations", False), bool):
            raise InputError(f"{name}: bit_errors.activations: expected true or false")
        out["bit_errors"] = {**{k: be[k] for k in ("ber", "reps", "seed", "batch_size")},
                             "activations": be.get("activations", False)}
    return out


def request_error_model(request: dict, p: float = 0.0) -> ErrorModel:
    be = request["bit_errors"]
    return ErrorModel(p, be["seed"], be["batch_size"], None, be["activations"])


def expected_claims(model: Model, x: np.ndarray, y: np.ndarray, request: dict) -> dict:
    """Every claim the request asks for, as refbnn computes it (exact values as
    {"exact": "p/q", "value": float})."""
    engine = FastEngine(model)
    bs = [(b, parse_rational(b, "b")) for b in request["b"]]
    doc = metrics(engine, x, y, bs, request["importance"])
    del doc["engine"]
    doc["predictions"] = [int(p) for p in engine.predictions(x)]
    be = request["bit_errors"]
    if be is not None:
        bers = [(p, parse_ber(p)) for p in be["ber"]]
        em = request_error_model(request)
        check_sweep_size(model, len(y), be["reps"], len(bers), em, "request: bit_errors")
        results = [s.as_dict() for s in accuracy_sweep(engine, x, y, bers, be["reps"], em)]
        doc["bit_errors"] = {"seed": be["seed"], "batch_size": be["batch_size"], "activations": be["activations"],
                             "results": [{k: r[k] for k in RESULT_ASKED} for r in results]}
    return doc


@dataclass
class Finding:
    """Where an implementation differs from refbnn on one example, or how it failed.

    kind: "wrong" (a claimed number differs), "missing" (an asked claim is absent),
    "malformed" (no usable claims file), "crash" (non-zero exit), "timeout"."""

    kind: str
    quantity: str
    detail: str

    @property
    def signature(self) -> tuple[str, str]:
        """What must keep failing while the example shrinks: the kind and the claimed quantity."""
        return self.kind, claim_key(self.quantity) if self.kind in ("wrong", "missing") else ""

    def line(self) -> str:
        return f"{self.kind}: {self.quantity}: {self.detail}" if self.quantity else f"{self.kind}: {self.detail}"


def asked_claims(claims: dict, request: dict) -> tuple[dict, list[str]]:
    """The claims the request asks for (the rest dropped), and the asked ones that are missing."""
    asked: dict = {}
    missing: list[str] = []

    def take(key: str) -> None:
        if key in claims:
            asked[key] = claims[key]
        else:
            missing.append(key)

    take("accuracy")
    take("predictions")
    claimed_t = claims.get("T") if isinstance(claims.get("T"), dict) else {}
    asked["T"] = {b: claimed_t[b] for b in request["b"] if b in claimed_t}
    missing += [f"T[{b}]" for b in request["b"] if b not in claimed_t]
    take("T_bar")
    layers = claims.get("layers")
    if not isinstance(layers, list):
        missing.append("layers")
    else:
        asked["layers"] = []
        for k, entry in enumerate(layers):
            t = entry.get("T") if isinstance(entry, dict) and isinstance(entry.get("T"), dict) else {}
            asked["layers"].append({"T": {b: t[b] for b in request["b"] if b in t}})
            missing += [f"layers[{k}].T[{b}]" for b in request["b"] if b not in t]
    if request["importance"]:
        take("importance")
        take("var_importance")
    be = request["bit_errors"]
    if be is not None:
        claimed = claims.get("bit_errors")
        if not isinstance(claimed, dict):
            missing.append("bit_errors")
        else:
            results = {r.get("ber"): r for r in claimed.get("results", []) if isinstance(r, dict)}
            kept = {k: claimed[k] for k in ("seed", "batch_size", "activations") if k in claimed}
            missing += [f"bit_errors.{k}" for k in ("seed", "batch_size", "activations") if k not in claimed]
            kept["results"] = []
            for p in be["ber"]:
                if p not in results:
                    missing.append(f"bit_errors.results[ber {p}]")
                    continue
                kept["results"].append({k: results[p][k] for k in RESULT_ASKED if k in results[p]})
                missing += [f"bit_errors.results[ber {p}].{k}" for k in RESULT_ASKED if k not in results[p]]
            asked["bit_errors"] = kept
    if not asked["T"]:
        del asked["T"]
        asked.pop("T_bar", None)
    return asked, missing


def judge(model: Model, x: np.ndarray, y: np.ndarray, request: dict, claims: Any, path: str = "claims",
          atol: float = 1e-9) -> tuple[Optional[Finding], dict]:
    """Compare the claims with refbnn exactly as `refbnn verify --claims` does, on what the
    request asks for. Returns the first finding (None: they agree) and the asked claims."""
    try:
        check_layout(claims, path)
    except InputError as e:
        return Finding("malformed", "", str(e)), {}
    asked, missing = asked_claims(claims, request)
    if missing:
        return Finding("missing", missing[0], f"the request asks for it ({len(missing)} missing in all)"), asked
    be = request["bit_errors"]
    if be is not None:
        for key in ("seed", "batch_size", "activations"):
            if asked["bit_errors"][key] != be[key]:
                return Finding("wrong", f"bit_errors.{key}", f"claimed {json.dumps(asked['bit_errors'][key])[:40]}, "
                                                             f"the request asks for {json.dumps(be[key])}"), asked
        for k, r in enumerate(asked["bit_errors"]["results"]):
            if not isinstance(r["accuracies"], list) or len(r["accuracies"]) != be["reps"]:
                return Finding("wrong", f"bit_errors.results[{k}].accuracies",
                               f"expected {be['reps']} repetitions"), asked
    engine = FastEngine(model)
    try:
        checks = check_claims(engine, model, Dataset(x, y), asked, path, atol,
                              bit_error_accuracies=None if be is None else _swept(engine, x, y, request))
    except (InputError, ValueError, TypeError) as e:
        return Finding("malformed", "", str(e)), asked
    bad = [c for c in checks if not c["pass"]]
    if bad:
        first = bad[0]
        return Finding("wrong", first["quantity"], f"claimed {first['claimed']}, refbnn {_shown(first['exact'])} "
                                                   f"({len(bad)} of {len(checks)} checks fail)"), asked
    return None, asked


def _swept(engine: FastEngine, x: np.ndarray, y: np.ndarray, request: dict):
    """The accuracies of every asked BER from one sweep (each batch's keyed draws made once,
    `accuracy_sweep`), for the checker, which asks for one BER at a time."""
    be = request["bit_errors"]
    bers = [(p, parse_ber(p)) for p in be["ber"]]
    table = {p: s.accuracies for (_, p), s in
             zip(bers, accuracy_sweep(engine, x, y, bers, be["reps"], request_error_model(request)))}
    return lambda em, reps: table[em.p][:reps]


def _shown(v: Any) -> str:
    return v["exact"] if isinstance(v, dict) else str(v)
