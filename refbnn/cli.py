"""The `refbnn` command line (SPEC section 9).

Every command prints a readable table, writes JSON with `--json PATH`
(atomically: nothing is written unless the command succeeds), and exits
0 on success, 1 when a check fails, 2 on bad input with a one-line message that
names the file and the field.
"""
from __future__ import annotations

import functools
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Optional

import click
import numpy as np
from tabulate import tabulate

from .datafile import read_data, write_data
from .engine import FastEngine
from .example import example_data, example_model
from .files import InputError, write_json
from .importance import ZeroAccuracyError
from .interpreter import Interpreter
from .model import Conv2d, Linear, Threshold
from .modelfile import read_model, write_model
from .report import exact, metrics, parse_bs

ENGINES = {"fast": FastEngine, "reference": Interpreter}


class Progress:
    """A progress callback `(done, total)` that draws a bar on a terminal and is silent
    otherwise (pipes, CI, CliRunner)."""

    def __init__(self, label: str):
        self.label = label
        self.bar = None
        self.shown = 0
        self.enabled = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.shown)
        self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def fails_with_exit_2(func):
    """Turn an InputError into `refbnn: error: ...` on stderr and exit code 2."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except InputError as e:
            click.echo(f"refbnn: error: {e}", err=True)
            sys.exit(2)
    return wrapper


def _b_option(func):
    return click.option("--b", "b_text", default="2,4,8,16,32,64", show_default=True,
                        help="Comma-separated margins b, each read exactly: 2, 0.5 or 1/2.")(func)


def _json_option(func):
    return click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
                        help="Also write the result as JSON to this file.")(func)


def _engine_option(func):
    return click.option("--engine", type=click.Choice(sorted(ENGINES)), default="fast", show_default=True,
                        help="fast: the NumPy engine; reference: the bitarray interpreter "
                             "(the definition; slow, for cross-checks).")(func)


def _parse(text: str, parser):
    try:
        return parser(text)
    except ValueError as e:
        raise InputError(str(e)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="refbnn")
def main() -> None:
    """Bit error tolerance metrics for binarized neural networks.

    The reference implementation of Buschjaeger et al. (2021): the neuron-level
    margin metric T (eqs. 1-5) and the inter-neuron metric VAR(Pi) (Algorithm 1,
    eq. 6), computed exactly as fractions.

    Start with `refbnn demo` (trains two small BNNs and compares them), or
    `refbnn example-model DIR` then `refbnn metrics DIR/example.json
    DIR/example.npz --importance`. Every command takes --help.
    """


@main.command("example-model")
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--inputs", default=200, show_default=True, type=click.IntRange(1, 10**6),
              help="Number of example images to write.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the image generator.")
@fails_with_exit_2
def example_model_cmd(outdir: str, inputs: int, seed: int) -> None:
    """Write a hand-built bars model and data set: OUTDIR/example.json, OUTDIR/example.npz.

    The model tells horizontal from vertical bars in noisy 8x8 images (Z = 4):
    a conv layer of line detectors, a hidden layer of 4 units, 2 class scores.
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    x, y = example_data(inputs, seed)
    write_model(out / "example.json", example_model())
    write_data(out / "example.npz", x, y)
    click.echo(f"wrote {out / 'example.json'} and {out / 'example.npz'} ({inputs} inputs)")


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@_json_option
@fails_with_exit_2
def inspect(model_path: str, json_path: Optional[str]) -> None:
    """Show the layers of MODEL: shapes, neurons, weight bits, Z."""
    model = read_model(model_path)
    rows = []
    neuron_at = {nl.threshold_index: nl for nl in model.neuron_layers}
    for i, layer in enumerate(model.layers):
        bits = len(layer.weight.bits) if isinstance(layer, (Linear, Conv2d)) else 0
        extra = f"padding {layer.padding}" if isinstance(layer, Conv2d) else ""
        neurons = ""
        if isinstance(layer, Threshold):
            nl = neuron_at[i]
            neurons = f"{nl.offset}..{nl.offset + nl.channels - 1}"
            negative = sum(1 for p in layer.polarity if p < 0)
            extra = f"{'eq. 2 (/Z)' if nl.first else 'eq. 1'}; {negative} with polarity -1"
        rows.append([i, layer.type, list(model.shapes[i]), bits or "", neurons, extra])
    click.echo(f"input shape {list(model.input_shape)}, Z = {model.Z}; "
               f"{model.neurons} neurons, {model.classes} classes, "
               f"{sum(len(model.layers[i].weight.bits) for i in model.weight_indices)} weight bits")
    click.echo(tabulate(rows, headers=["#", "layer", "output shape", "weight bits", "neurons", "notes"]))
    if json_path:
        write_json(json_path, {
            "input": {"shape": list(model.input_shape), "Z": model.Z},
            "neurons": model.neurons, "classes": model.classes,
            "layers": [{"type": r[1], "output_shape": r[2], "weight_bits": r[3] or 0} for r in rows]})


