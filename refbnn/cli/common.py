"""What the commands share: options, loading, progress bars, number display."""
from __future__ import annotations

import importlib
import sys
from contextlib import contextmanager
from typing import Iterator, Optional

import click

from ..api import ENGINES
from ..biterrors.masks import ErrorModel, error_model
from ..formats.datafile import read_data
from ..formats.files import InputError, check_writable
from ..formats.modelfile import read_model
from ..semantics.importance import ZeroAccuracyError
from ..semantics.model import NoNeuronsError
from .options import parse_naturals

SEED = click.IntRange(0, 2**63 - 1)   # numpy's SeedSequence takes any non-negative integer


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

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def require(module: str, what: str, extra: str) -> None:
    """Bad input naming the extra that installs `module`, before any work, where it is missing."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise InputError(f"{what} needs {module.split('.')[0]}: pip install 'refbnn[{extra}]'") from None


def parsed(text: str, parser, *args):
    """Run an option parser of refbnn.formats.values; its ValueError becomes bad input."""
    try:
        return parser(text, *args)
    except ValueError as e:
        raise InputError(str(e)) from None


@contextmanager
def naming_files(model_path: str, data_path: str) -> Iterator[None]:
    """Metrics that are undefined on these files become bad input naming the file: A = 0
    (Pi is undefined: the data file) and no neurons (T, Pi undefined: the model file)."""
    try:
        yield
    except ZeroAccuracyError as e:
        raise InputError(f"{data_path}: {e}") from None
    except NoNeuronsError as e:
        raise InputError(f"{model_path}: layers: {e}") from None


def load(model_path: str, data_path: str):
    """The model and its data set, both validated."""
    model = read_model(model_path)
    return model, read_data(data_path, model)


def show(q: dict) -> str:
    """A float for reading; the exact value is in the JSON."""
    return f"{q['value']:.6g}"


def b_option(func):
    return click.option("--b", "b_text", default="2,4,8,16,32,64", show_default=True,
                        help="Comma-separated margins b, each read exactly: 2, 0.5 or 1/2.")(func)


def writable(ctx: click.Context, param: click.Parameter, value):
    """Option callback: an output path must be writable before any work starts."""
    if value is not None:
        check_writable(value, max(param.opts, key=len))
    return value


def json_option(func):
    return click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, callback=writable,
                        help="Also write the result as JSON to this file.")(func)


class FiniteFloat(click.ParamType):
    """A float within [lo, hi] (lo excluded if lo_open); NaN and infinities are refused."""

    name = "float"

    def __init__(self, lo: float, hi: float, lo_open: bool = False):
        self.lo, self.hi, self.lo_open = lo, hi, lo_open

    def convert(self, value, param, ctx):
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{str(value)[:40]!r} is not a number", param, ctx)
        if v != v or v in (float("inf"), float("-inf")) or v > self.hi or v < self.lo or \
                (self.lo_open and v == self.lo):
            bracket = "(" if self.lo_open else "["
            self.fail(f"{str(value)[:40]} is not in {bracket}{self.lo:g}, {self.hi:g}]", param, ctx)
        return v


def engine_option(func):
    return click.option("--engine", type=click.Choice(sorted(ENGINES)), default="fast", show_default=True,
                        help="fast: the fast engine, on the bit kernel where the `fast` extra (numba) is "
                             "installed and the model is large enough to gain, else on exact float GEMMs; "
                             "numpy or bits: the fast engine on that kernel for every layer; reference: the "
                             "bitarray interpreter (the definition; slow, for cross-checks). All give the "
                             "same numbers.")(func)


def error_options(func):
    """--seed, --granularity, --batch-size, --layers, --activations: how bit flips are drawn."""
    func = click.option("--seed", default=0, show_default=True, type=SEED,
                        help="Seed of the keyed flip masks.")(func)
    func = click.option("--granularity", type=click.Choice(["batch", "input", "pass"]), default="batch",
                        show_default=True, help="A fresh flip pattern per batch, per input, or one per pass.")(func)
    func = click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1, 2**20),
                        help="Inputs per flip pattern with --granularity batch.")(func)
    func = click.option("--layers", "layers_text", default=None,
                        help="Comma-separated weight layer indices to target (default: all; see inspect).")(func)
    func = click.option("--activations", is_flag=True,
                        help="Also flip the +-1 activations that feed hidden weight layers.")(func)
    return func


def error_model_of_options(model, p: float, seed: int, granularity: str, batch_size: int, layers_text: Optional[str],
                           activations: bool, n_inputs: int) -> ErrorModel:
    """The error model that `error_options` describe, --layers checked against the model."""
    layers = None
    if layers_text not in (None, "all"):
        what = (f"a weight layer of this model (weight layers: "
                f"{', '.join(map(str, model.weight_indices))}; see refbnn inspect)")
        layers = tuple(parsed(layers_text, parse_naturals, "--layers", model.weight_indices, what))
    return error_model(model, p, seed, granularity, batch_size, layers, activations, n_inputs)
