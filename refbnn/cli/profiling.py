"""`refbnn profile`: one model's bit error tolerance on one page, with figures."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..biterrors.sweep import MAX_REPS, check_sweep_size
from ..engines.fast import FastEngine
from ..formats.files import InputError, atomic_open, write_json
from ..measure.profile import ProfileConfig, profile, profile_seconds
from ..measure.profile_figures import profile_figures
from ..measure.profile_page import write_page
from ..reports.figures import available
from ..reports.provenance import portable_command, relative_to
from .common import Progress, b_option, error_model_of_options, error_options, json_option, load, naming_files, parsed
from .group import main
from .options import parse_bers, parse_bs, parse_naturals


class _Bars:
    """One progress bar per labelled phase (Algorithm 1, bit errors, protected, controls)."""

    def __init__(self):
        self.label, self.bar = None, None

    def __call__(self, label: str, done: int, total: int) -> None:
        if label != self.label:
            self.close()
            self.label, self.bar = label, Progress(label)
        self.bar(done, total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@main.command("profile", short_help="One model's tolerance to bit errors on one page, with figures.")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("data_path", metavar="DATA", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for profile.json, profile.md and the figures (PNG and SVG).")
@click.option("--ber", "ber_text", default="0,0.001,0.002,0.005,0.01,0.02,0.05,0.1", show_default=True,
              help="Comma-separated bit error rates for the accuracy curve.")
@click.option("--reps", default=10, show_default=True, type=click.IntRange(2, MAX_REPS),
              help="Repetitions (flip patterns) per BER; the paired test's smallest p is 2^-reps.")
@error_options
@b_option
@click.option("--k", "k_text", default="0,1,2,3,4,6,8", show_default=True,
              help="Comma-separated flip counts k for certified accuracy.")
@click.option("--no-importance", is_flag=True,
              help="Skip Algorithm 1 (Pi, VAR(Pi)) on models where it is too costly.")
@click.option("--protect", "protect_spec", default=None, metavar="SPEC",
              help="Also measure what keeping these units free of errors buys, against as many random units "
                   "of the same layers: top-importance:5%, top-importance:K, L:n,n,..., layer:L, a JSON file.")
@click.option("--controls", default=5, show_default=True, type=click.IntRange(1, 100),
              help="Random choices averaged for the control of --protect.")
@json_option
def profile_cmd(model_path, data_path, out_dir, ber_text, reps, seed, granularity, batch_size, layers_text,
                activations, b_text, k_text, no_importance, protect_spec, controls, json_path) -> None:
    """Measure one model's bit error tolerance and write it on one page.

    Writes DIR/profile.json (every number, exact where exact: accuracy, T per layer,
    Pi, VAR(Pi), accuracy per BER and repetition, certified accuracy, margins in
    tolerated flips, flip probabilities per neuron; `refbnn verify MODEL DATA --claims
    DIR/profile.json` passes on it), the figures (with the `plots` extra) and
    DIR/profile.md, which reads them in plain words.

    With --protect top-importance:5%, the 5% most important neurons (by Pi) are kept
    free of errors and compared, repetition by repetition under the same flips, with as
    many neurons of the same layers chosen at random: the page says at which BERs the
    importance-guided choice protects significantly better.
    """
    bers = parsed(ber_text, parse_bers)
    bs = parsed(b_text, parse_bs)
    ks = parsed(k_text, parse_naturals, "--k")
    if no_importance and protect_spec and protect_spec.strip().startswith("top-importance"):
        raise InputError("--protect: top-importance needs Pi; drop --no-importance")
    model, data = load(model_path, data_path)
    n = len(data.y)
    em = error_model_of_options(model, 0.0, seed, granularity, batch_size, layers_text, activations, n)
    check_sweep_size(model, n, reps, len(bers), em, "--reps")
    cfg = ProfileConfig(bers, reps, em, granularity, bs, ks, not no_importance, protect_spec, controls)
    engine = FastEngine(model)
    seconds = profile_seconds(engine, data.x, cfg)
    if seconds > 60:
        sweeps = 1 + (1 + controls if protect_spec else 0)
        click.echo(f"profile: about {seconds / 60:.0f} min ({sweeps} sweep(s) of {reps} repetitions x {len(bers)} "
                   f"BERs{', Algorithm 1' if not no_importance else ''}, timed on a slice); progress below", err=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bars = _Bars()
    try:
        with naming_files(model_path, data_path):
            doc = profile(engine, data.x, data.y, cfg, bars)
    finally:
        bars.close()
    command = portable_command(sys.argv[1:], out, paths=(model_path, data_path)) \
        if sys.argv[1:2] == ["profile"] else "refbnn profile (called from Python)"
    doc = {"model": relative_to(model_path, out), "data": relative_to(data_path, out), **doc}
    doc["profile"]["command"] = command
    figures = profile_figures(doc, out) if available() else []
    doc["profile"]["figures"] = figures
    write_json(out / "profile.json", doc)
    if json_path:       # the same document, where the caller wants it too
        write_json(json_path, doc)
    with atomic_open(out / "profile.md", "w") as f:
        f.write(write_page(doc, figures, command))
    click.echo(f"wrote {out}/profile.json, profile.md" + (f" and {len(figures)} figure files" if figures else
                                                           " (figures skipped: pip install 'refbnn[plots]')"))