def _load(model_path: str, data_path: str):
    model = read_model(model_path)
    data = read_data(data_path, model)
    return model, data


@main.command("metrics", short_help="Accuracy, T tuple, T-bar, per layer; with --importance VAR(Pi).")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("data_path", metavar="DATA", type=click.Path(dir_okay=False))
@_b_option
@click.option("--importance", is_flag=True,
              help="Also compute Pi per neuron (Algorithm 1) and VAR(Pi) (eq. 6).")
@_engine_option
@_json_option
@fails_with_exit_2
def metrics_cmd(model_path, data_path, b_text, importance, engine, json_path) -> None:
    """Accuracy, the T tuple and T-bar (eqs. 1-5), per layer; with --importance, VAR(Pi).

    T^b is the share of (input, neuron, position) triples, averaged per neuron and
    per input, whose margin |h - s - 1/2| (divided by Z in the first layer) is at
    least b. Pi[n] is the relative accuracy drop when neuron n's output is flipped.
    All results are exact fractions; JSON gives {"exact": "p/q", "value": float}.
    """
    bs = _parse(b_text, parse_bs)
    model, data = _load(model_path, data_path)
    if model.neurons == 0:
        raise InputError(f"{model_path}: layers: the model has no threshold layer, so it has "
                         f"no neurons and T is undefined")
    progress = Progress("Algorithm 1")
    try:
        result = metrics(ENGINES[engine](model), data.x, data.y, bs, importance, progress)
    except ZeroAccuracyError as e:
        raise InputError(f"{data_path}: {e}") from None
    finally:
        progress.close()
    result = {"model": model_path, "data": data_path, **result}
    _print_metrics(result)
    if json_path:
        write_json(json_path, result)


def _print_metrics(r: dict) -> None:
    click.echo(f"{r['inputs']} inputs, {r['neurons']} neurons, accuracy {_show(r['accuracy'])} "
               f"[{r['engine']} engine]")
    names = list(r["T"])
    rows = [["all", r["neurons"], ""] + [_show(r["T"][b]) for b in names] + [_show(r["T_bar"])]]
    for layer in r["layers"]:
        rows.append([f"layer {layer['layer']} ({layer['type']}{', first' if layer['first'] else ''})",
                     layer["neurons"], layer["positions"]]
                    + [_show(layer["T"][b]) for b in names] + [_show(layer["T_bar"])])
    click.echo(tabulate(rows, headers=["neurons of", "N", "U*V"] + [f"T^{b}" for b in names] + ["T-bar"]))
    if "importance" in r:
        click.echo(f"VAR(Pi) = {_show(r['var_importance'])} over {len(r['importance'])} neurons")


def _show(q: dict) -> str:
    """A float for reading; the exact value is in the JSON."""
    return f"{q['value']:.6g}"


def _parse_bers(text: str) -> list[tuple[str, float]]:
    out = []
    for token in text.split(","):
        token = token.strip()
        try:
            p = float(Fraction(token))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"--ber: {token!r} is not a number") from None
        if not 0 <= p <= 1:
            raise ValueError(f"--ber: {token} is outside [0, 1]")
        out.append((token, p))
    return out


