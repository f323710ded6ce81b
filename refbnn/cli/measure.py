"""Commands that measure a model on a data set: `metrics`, `certify`."""
from __future__ import annotations

import sys

import click
import numpy as np
from tabulate import tabulate

from ..api import metrics
from ..engines.fast import FastEngine
from ..engines.interpreter import Interpreter
from ..formats.files import write_json
from ..measure.certify import certified_accuracy, check_certificates
from .common import SEED, Progress, b_option, engine_option, json_option, load, naming_files, parsed, show
from .group import main
from .options import parse_bs, parse_naturals


@main.command("metrics", short_help="Accuracy, T tuple, T-bar, per layer; with --importance VAR(Pi).")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("data_path", metavar="DATA", type=click.Path(dir_okay=False))
@b_option
@click.option("--importance", is_flag=True,
              help="Also compute Pi per neuron (Algorithm 1) and VAR(Pi) (eq. 6).")
@engine_option
@json_option
def metrics_cmd(model_path, data_path, b_text, importance, engine, json_path) -> None:
    """Accuracy, the T tuple and T-bar (eqs. 1-5), per layer; with --importance, VAR(Pi).

    T^b is the share of (input, neuron, position) triples, averaged per neuron and
    per input, whose margin |h - s - 1/2| (divided by Z in the first layer) is at
    least b. Pi[n] is the relative accuracy drop when neuron n's output is flipped.
    All results are exact fractions; JSON gives {"exact": "p/q", "value": float}.
    """
    bs = parsed(b_text, parse_bs)
    model, data = load(model_path, data_path)
    with Progress("Algorithm 1") as progress, naming_files(model_path, data_path):
        result = metrics(model, data.x, data.y, [token for token, _ in bs], importance, engine, progress)
    result = {"model": model_path, "data": data_path, **result.to_claims()}
    _print_metrics(result)
    if json_path:
        write_json(json_path, result)


def _print_metrics(r: dict) -> None:
    click.echo(f"{r['inputs']} inputs, {r['neurons']} neurons, accuracy {show(r['accuracy'])} "
               f"[{r['engine']} engine]")
    names = list(r["T"])
    rows = [["all", r["neurons"], ""] + [show(r["T"][b]) for b in names] + [show(r["T_bar"])]]
    for layer in r["layers"]:
        rows.append([f"layer {layer['layer']} ({layer['type']}{', first' if layer['first'] else ''})",
                     layer["neurons"], layer["positions"]]
                    + [show(layer["T"][b]) for b in names] + [show(layer["T_bar"])])
    click.echo(tabulate(rows, headers=["neurons of", "N", "U*V"] + [f"T^{b}" for b in names] + ["T-bar"]))
    if "importance" in r:
        click.echo(f"VAR(Pi) = {show(r['var_importance'])} over {len(r['importance'])} neurons")


@main.command("certify")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("data_path", metavar="DATA", type=click.Path(dir_okay=False))
@click.option("--k", "k_text", default="0,1,2,4,8", show_default=True,
              help="Comma-separated flip counts k at which to report certified accuracy.")
@click.option("--check", "draws", default=0, show_default=True, type=click.IntRange(0, 10**6),
              help="Also draw this many adversarial flip patterns at the certified k of random "
                   "certified inputs and run them through the reference interpreter.")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed for --check.")
@json_option
def certify_cmd(model_path, data_path, k_text, draws, seed, json_path) -> None:
    """Certified accuracy under any k weight flips per neuron (Theorem 1, network corollary).

    For each input, the largest k such that flipping any k weights of every neuron
    (per filter for conv layers) and of every output unit cannot change the prediction:
    every neuron at every position needs floor(T/2) >= k, and the top class score
    must lead every other by more than 4k (by at least 4k over larger class indices,
    which lose ties). Certified accuracy at k: inputs correct and certified at k.
    Exit 1 if --check ever finds a certified prediction that changes (a bug).
    """
    ks_wanted = parsed(k_text, parse_naturals, "--k")
    model, data = load(model_path, data_path)
    engine = FastEngine(model)
    r = certified_accuracy(engine, data.x, data.y, ks_wanted)
    ks = r["certified_k"]
    click.echo(f"{r['inputs']} inputs, accuracy {show(r['accuracy'])}; certified k per input: "
               f"min {min(ks)}, median {int(np.median(ks))}, max {max(ks)}")
    click.echo(tabulate([[k, show(v)] for k, v in r["certified_accuracy"].items()],
                        headers=["k", "certified accuracy"]))
    click.echo(tabulate(list(r["bottleneck"].items()), headers=["limited by", "inputs"]))
    checks = check_certificates(engine, Interpreter, data.x, np.array(ks), draws, seed) if draws else []
    broken = [c for c in checks if c["changed"]]
    if draws:
        click.echo(f"--check: {len(checks)} adversarial patterns at the certified k, "
                   f"{len(broken)} changed a certified prediction")
    if json_path:
        write_json(json_path, {"model": model_path, "data": data_path, **r, "checks": checks})
    sys.exit(1 if broken else 0)
