"""What `refbnn verify --claims` reports, as lines of text and a JSON-ready dict: the
failing checks (three per quantity), the patterns and the diagnosis (docs/semantics.md
§11.2). The command prints it; `refbnn fuzz` writes it to report.txt and
`refbnn.testing.assert_claims` raises it."""
from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Optional

from tabulate import tabulate

from ..engines.fast import FastEngine
from ..engines.protocol import Engine
from ..formats.datafile import Dataset
from ..semantics.model import Model
from .checker import check_claims
from .diagnose import claim_key, diagnose_claims, failure_patterns

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