def _parse_layers(text: Optional[str], model) -> Optional[tuple[int, ...]]:
    if text is None or text == "all":
        return None
    out = []
    for token in text.split(","):
        token = token.strip()
        if not token.isdigit() or int(token) not in model.weight_indices:
            raise InputError(f"--layers: {token!r} is not a weight layer of this model "
                             f"(weight layers: {', '.join(map(str, model.weight_indices))}; see refbnn inspect)")
        out.append(int(token))
    return tuple(out)


def _error_options(func):
    func = click.option("--seed", default=0, show_default=True, type=int,
                        help="Seed of the keyed flip masks.")(func)
    func = click.option("--granularity", type=click.Choice(["batch", "input", "pass"]), default="batch",
                        show_default=True, help="A fresh flip pattern per batch, per input, or one per pass.")(func)
    func = click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1),
                        help="Inputs per flip pattern with --granularity batch.")(func)
    func = click.option("--layers", "layers_text", default=None,
                        help="Comma-separated weight layer indices to target (default: all; see inspect).")(func)
    func = click.option("--activations", is_flag=True,
                        help="Also flip the +-1 activations that feed hidden weight layers.")(func)
    return func


def _error_model(model, p, seed, granularity, batch_size, layers_text, activations, n_inputs):
    from .biterrors import ErrorModel

    size = {"batch": batch_size, "input": 1, "pass": n_inputs}[granularity]
    return ErrorModel(p, seed, size, _parse_layers(layers_text, model), activations)


@main.command("eval", short_help="Accuracy over bit error rates, with spread and 95% interval.")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("data_path", metavar="DATA", type=click.Path(dir_okay=False))
@click.option("--ber", "ber_text", default="0,0.01,0.05,0.1", show_default=True,
              help="Comma-separated bit error rates p in [0, 1].")
@click.option("--reps", default=5, show_default=True, type=int, help="Repetitions per BER (>= 1).")
@_error_options
@click.option("--masks", "masks_path", default=None, type=click.Path(dir_okay=False),
              help="Evaluate under the flip patterns in this file (from `refbnn masks`) instead "
                   "of keyed random ones; --ber, --reps, --seed and the granularity come from it.")
@click.option("--exact-neuron-flips", is_flag=True,
              help="Also print each hidden layer's mean probability that a neuron's output flips "
                   "(closed form, no sampling).")
@_engine_option
@_json_option
@fails_with_exit_2
def eval_cmd(model_path, data_path, ber_text, reps, seed, granularity, batch_size, layers_text,
             activations, masks_path, exact_neuron_flips, engine, json_path) -> None:
    """Accuracy under symmetric, transient bit flips (paper Fig. 1, top row).

    For each BER p and repetition r, every targeted bit of batch j reads flipped where
    default_rng([seed, r, j, t]).random(shape) < p (t: tensor number, weights first).
    Reports mean, standard deviation, min, max over repetitions and a 95% t-interval
    over repetitions (valid whatever the granularity, as repetitions are independent).
    The same seed gives identical results in either engine.
    """
    from .biterrors import Summary, correct_under_errors, layer_flip_probabilities, read_masks

    bers = _parse(ber_text, _parse_bers)
    if reps < 1:
        raise InputError(f"--reps: must be at least 1, got {reps}")
    model, data = _load(model_path, data_path)
    n = len(data.y)
    given = read_masks(masks_path, model) if masks_path else None
    if given is not None:
        bers, reps = [("file", float("nan"))], given.reps
    rows, summaries = [], []
    progress = Progress("bit errors")
    total = len(bers) * reps
    try:
        for b, (name, p) in enumerate(bers):
            em = _error_model(model, p, seed, granularity, batch_size, layers_text, activations, n)
            if given is not None:
                em = type(em)(0.0, 0, given.batch_size, None, False)
                if given.n_batches < (n + given.batch_size - 1) // given.batch_size:
                    raise InputError(f"{masks_path}: w0: {given.n_batches} batches of {given.batch_size} "
                                     f"do not cover {n} inputs")
            summary = Summary(name)
            for r in range(reps):
                correct = correct_under_errors(ENGINES[engine], model, data.x, data.y, em, r, given)
                summary.accuracies.append(Fraction(correct, n))
                progress(b * reps + r + 1, total)
            summaries.append(summary.as_dict())
    finally:
        progress.close()
    for d in summaries:
        ci = "" if d["ci95"] is None else f"[{d['ci95'][0]:.4f}, {d['ci95'][1]:.4f}]"
        rows.append([d["ber"], d["reps"], f"{d['mean']['value']:.4f}", f"{d['std']:.4f}",
                     f"{d['min']['value']:.4f}", f"{d['max']['value']:.4f}", ci])
    click.echo(tabulate(rows, headers=["BER", "reps", "mean acc", "std", "min", "max", "95% CI (t)"]))
    size = given.batch_size if given is not None else em.batch_size
    result = {"model": model_path, "data": data_path, "engine": engine, "inputs": n,
              "seed": seed, "granularity": granularity, "batch_size": size,
              "layers": None if em.layers is None else list(em.layers), "activations": activations,
              "results": summaries}
    if exact_neuron_flips:
        ps = [p for _, p in bers]
        flips = layer_flip_probabilities(FastEngine(model), data.x, ps)
        result["neuron_flip_probability"] = {f"layer {l}": dict(zip([b for b, _ in bers], v))
                                             for l, v in flips.items()}
        click.echo(tabulate([[f"layer {l}"] + [f"{v:.4g}" for v in vals] for l, vals in flips.items()],
                            headers=["P(neuron output flips)"] + [b for b, _ in bers]))
    if json_path:
        write_json(json_path, result)


