"""`refbnn fuzz` and `refbnn conformance`: check another implementation on generated
cases and on the committed conformance vectors (docs/semantics.md §12)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..formats.files import InputError, write_json
from ..semantics.model import FEATURES as FEATURE_NAMES
from .common import SEED, FiniteFloat, Progress, json_option, parsed, require
from .group import main
from .options import parse_bs


def _testing() -> None:
    require("hypothesis", "this command", "fuzz")


def _onnx_if(model_format: str) -> None:
    if model_format == "onnx":
        require("onnx", "--format onnx", "import")


def parse_features(text: str) -> frozenset:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in FEATURE_NAMES]
    if unknown or not names:
        raise InputError(f"--features: {(unknown or [''])[0][:40]!r} is not a feature "
                         f"(known: {', '.join(FEATURE_NAMES)})")
    if not {"fc", "conv"} & set(names):
        raise InputError("--features: keep fc or conv (a model needs neurons)")
    return frozenset(names)


def _output_directory(path: str) -> None:
    """--out must be a directory refbnn can create and write, checked before any work."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--out: {path}: cannot create the directory ({e.strerror or e})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"--out: {path}: the directory is not writable")


def impl_option(func):
    return click.option("--impl", "cmd", required=True,
                        help="Shell command that computes your claims: {model} (model.json), {data} "
                             "(data.npz), {request} (request.json) and {claims} (the JSON file to write) are "
                             "replaced by quoted paths; {trace} (a trace .npz) is optional.")(func)


def features_option(func):
    return click.option("--features", "features_text", default=",".join(FEATURE_NAMES), show_default=True,
                        help="Comma-separated model features your implementation supports; leave out "
                             "those it does not.")(func)


def format_option(func):
    return click.option("--format", "model_format", type=click.Choice(["json", "onnx"]), default="json",
                        show_default=True,
                        help="How {model} is handed over: refbnn's model.json, or model.onnx as `refbnn export` "
                             "writes it (input x/Z; the request then says Z). onnx needs 'refbnn[import]'.")(func)


def timeout_option(func):
    return click.option("--timeout", default=60.0, show_default=True, type=FiniteFloat(0, 86400, lo_open=True),
                        help="Seconds one run of the command may take; then its process group is killed.")(func)


@main.command("fuzz", short_help="Find the smallest BNN on which another implementation disagrees.")
@impl_option
@click.option("--max-examples", default=100, show_default=True, type=click.IntRange(1, 100000),
              help="Generated cases to try before declaring no disagreement.")
