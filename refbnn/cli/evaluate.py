"""Commands about bit errors: `eval` (accuracy over BER) and `masks` (replayable flips)."""
from __future__ import annotations

import click
from tabulate import tabulate

from ..biterrors.flipprob import layer_flip_probabilities
from ..biterrors.masks import ErrorModel, targeted, write_masks
from ..biterrors.protect import describe, parse_protect
from ..biterrors.sweep import MAX_REPS, accuracy_sweep, check_sweep_size
from ..engines.fast import FastEngine
from ..formats.claimsfile import bit_errors_claims
from ..formats.files import InputError, write_json
from ..formats.maskfile import read_masks
from ..formats.modelfile import read_model
from .common import (
    ENGINES,
    Progress,
    engine_option,
    error_model_of_options,
    error_options,
    json_option,
    load,
    naming_files,
    parsed,
    writable,
)
from .group import main
from .options import parse_bers


@main.command("eval", short_help="Accuracy over bit error rates, with spread and 95% interval.")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("data_path", metavar="DATA", type=click.Path(dir_okay=False))
@click.option("--ber", "ber_text", default="0,0.01,0.05,0.1", show_default=True,
              help="Comma-separated bit error rates p in [0, 1].")
@click.option("--reps", default=5, show_default=True, type=click.IntRange(1),
              help=f"Repetitions per BER (at most {MAX_REPS:,}; the work is checked before it starts).")
@error_options
@click.option("--masks", "masks_path", default=None, type=click.Path(dir_okay=False),
              help="Evaluate under the flip patterns in this file (from `refbnn masks`) instead "
                   "of keyed random ones; --ber, --reps, --seed and the granularity come from it.")
@click.option("--protect", "protect_spec", default=None, metavar="SPEC",
              help="Keep these units free of bit errors (their weight bits, and with --activations their "
                   "outputs): L:n,n,... (channels n of weight layer L), layer:L, all, top-importance:K or P%, "
                   "random:K or P%, or a JSON file. The other bits flip exactly as without it (paired).")
@click.option("--exact-neuron-flips", is_flag=True,
              help="Also print each hidden layer's mean probability that a neuron's output flips "
                   "(closed form, no sampling).")
@engine_option
@json_option
def eval_cmd(model_path, data_path, ber_text, reps, seed, granularity, batch_size, layers_text,
             activations, masks_path, protect_spec, exact_neuron_flips, engine, json_path) -> None:
    """Accuracy under symmetric, transient bit flips (paper Fig. 1, top row).

    For each BER p and repetition r, every targeted bit of batch j reads flipped where
    default_rng([seed, r, j, t]).random(shape) < p (t: tensor number, weights first).
    Reports mean, standard deviation, min, max over repetitions and a 95% t-interval
    over repetitions (valid whatever the granularity, as repetitions are independent).
    The same seed gives identical results in either engine.
    """
    bers = parsed(ber_text, parse_bers)
    model, data = load(model_path, data_path)
    n = len(data.y)
    em = error_model_of_options(model, 0.0, seed, granularity, batch_size, layers_text, activations, n)
    given = read_masks(masks_path, model, n) if masks_path else None
    if given is not None:   # the flips, repetitions and batch size come from the file
        bers, reps, em = [("file", float("nan"))], given.reps, ErrorModel(0.0, 0, given.batch_size)
    check_sweep_size(model, n, reps, len(bers), em, "--reps" if given is None else masks_path)
    runner = ENGINES[engine](model)
    protection = None
    if protect_spec is not None:
        with naming_files(model_path, data_path):
            pi = runner.importance(data.x, data.y) if protect_spec.strip().startswith("top-importance") else None
        protection = parse_protect(protect_spec, model, pi, seed)
        click.echo(f"protected: {describe(model, protection)}")
    with Progress("bit errors") as progress:
        summaries = [s.as_dict() for s in accuracy_sweep(runner, data.x, data.y, bers, reps,
                                                         em, given, progress, protection)]
    rows = []
    for d in summaries:
        ci = "" if d["ci95"] is None else f"[{d['ci95'][0]:.4f}, {d['ci95'][1]:.4f}]"
        rows.append([d["ber"], d["reps"], f"{d['mean']['value']:.4f}", f"{d['std']:.4f}",
                     f"{d['min']['value']:.4f}", f"{d['max']['value']:.4f}", ci])
    click.echo(tabulate(rows, headers=["BER", "reps", "mean acc", "std", "min", "max", "95% CI (t)"]))
    result = {"model": model_path, "data": data_path, "engine": engine,
              **bit_errors_claims(seed, em.batch_size, granularity, em.layers, activations, n, summaries)}
    if protection is not None:
        result["protect"] = {"spec": protect_spec, "channels": {str(i): list(c) for i, c in protection.channels.items()},
                             "weight_bits": protection.weight_bits(model)}
    if exact_neuron_flips:
        flips = layer_flip_probabilities(FastEngine(model), data.x, [p for _, p in bers])
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
@error_options
@click.option("-o", "--output", "out_path", required=True, type=click.Path(dir_okay=False), callback=writable,
              help="The .npz masks file to write.")
@json_option
def masks_cmd(model_path, ber_text, reps, inputs, seed, granularity, batch_size, layers_text,
              activations, out_path, json_path) -> None:
    """Write the keyed flip masks that `refbnn eval` would use, for replay elsewhere.

    Layout (docs/bit-errors.md): batch_size (int), w{t} bool [R, J, *weight shape] per
    targeted weight tensor t, a{t} bool [R, J, batch_size, *input shape] per activation
    tensor. `refbnn eval --masks FILE` evaluates under exactly these flips.
    """
    bers = parsed(ber_text, parse_bers)
    if len(bers) != 1:
        raise InputError("--ber: give exactly one bit error rate")
    model = read_model(model_path)
    em = error_model_of_options(model, bers[0][1], seed, granularity, batch_size, layers_text, activations, inputs)
    write_masks(out_path, model, em, reps, inputs)
    n_batches = -(-inputs // em.batch_size)
    click.echo(f"wrote {out_path}: {reps} repetitions x {n_batches} batches")
    if json_path:
        write_json(json_path, {"model": model_path, "masks": out_path, "ber": bers[0][0], "seed": seed,
                               "reps": reps, "inputs": inputs, "batch_size": em.batch_size, "batches": n_batches,
                               "arrays": [ft.name for ft in targeted(model, em)]})