@main.command("masks")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--ber", "ber_text", required=True, help="The bit error rate p in [0, 1].")
@click.option("--reps", default=1, show_default=True, type=click.IntRange(1), help="Repetitions.")
@click.option("--inputs", required=True, type=click.IntRange(1), help="Inputs to cover (sets the batch count).")
@_error_options
@click.option("-o", "--output", "out_path", required=True, type=click.Path(dir_okay=False),
              help="The .npz masks file to write.")
@fails_with_exit_2
def masks_cmd(model_path, ber_text, reps, inputs, seed, granularity, batch_size, layers_text,
              activations, out_path) -> None:
    """Write the keyed flip masks that `refbnn eval` would use, for replay elsewhere.

    Layout (docs/bit-errors.md): batch_size (int), w{t} bool [R, J, *weight shape] per
    targeted weight tensor t, a{t} bool [R, J, batch_size, *input shape] per activation
    tensor. `refbnn eval --masks FILE` evaluates under exactly these flips.
    """
    from .biterrors import write_masks

    bers = _parse(ber_text, _parse_bers)
    if len(bers) != 1:
        raise InputError("--ber: give exactly one bit error rate")
    model = read_model(model_path)
    em = _error_model(model, bers[0][1], seed, granularity, batch_size, layers_text, activations, inputs)
    write_masks(out_path, model, em, reps, inputs)
    click.echo(f"wrote {out_path}: {reps} repetitions x {(inputs + em.batch_size - 1) // em.batch_size} batches")


def _train_options(func):
    func = click.option("--order", type=click.Choice(["pool-threshold", "threshold-pool"]),
                        default="pool-threshold", show_default=True,
                        help="Block order: conv -> pool -> BN -> sign (the authors'), or pool after sign.")(func)
    func = click.option("--padding", default=1, show_default=True, type=click.IntRange(0, 1),
                        help="Zero padding of the 3x3 convolutions.")(func)
    func = click.option("--seed", default=0, show_default=True, type=int,
                        help="Seed of initialisation, shuffling and training flips.")(func)
    func = click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(min=0, min_open=True),
                        help="Adam learning rate, halved every 25 epochs.")(func)
    func = click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1))(func)
    func = click.option("--epochs", default=None, type=click.IntRange(1),
                        help="Epochs (paper: 100 for Fashion, 250 for CIFAR10).")(func)
    func = click.option("--dataset", default="digits", show_default=True,
                        help="digits (scikit-learn's, built in), fashion-mnist[:DIR] (default DIR "
                             "/usr/share/datasets/fashion-mnist), mnist-idx:DIR, cifar10:DIR, npz:TRAIN,TEST.")(func)
    func = click.option("--z", "z", default=None, type=click.IntRange(1),
                        help="Input bound Z, for npz data sets.")(func)
    return func