@click.option("--seed", default=0, show_default=True, type=SEED, help="The same seed draws the same cases.")
@click.option("--out", "out_dir", default="fuzz-out", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the shrunk case, its report, repro.sh and the example database.")
@features_option
@click.option("--max-neurons", default=16, show_default=True, type=click.IntRange(1, 256),
              help="Neurons of a generated model at most.")
@click.option("--max-inputs", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Inputs of a generated data set at most.")
@click.option("--b", "b_text", default=None,
              help="Fixed b values for every request (comma-separated); default: drawn at the edges "
                   "(fractions, values at a margin, one past every margin).")
@click.option("--importance/--no-importance", default=True, show_default=True,
              help="Ask for Pi and VAR(Pi).")
@click.option("--bit-errors/--no-bit-errors", default=True, show_default=True,
              help="Ask for accuracies under keyed bit errors.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Searches run side by side (each its own share of the examples and its own seed).")
@format_option
@timeout_option
@click.option("--shrink-time", default=300.0, show_default=True, type=FiniteFloat(0, 86400),
              help="Seconds spent shrinking a finding at most (besides at most 300 more runs).")
@click.option("--atol", default=1e-9, show_default=True, type=FiniteFloat(0, 1),
              help="Allowed absolute error for claims given as plain numbers (as verify --atol).")
@json_option
def fuzz_cmd(cmd, max_examples, seed, out_dir, features_text, max_neurons, max_inputs, b_text, importance,
             bit_errors, jobs, model_format, timeout, shrink_time, atol, json_path) -> None:
    """Generate small BNNs aimed at the edges, run your implementation on each and compare
    its claims with refbnn's; on a disagreement, shrink it to the smallest case.

    \b
    Example (an implementation that reads refbnn's files):
      refbnn fuzz --impl 'python mine.py {model} {data} {request} {claims}'

    For each case refbnn writes model.json and data.npz (docs/semantics.md §3) and
    request.json ({"b": [...], "importance": true, "bit_errors": {...} or null},
    §12.1), runs the command, and reads the claims file it wrote (the layout of
    `refbnn verify --claims`). A wrong number, a missing asked claim, a crash, a
    timeout or a malformed file is a finding; Hypothesis then shrinks the case while
    the same claim keeps failing. OUT then holds the shrunk case, claims.json,
    report.txt (verify's report) and repro.sh; a rerun starts from the stored failure.
    Exit 0: no disagreement; 1: a finding; 2: bad input.
    """
    _testing()
    from ..testing.build import Reach
    from ..testing.external import check_command
    from ..testing.fuzz import FuzzOptions, fuzz

    check_command(cmd)
    features = parse_features(features_text)
    _output_directory(out_dir)
    bs = None if b_text is None else tuple(token for token, _ in parsed(b_text, parse_bs))
    reach = Reach(features, max_neurons, max_inputs, bs, importance, bit_errors)
    _onnx_if(model_format)
    options = FuzzOptions(cmd, reach, max_examples, seed, Path(out_dir), timeout, atol, jobs, shrink_time,
                          model_format)
    with Progress("fuzz") as progress:
        result = fuzz(options, progress)
    covered = ", ".join(f"{name} {result.covered[name]}" for name in FEATURE_NAMES if name in features) or "-"
    doc = {"examples": result.examples, "covered": dict(result.covered), "out": out_dir, "finding": None}
    if result.finding is not None:
        click.echo(f"fuzz: a disagreement after {_count(result.examples, 'example')}, shrunk in "
                   f"{_count(result.shrink_runs, 'more run')} of the command")
        for line in result.summary():
            click.echo(line)
        click.echo(f"files: {out_dir}/ (model.json, data.npz, request.json, claims.json, report.txt); "
                   f"rerun: sh {out_dir}/repro.sh")
        doc["finding"] = {"kind": result.finding.kind, "quantity": result.finding.quantity,
                          "detail": result.finding.detail, "case": result.case.size(),
                          "features": sorted(result.case.features)}
    click.echo(f"fuzz: {_count(result.examples, 'example')}, {'1 finding' if result.finding else 'no disagreement'}; "
               f"features covered: {covered}")
    if json_path:
        write_json(json_path, doc)
    sys.exit(1 if result.finding is not None else 0)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@main.group("conformance", short_help="Run an implementation over the conformance vectors, or rebuild them.")
def conformance_group() -> None:
    """The conformance suite (docs/semantics.md §12.5): small committed cases, each a
    model, data, request and the expected claims as exact fractions, with an index of
    what each case pins. `run` checks an implementation on every case; `write`
    rebuilds the suite byte for byte."""


@conformance_group.command("run")
@impl_option
@features_option
@format_option
@timeout_option
@click.option("--atol", default=1e-9, show_default=True, type=FiniteFloat(0, 1),
              help="Allowed absolute error for claims given as plain numbers (as verify --atol).")
@click.option("--suite", "suite_dir", default=None, type=click.Path(file_okay=False, exists=True),
              help="A suite directory (default: the one installed with refbnn).")
@json_option
def conformance_run_cmd(cmd, features_text, model_format, timeout, atol, suite_dir, json_path) -> None:
    """Run your implementation on every conformance case and judge its claims.

    \b
    Example:
      refbnn conformance run --impl 'python mine.py {model} {data} {request} {claims}'

    Each case's files are read where the suite lies; the claims file is written
    in a temporary directory.
    Cases that need a feature left out of --features are skipped and counted.
    Exit 0 if every case run passes, 1 if any fails, 2 on bad input."""
    _testing()
    import tempfile

    from tabulate import tabulate

    from ..testing.conformance import SUITE, check_suite_dir, run_suite
    from ..testing.external import check_command

    check_command(cmd)
    features = parse_features(features_text)
    _onnx_if(model_format)
    suite = Path(suite_dir) if suite_dir else SUITE
    check_suite_dir(suite)
    with tempfile.TemporaryDirectory(prefix="refbnn-conformance-") as work, Progress("conformance") as progress:
        results = run_suite(cmd, features, timeout, atol, Path(work), suite, progress, model_format)
    rows = [[r.case, r.outcome if r.outcome != "skipped" else f"skipped (needs {', '.join(r.missing_features)})",
             r.finding.line() if r.finding else ""] for r in results]
    click.echo(tabulate(rows, headers=["case", "result", "first failing claim"], maxcolwidths=[None, None, 70]))
    counts = {k: sum(r.outcome == k for r in results) for k in ("pass", "fail", "skipped")}
    click.echo(f"conformance: {len(results)} cases: {counts['pass']} pass, {counts['fail']} fail, "
               f"{counts['skipped']} skipped (features left out)")
    if json_path:
        write_json(json_path, {"suite": str(suite), **counts,
                               "cases": [{"case": r.case, "pins": r.pins, "result": r.outcome,
                                          "finding": r.finding.line() if r.finding else None,
                                          "needs": list(r.missing_features)} for r in results]})
    sys.exit(1 if counts["fail"] else 0)


@conformance_group.command("write")
@click.argument("directory", type=click.Path(file_okay=False))
@json_option
def conformance_write_cmd(directory, json_path) -> None:
    """Rebuild the conformance suite into DIRECTORY (byte-identical to the installed one,
    refbnn/testing/vectors, apart from its README.md)."""
    _testing()
    from ..testing.conformance import write_suite

    with Progress("conformance") as progress:
        index = write_suite(Path(directory), progress)
    click.echo(f"conformance: {len(index)} cases written to {directory}")
    if json_path:
        write_json(json_path, {"directory": directory, "cases": index})
