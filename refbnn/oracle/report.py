"""What `refbnn verify --claims` and `--trace` report, as lines of text and a JSON-ready
dict: the failing checks (three per quantity), the first divergence, the patterns and the
diagnosis (docs/semantics.md §11). The command prints it; `refbnn fuzz` writes it to
report.txt and `refbnn.testing.assert_claims` raises it."""
from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Optional

from tabulate import tabulate

from ..engines.fast import FastEngine
from ..engines.protocol import Engine
from ..formats.datafile import Dataset
from ..formats.tracefile import Trace
from ..semantics.model import Model
from .checker import check_claims
from .diagnose import claim_key, compare_trace, diagnose_claims, diagnose_trace, failure_patterns

SHOWN = 3     # failures shown per quantity without verbose


@dataclass
class ClaimsReport:
    checks: list[dict]
    lines: list[str] = field(default_factory=list)
    json: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[dict]:
        return [c for c in self.checks if not c["pass"]]


def claims_report(model: Model, data: Dataset, claims: dict, path: str, atol: float = 1e-9, alpha: float = 0.01,
                  engine: Optional[Engine] = None, diagnose: bool = True, verbose: bool = False,
                  busy: Callable[[str], ContextManager] = lambda label: nullcontext()) -> ClaimsReport:
    """Check `claims` against refbnn and describe the result; `busy(label)` wraps the
    diagnosis (the command line shows a progress bar there)."""
    checks = check_claims(engine or FastEngine(model), model, data, claims, path, atol, alpha=alpha)
    report = ClaimsReport(checks)
    bad = report.failed
    lines = report.lines
    lines.append(f"claims: {len(checks)} checked, {len(checks) - len(bad)} pass, {len(bad)} fail")
    shown = checks if verbose else _first_per_quantity(bad)
    if shown:
        lines += tabulate([[c["quantity"], c["claimed"], _exact(c["exact"]), "pass" if c["pass"] else "FAIL"]
                           for c in shown], headers=["quantity", "claimed", "refbnn", "result"]).splitlines()
    if not verbose:
        for key, n in _counts(bad).items():
            if n > SHOWN:
                lines.append(f"  ... {key}: {n - SHOWN} more failures (--verbose, or --json, lists them)")
    for c in checks:
        if "statistics" in c and (verbose or c["pass"]):      # failing ones are in the table already
            lines.append(f"{c['quantity']}: {c['claimed']}; {c['exact']} (alpha {alpha}): "
                         f"{'pass' if c['pass'] else 'FAIL'}")
    patterns = failure_patterns(checks) if bad else []
    lines += [f"pattern: {line}" for line in patterns]
    report.json = {"claims": path, "checks": checks, "passed": len(checks) - len(bad), "failed": len(bad),
                   "patterns": patterns}
    if bad and diagnose:
        with busy("diagnosis"):
            d = diagnose_claims(model, data, claims, path, atol, checks)
        lines += d.lines()
        report.json["diagnosis"] = d.as_json()
    return report


def _first_per_quantity(bad: list[dict]) -> list[dict]:
    seen: dict = defaultdict(int)
    out = []
    for c in bad:
        key = claim_key(c["quantity"])
        seen[key] += 1
        if seen[key] <= SHOWN:
            out.append(c)
    return out


def _counts(bad: list[dict]) -> dict:
    counts: dict = defaultdict(int)
    for c in bad:
        counts[claim_key(c["quantity"])] += 1
    return counts


def _exact(v) -> str:
    return v["exact"] if isinstance(v, dict) else str(v)


@dataclass
class TraceReport:
    lines: list[str]
    json: dict
    differs: bool


def trace_report(model: Model, x, trace: Trace, path: str, mode: str = "first", diagnose: bool = True) -> TraceReport:
    """Compare a trace with refbnn's run (docs/semantics.md §11.1): a table of the arrays, the
    first divergence with its patterns and, on a difference, the diagnosis."""
    results = compare_trace(model, x, trace, mode)
    rows = [[r.name, r.entries, "not compared" if not r.compared else ("equal" if not r.differ else
                                                                        f"{r.differ} differ")] for r in results]
    lines = [f"trace: {len(results)} arrays ({mode} mode)"]
    lines += tabulate(rows, headers=["array", "entries", "result"]).splitlines()
    first = next((r for r in results if r.differ), None)
    if first is not None:
        f = first.first
        where = ", ".join(f"{k} {v}" for k, v in f.items() if k not in ("expected", "got"))
        lines.append(f"first divergence: {first.name} at {where}: expected {f['expected']}, got {f['got']} "
                     f"({first.differ} of {first.entries} entries differ)")
        lines += [f"pattern: {line}" for line in first.patterns]
        if mode == "first" and any(not r.compared for r in results):
            lines.append("later arrays are not compared (one early difference changes them all); "
                         "--trace-mode independent judges each layer alone")
    doc = {"path": path, "mode": mode, "arrays": [r.as_json() for r in results]}
    if first is not None and diagnose:
        matches = diagnose_trace(model, x, trace)
        lines += [f"diagnosis: {m.sentence('traced values')}" for m in matches] or \
            ["diagnosis: no alternative convention reproduces your trace (docs/semantics.md §11 lists them)"]
        doc["diagnosis"] = [m.as_json() for m in matches]
    return TraceReport(lines, doc, first is not None)