def _train(cfg, data, checkpoint=None, resume=False, label=""):
    """Run (or resume) training to cfg.epochs, printing a line per epoch; returns the Trainer."""
    from .trainer import Trainer

    trainer = Trainer(cfg, data)
    if resume:
        if not checkpoint or not os.path.exists(checkpoint):
            raise InputError(f"--resume: no checkpoint at {checkpoint!r} (give --checkpoint PATH)")
        trainer.load(checkpoint)
        click.echo(f"{label}resumed from {checkpoint} after epoch {trainer.epoch}")
    while trainer.epoch < cfg.epochs:
        progress = Progress(f"{label}epoch {trainer.epoch + 1}/{cfg.epochs}")
        try:
            log = trainer.train_epoch(progress)
        finally:
            progress.close()
        click.echo(f"{label}epoch {log.epoch:3d}/{cfg.epochs}: loss {log.loss:.4f}, "
                   f"train accuracy {log.train_accuracy:.4f}, test accuracy {log.test_accuracy:.4f}")
        if checkpoint:
            trainer.save(checkpoint)
    return trainer


@main.command()
@click.option("--arch", default="fc-32", show_default=True,
              help="fc:W1,W2,... | cnn:C1,mp,C2,mp;F1,... | a preset: fashion-fc, fashion-cnn, "
                   "cifar10-cnn, fc-8..fc-128, cnn-8..cnn-64.")
