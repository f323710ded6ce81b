"""`refbnn verify`: check another implementation's numbers, find where and why they differ."""
from __future__ import annotations

import sys
from typing import Optional

import click
from tabulate import tabulate

from ..biterrors.masks import ErrorModel
from ..formats.files import InputError, write_json
from ..formats.maskfile import read_masks
from ..formats.tracefile import read_trace
from ..formats.values import parse_ber
from ..semantics.importance import ZeroAccuracyError
from ..oracle.checker import read_claims
from ..oracle.report import claims_report, trace_report
from ..oracle.selfcheck import self_checks
from ..oracle.statistics import audit_masks
from .common import ENGINES, SEED, FiniteFloat, Progress, engine_option, json_option, load, parsed
from .group import main


@main.command("verify", short_help="Check another implementation: claims, traces, --self, a mask audit.")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("data_path", metavar="DATA", type=click.Path(dir_okay=False))
@click.option("--claims", "claims_path", type=click.Path(dir_okay=False), default=None,
              help="JSON of claimed values (the layout `refbnn metrics --json` writes, or refbnn.claims).")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False), default=None,
              help="npz of per-layer values (h{l}, a{l}, scores, predictions) for the same inputs: "
                   "find the first divergence.")
@click.option("--trace-mode", type=click.Choice(["first", "independent"]), default="first", show_default=True,
              help="first: compare with refbnn's own run, stop at the first array that differs; "
                   "independent: run each layer from your previous a{l}, so every layer is judged alone.")
@click.option("--self", "self_check", is_flag=True,
              help="Metamorphic checks of refbnn itself on this model and data (run this first on a model "
                   "from a new source).")
@click.option("--audit", "audit_path", type=click.Path(dir_okay=False), default=None,
              help="Flip masks drawn by your injector (the `refbnn masks` layout): test them against the "
                   "bit error model at --ber.")
@click.option("--ber", "ber_text", default=None, help="The BER of the --audit masks.")
@click.option("--layers", "layers_text", default=None,
              help="For --audit: the targeted weight layers (comma-separated indices; default all).")
@click.option("--activations", is_flag=True, help="For --audit: activations are targeted too.")
@click.option("--atol", default=1e-9, show_default=True, type=FiniteFloat(0, 1),
              help="Allowed absolute error for claims given as plain numbers; "
                   "claims given as {\"exact\": \"p/q\"} must match exactly.")
@click.option("--alpha", default=0.01, show_default=True, type=FiniteFloat(0, 1, lo_open=True),
              help="Level of the statistical tests (bit error claims with \"rng\": \"other\", --audit).")
@click.option("--diagnose/--no-diagnose", default=True, show_default=True,
              help="On a failure, look for the alternative convention that explains it.")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of --self's permutations.")
@click.option("--verbose", is_flag=True, help="List every check, passing ones too.")
@engine_option
@json_option
def verify_cmd(model_path, data_path, claims_path, trace_path, trace_mode, self_check, audit_path, ber_text,
               layers_text, activations, atol, alpha, diagnose, seed, verbose, engine, json_path) -> None:
    """Check another implementation against refbnn, and find where and why it differs.

    \b
    --claims C.json   recompute every claimed number exactly (accuracy, T, T_bar,
                      layers, importance, var_importance, predictions, bit_errors);
    --trace T.npz     compare per-layer values, report the first divergence;
    --self            metamorphic checks of refbnn on this model and data;
    --audit M.npz     statistical audit of your injector's flip masks (--ber).

    On a failure, refbnn re-runs the reference under each alternative convention
    that implementations get wrong (tie rules, padding, 1/Z, pooling order, ...;
    docs/semantics.md §11) and names every one that reproduces your numbers
    exactly. Exit 0 if everything passes, 1 if anything fails.
    """
    if not (claims_path or trace_path or self_check or audit_path):
        raise click.UsageError("give at least one of --claims, --trace, --self, --audit")
    model, data = load(model_path, data_path)
    result: dict = {"model": model_path, "data": data_path}
    failed = False
    if claims_path:
        failed |= _claims(model, data, data_path, claims_path, atol, alpha, engine, diagnose, verbose, result)
    if trace_path:
        failed |= _trace(model, data, trace_path, trace_mode, diagnose, result)
    if self_check:
        failed |= _self(model, data, seed, result)
    if audit_path:
        failed |= _audit(model, data, audit_path, ber_text, layers_text, activations, alpha, result)
    click.echo("verify: FAILED" if failed else "verify: OK")
    if json_path:
        write_json(json_path, result)
    sys.exit(1 if failed else 0)


def _claims(model, data, data_path, path, atol, alpha, engine, diagnose, verbose, result) -> bool:
    claims = read_claims(path)
    try:
        report = claims_report(model, data, claims, path, atol, alpha, ENGINES[engine](model), diagnose, verbose,
                               busy=Progress)
    except ZeroAccuracyError as e:
        raise InputError(f"{data_path}: {e}") from None
    for line in report.lines:
        click.echo(line)
    result.update(report.json)
    return bool(report.failed)


def _trace(model, data, path, mode, diagnose, result) -> bool:
    report = trace_report(model, data.x, read_trace(path, model, len(data.y)), path, mode, diagnose)
    for line in report.lines:
        click.echo(line)
    result["trace"] = report.json
    return report.differs


def _self(model, data, seed, result) -> bool:
    with Progress("self checks") as progress:
        checks = self_checks(model, data.x, data.y, seed, progress)
    click.echo(tabulate([[c["check"], "pass" if c["pass"] else "FAIL", c["detail"]] for c in checks],
                        headers=["self check", "result", "detail"], maxcolwidths=[None, None, 70]))
    result["self"] = checks
    return not all(c["pass"] for c in checks)


def _audit(model, data, path, ber_text, layers_text, activations, alpha, result) -> bool:
    if ber_text is None:
        raise click.UsageError("--audit needs --ber, the bit error rate the masks were drawn at")
    p = parsed(ber_text, parse_ber, "--ber")
    layers: Optional[tuple] = None
    if layers_text:
        try:
            layers = tuple(int(t) for t in layers_text.split(","))
        except ValueError:
            raise InputError(f"--layers: {layers_text[:40]!r}: expected comma-separated layer indices") from None
        if any(i not in model.weight_indices for i in layers):
            raise InputError(f"--layers: weight layers are {', '.join(map(str, model.weight_indices))}")
    masks = read_masks(path, model)
    em = ErrorModel(p, 0, masks.batch_size, layers, activations)
    checks = audit_masks(masks, model, em, alpha)
    click.echo(tabulate([[c["check"], f"{c['p_value']:.3g}", "pass" if c["pass"] else "FAIL", c["detail"]]
                         for c in checks], headers=["audit", "p-value", "result", "detail"]))
    result["audit"] = {"path": path, "ber": p, "alpha": alpha, "checks": checks}
    return not all(c["pass"] for c in checks)