@_train_options
@click.option("--train-ber", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Bit flip training: flip each binarised weight with this probability at every forward call.")
@click.option("-o", "--output", "out_path", required=True, type=click.Path(dir_okay=False),
              help="The model file to write (SPEC format).")
@click.option("--test-data", "test_path", default=None, type=click.Path(dir_okay=False),
              help="Also write the test split as a data file for metrics/eval/certify.")
@click.option("--checkpoint", default=None, type=click.Path(dir_okay=False),
              help="Write a checkpoint (.npz) after every epoch.")
@click.option("--resume", is_flag=True, help="Continue from --checkpoint to --epochs: the same result "
                                              "as an uninterrupted run.")
@fails_with_exit_2
def train(arch, order, padding, seed, lr, batch_size, epochs, dataset, z, train_ber, out_path, test_path,
          checkpoint, resume) -> None:
    """Train a BNN in NumPy (straight-through estimator, batch norm, Adam) and export it.

    The export folds batch norm into integer thresholds; the reported test accuracy is
    computed through the exported integer model, so it is exactly what `refbnn metrics`
    will report. Reproducible: the same options give the same model, bit for bit.
    """
    from .datasets import load_dataset
    from .trainer import TrainConfig

    data = load_dataset(dataset, z)
    cfg = TrainConfig(arch, epochs or 20, batch_size, lr, 25, train_ber, seed, order, padding)
    trainer = _train(cfg, data, checkpoint, resume)
    write_model(out_path, trainer.model())
    if test_path:
        write_data(test_path, data.x_test, data.y_test)
    click.echo(f"wrote {out_path}" + (f" and {test_path}" if test_path else ""))


@main.command()
@click.option("--dataset", default="digits", show_default=True,
              help="digits (built in) or fashion-mnist[:DIR] (the paper's data).")
@click.option("--arch", default=None, help="Architecture (default: fc-32 on digits, fc-128 on fashion-mnist).")
@click.option("--epochs", default=None, type=click.IntRange(1),
              help="Epochs per model (default: 60 on digits, 10 on fashion-mnist).")
@click.option("--train-ber", default=0.05, show_default=True, type=click.FloatRange(0, 1),
              help="Flip probability for the bit-flip-trained model.")
@click.option("--ber", "ber_text", default="0,0.01,0.05,0.1", show_default=True,
              help="Bit error rates for the accuracy sweep.")
@click.option("--reps", default=5, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", "out_dir", default="demo-out", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the two models and the test data.")
@_json_option
@fails_with_exit_2
def demo(dataset, arch, epochs, train_ber, ber_text, reps, seed, out_dir, json_path) -> None:
    """The paper's story in one command: train a regular and a bit-flip-trained BNN, then
    compare accuracy over BER, the T tuple, T-bar and VAR(Pi) side by side.

    Bit flip training should raise the accuracy under errors, raise T (larger margins,
    paper section V-B) and, for small networks, lower VAR(Pi) (Hypothesis 1).
    """
    from .biterrors import ErrorModel, Summary, correct_under_errors
    from .datasets import load_dataset
    from .importance import importance_variance
    from .margin import DEFAULT_B, t_bar
    from .trainer import TrainConfig

    bers = _parse(ber_text, _parse_bers)
    data = load_dataset(dataset)
    fashion = dataset.startswith("fashion")
    arch = arch or ("fc-128" if fashion else "fc-32")
    epochs = epochs or (10 if fashion else 60)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_data(out / "test.npz", data.x_test, data.y_test)
    columns = {}
    for name, p in (("regular", 0.0), (f"flips {train_ber:g}", train_ber)):
        cfg = TrainConfig(arch, epochs, 128, 1e-3, 25, p, seed)
        trainer = _train(cfg, data, label=f"[{name}] ")
        model = trainer.model()
        write_model(out / f"{'regular' if p == 0 else 'flips'}.json", model)
        engine = FastEngine(model)
        x, y = data.x_test, data.y_test
        sweep = {}
        for b, q in bers:
            summary = Summary(b)
            em = ErrorModel(q, seed, 128)
            for r in range(reps):
                summary.accuracies.append(Fraction(correct_under_errors(FastEngine, model, x, y, em, r), len(y)))
            sweep[b] = summary.as_dict()
        T = engine.tolerance(x, DEFAULT_B).overall
        pi = engine.importance(x, y)
        columns[name] = {"train_ber": p, "sweep": sweep, "T": {str(b): exact(v) for b, v in T.items()},
                         "T_bar": exact(t_bar(T)), "var_importance": exact(importance_variance(pi))}
    names = list(columns)
    rows = [[f"accuracy at BER {b}"] + [f"{columns[n]['sweep'][b]['mean']['value']:.4f}" for n in names]
            for b, _ in bers]
    rows += [[f"T^{b}"] + [f"{columns[n]['T'][str(b)]['value']:.4f}" for n in names] for b in DEFAULT_B]
    rows += [["T-bar"] + [f"{columns[n]['T_bar']['value']:.4f}" for n in names]]
    rows += [["VAR(Pi)"] + [f"{columns[n]['var_importance']['value']:.3e}" for n in names]]
    click.echo(f"\n{data.name}, {arch}, {epochs} epochs, {len(data.y_test)} test inputs, "
               f"{reps} repetitions per BER (seed {seed})")
    click.echo(tabulate(rows, headers=[""] + names))
    click.echo(f"models and test data in {out}/ (try: refbnn metrics {out}/flips.json {out}/test.npz --importance)")
    if json_path:
        write_json(json_path, {"dataset": data.name, "arch": arch, "epochs": epochs, "models": columns})


def _parse_ks(text: str) -> list[int]:
    out = []
    for token in text.split(","):
        token = token.strip()
        if not token.isdigit():
            raise ValueError(f"--k: {token!r} is not a non-negative integer")
        out.append(int(token))
    return out


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("data_path", metavar="DATA", type=click.Path(dir_okay=False))
@click.option("--k", "k_text", default="0,1,2,4,8", show_default=True,
              help="Comma-separated flip counts k at which to report certified accuracy.")
@click.option("--check", "draws", default=0, show_default=True, type=click.IntRange(0),
              help="Also draw this many adversarial flip patterns at the certified k of random "
                   "certified inputs and run them through the reference interpreter.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for --check.")
@_json_option
@fails_with_exit_2
def certify(model_path, data_path, k_text, draws, seed, json_path) -> None:
    """Certified accuracy under any k weight flips per neuron (Theorem 1, network corollary).

    For each input, the largest k such that flipping any k weights of every neuron
    (per filter for conv layers) and of every output unit cannot change the prediction:
    every neuron at every position needs floor(T/2) >= k, and the top class score
    must lead every other by more than 4k (by at least 4k over larger class indices,
    which lose ties). Certified accuracy at k: inputs correct and certified at k.
    Exit 1 if --check ever finds a certified prediction that changes (a bug).
    """
    from .certify import check_certificates, certified_ks

    ks_wanted = _parse(k_text, _parse_ks)
    model, data = _load(model_path, data_path)
    engine = FastEngine(model)
    ks, where = certified_ks(engine, data.x)
    correct = engine.predictions(data.x) == data.y
    n = len(data.y)
    cert = {str(k): exact(Fraction(int((correct & (ks >= k)).sum()), n)) for k in ks_wanted}
    names = [f"layer {nl.threshold_index}" for nl in model.neuron_layers] + ["scores"]
    bottleneck = {name: where.count(name) for name in names}
    click.echo(f"{n} inputs, accuracy {int(correct.sum()) / n:.6g}; certified k per input: "
               f"min {int(ks.min())}, median {int(np.median(ks))}, max {int(ks.max())}")
    click.echo(tabulate([[k, _show(v)] for k, v in cert.items()], headers=["k", "certified accuracy"]))
    click.echo(tabulate([[name, count] for name, count in bottleneck.items()],
                        headers=["limited by", "inputs"]))
    checks = check_certificates(engine, Interpreter, data.x, ks, draws, seed) if draws else []
    broken = [c for c in checks if c["changed"]]
    if draws:
        click.echo(f"--check: {len(checks)} adversarial patterns at the certified k, "
                   f"{len(broken)} changed a certified prediction")
    if json_path:
        write_json(json_path, {"model": model_path, "data": data_path, "inputs": n,
                               "accuracy": exact(Fraction(int(correct.sum()), n)),
                               "certified_accuracy": cert, "bottleneck": bottleneck,
                               "certified_k": [int(k) for k in ks], "checks": checks})
    sys.exit(1 if broken else 0)


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("data_path", metavar="DATA", type=click.Path(dir_okay=False))
@click.option("--claims", "claims_path", required=True, type=click.Path(dir_okay=False),
              help="JSON file of claimed values (the layout `refbnn metrics --json` writes).")
@click.option("--atol", default=1e-9, show_default=True, type=float,
              help="Allowed absolute error for claims given as plain numbers; "
                   "claims given as {\"exact\": \"p/q\"} must match exactly.")
@_engine_option
@_json_option
@fails_with_exit_2
def verify(model_path, data_path, claims_path, atol, engine, json_path) -> None:
    """Check another implementation's numbers: recompute every claimed quantity exactly.

    CLAIMS may hold any of: accuracy, T (an object from b to value), T_bar, layers
    (per-layer T and T_bar), importance, var_importance, predictions (a list of
    class indices), inputs, neurons, and bit_errors (the layout `refbnn eval --json`
    writes: seed, batch_size, layers, activations and results with each BER's
    accuracies per repetition, recomputed under the same keyed masks).
    Exit 0 if every claim passes, 1 if any fails.
    """
    from .verify import check_claims, read_claims

    model, data = _load(model_path, data_path)
    claims = read_claims(claims_path)
    try:
        checks = check_claims(ENGINES[engine](model), model, data, claims, claims_path, atol)
    except ZeroAccuracyError as e:
        raise InputError(f"{data_path}: {e}") from None
    failed = [c for c in checks if not c["pass"]]
    click.echo(tabulate([[c["quantity"], c["claimed"], c["exact"]["exact"] if isinstance(c["exact"], dict)
                          else c["exact"], "pass" if c["pass"] else "FAIL"] for c in checks],
                        headers=["quantity", "claimed", "exact", "result"]))
    click.echo(f"{len(checks)} claims: {len(checks) - len(failed)} pass, {len(failed)} fail")
    if json_path:
        write_json(json_path, {"model": model_path, "data": data_path, "claims": claims_path,
                               "checks": checks, "passed": len(checks) - len(failed),
                               "failed": len(failed)})
    sys.exit(1 if failed else 0)


if __name__ == "__main__":   # pragma: no cover
    main()
