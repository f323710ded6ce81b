"""refbnn from Python: every capability of the command line as a function, with the
command's name (`metrics`, `certify`, `profile`, `train`, `verify`, `import_model`,
`export_model`). `import refbnn` gives them all (`refbnn.__all__`).

Numbers come back exact (`fractions.Fraction`) where the paper's quantity is a ratio of
integers; `float()` of one is the value to print. A model is a `refbnn.Model`; data are
NumPy integer arrays x [I, C, H, W] or [I, K] (``|x| <= Z``) and y [I].
"""
from __future__ import annotations

import os
from functools import partial
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Optional, Sequence, Union

import numpy as np

from .biterrors.masks import error_model
from .biterrors.protect import Protection, parse_protect
from .biterrors.sweep import accuracy_sweep, check_sweep_size
from .demo.bars import example_data, example_model
from .engines.fast import FastEngine
from .engines.interpreter import Interpreter
from .formats.claimsfile import jsonable
from .formats.datafile import Dataset, read_data, write_data
from .formats.modelfile import read_model, write_model
from .formats.values import parse_rational
from .measure.certify import certified_accuracy as _certified_accuracy
from .measure.metrics import metrics_document
from .measure.profile import ProfileConfig
from .measure.profile import profile as _profile
from .semantics.accuracy import accuracy
from .semantics.importance import importance_variance
from .semantics.margin import DEFAULT_B, t_bar
from .semantics.model import Model
from .training.datasets import DataSplit
from .training.datasets import load_dataset as _load_dataset
from .training.trainer import TrainConfig
from .training.trainer import train as _train
from .oracle.report import ClaimsReport, claims_report

PathLike = Union[str, "os.PathLike[str]"]
Numbers = Union[int, float, Fraction, str]
ENGINES = {"fast": FastEngine,                                   # the names of --engine
           "numpy": partial(FastEngine, kernel="numpy"), "bits": partial(FastEngine, kernel="bits"),
           "reference": Interpreter}

__all__ = [
    "Model", "load_model", "save_model", "load_data", "save_data", "example_model", "example_data",
    "metrics", "Metrics", "LayerMetrics", "accuracy_under_bit_errors", "BitErrorResult", "certify",
    "profile", "load_dataset", "train", "TrainConfig", "verify", "ClaimsReport", "import_model", "export_model", "to_torch",
]


# -- files -----------------------------------------------------------------------------------


def load_model(path: PathLike) -> Model:
    """Read a refbnn model file (JSON, docs/semantics.md §3.2), every field checked.

    >>> import refbnn, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "bars.json")
    >>> refbnn.save_model(refbnn.example_model(), path)
    >>> refbnn.load_model(path) == refbnn.example_model()
    True
    """
    return read_model(path)


def save_model(model: Model, path: PathLike) -> None:
    """Write `model` as a refbnn model file, atomically: a crash leaves the old file or the
    new one, never half of one.

    >>> import refbnn, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "m.json")
    >>> refbnn.save_model(refbnn.example_model(), path)
    >>> sorted(os.listdir(os.path.dirname(path)))           # no temporary file left beside it
    ['m.json']
    """
    write_model(path, model)


def load_data(path: PathLike, model: Model) -> tuple[np.ndarray, np.ndarray]:
    """Read a data file (.npz with integer arrays x and y, §3.3), checked against `model`
    (input shape, ``|x| <= Z``, labels); returns (x, y) as int64.

    >>> import refbnn, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "bars.npz")
    >>> refbnn.save_data(path, *refbnn.example_data(10))
    >>> x, y = refbnn.load_data(path, refbnn.example_model())
    >>> x.shape, y.shape
    ((10, 1, 8, 8), (10,))
    """
    data = read_data(path, model)
    return data.x, data.y


def save_data(path: PathLike, x: np.ndarray, y: np.ndarray) -> None:
    """Write x and y as a refbnn data file (.npz of int64 arrays), atomically.

    >>> import refbnn, tempfile, os, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "d.npz")
    >>> refbnn.save_data(path, np.zeros((2, 1, 8, 8), int), np.array([0, 1]))
    >>> sorted(np.load(path).files)
    ['x', 'y']
    """
    write_data(path, np.asarray(x), np.asarray(y))


# -- metrics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerMetrics:
    """One threshold layer's share of T: its T at each b and T-bar (the mean over the b)."""

    layer: int
    neurons: int
    T: dict[Fraction, Fraction]
    T_bar: Fraction


@dataclass(frozen=True)
class Metrics:
    """The result of `metrics`: accuracy, the T tuple (eqs. 1-5) per b and its mean T-bar,
    T per threshold layer, and with importance=True Pi per neuron (Algorithm 1) and
    VAR(Pi) (eq. 6). Every number is an exact Fraction; `to_claims()` is the document
    `refbnn metrics --json` writes (which `verify` reads)."""

    accuracy: Fraction
    T: dict[Fraction, Fraction]
    T_bar: Fraction
    layers: list[LayerMetrics]
    importance: Optional[list[Fraction]]
    var_importance: Optional[Fraction]
    claims: dict = field(repr=False, compare=False)

    def to_claims(self) -> dict:
        """The claims document (§11.2) of these numbers: exact strings with floats beside them."""
        return self.claims

    def _rows(self) -> list[tuple[str, str]]:
        rows = [("accuracy", f"{float(self.accuracy):.4f}")]
        rows += [(f"T at b = {b}", f"{float(t):.4f}") for b, t in self.T.items()]
        rows.append(("T-bar", f"{float(self.T_bar):.4f}"))
        rows += [(f"T-bar of layer {lm.layer} ({lm.neurons} neurons)", f"{float(lm.T_bar):.4f}")
                 for lm in self.layers]
        if self.var_importance is not None:
            rows.append(("VAR(Pi)", f"{float(self.var_importance):.4g}"))
        return rows

    def __str__(self) -> str:
        width = max(len(k) for k, _ in self._rows())
        return "\n".join(f"{k:<{width}}  {v}" for k, v in self._rows())

    def _repr_html_(self) -> str:
        cells = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in self._rows())
        return f"<table><thead><tr><th>metric</th><th>value</th></tr></thead><tbody>{cells}</tbody></table>"


def _named_b(v: Numbers) -> tuple[str, Fraction]:
    """A b value and its name in the claims: a string as written ("1/2", "0.5", read
    exactly), a number as str() writes it."""
    if isinstance(v, str):
        return v, parse_rational(v, "b")
    return str(v), Fraction(v)


def metrics(model: Model, x: np.ndarray, y: np.ndarray, b: Sequence[Numbers] = DEFAULT_B,
            importance: bool = False, engine: str = "fast",
            progress: Optional[Callable[[int, int], None]] = None) -> Metrics:
    """The paper's metrics of `model` on (x, y): T at each margin b (eqs. 1-5, Definition 1),
    T-bar, T per layer, and with `importance` Pi and VAR(Pi) (Algorithm 1, eq. 6).
    A b given as a string ("0.1") is read exactly, as a decimal; a float is the binary
    number it holds. `engine` "reference" computes them with the bitarray definition instead of the fast
    engine (the same numbers, slower). As `refbnn metrics`.

    >>> import refbnn
    >>> model = refbnn.example_model(); x, y = refbnn.example_data(40)
    >>> m = refbnn.metrics(model, x, y, b=[0, 1, 2], importance=True)
    >>> m.accuracy, m.T[0]            # every input right; every margin is >= 0
    (Fraction(1, 1), Fraction(1, 1))
    >>> m.T[1]
    Fraction(9639, 10240)
    >>> print(m)
    accuracy                      1.0000
    T at b = 0                    1.0000
    T at b = 1                    0.9413
    T at b = 2                    0.6172
    T-bar                         0.8528
    T-bar of layer 1 (4 neurons)  0.7057
    T-bar of layer 5 (4 neurons)  1.0000
    VAR(Pi)                       0.07434
    >>> m.to_claims()["T"]["1"]
    {'exact': '9639/10240', 'value': 0.94130859375}
    """
    bs = [_named_b(v) for v in b]
    eng = ENGINES[engine](model)
    tol = eng.tolerance(np.asarray(x), [v for _, v in bs])
    acc = accuracy(eng.predictions(np.asarray(x)), y)
    pi = eng.importance(np.asarray(x), y, progress=progress) if importance else None
    doc = metrics_document(eng.name, model, len(y), bs, tol, acc, pi)
    # T-bar over the b as named (as the claims count them), the same rule as the document's
    layers = [LayerMetrics(nl.threshold_index, nl.channels, {v: per[v] for _, v in bs},
                           t_bar({name: per[v] for name, v in bs}))
              for nl, per in zip(model.neuron_layers, tol.layers)]
    return Metrics(acc, {v: tol.overall[v] for _, v in bs}, t_bar({name: tol.overall[v] for name, v in bs}),
                   layers, pi, None if pi is None else importance_variance(pi), doc)


# -- bit errors, certificates, the profile -----------------------------------------------------


@dataclass(frozen=True)
class BitErrorResult:
    """Accuracy at one bit error rate over the repetitions: exact per repetition, their
    mean, the sample standard deviation and the 95% Student-t interval (§6)."""

    ber: float
    accuracies: list[Fraction]
    mean: Fraction
    std: float
    ci95: Optional[tuple[float, float]]


def _protection(model: Model, x, y, protect: Union[None, str, dict], seed: int) -> Optional[Protection]:
    if protect is None:
        return None
    if isinstance(protect, dict):
        return Protection({int(k): tuple(sorted(v)) for k, v in protect.items()})
    pi = FastEngine(model).importance(x, y) if protect.strip().startswith("top-importance") else None
    return parse_protect(protect, model, pi, seed)


def accuracy_under_bit_errors(model: Model, x: np.ndarray, y: np.ndarray, ber: Sequence[float] = (0, 0.01, 0.05, 0.1),
                              reps: int = 5, seed: int = 0, granularity: str = "batch", batch_size: int = 128,
                              layers: Optional[Sequence[int]] = None, activations: bool = False,
                              protect: Union[None, str, dict] = None) -> list[BitErrorResult]:
    """Accuracy under symmetric random bit flips of the stored weights (and with
    `activations` the +-1 activations), with the keyed flips of §6: the same seed gives
    the same flips in every engine and run. `protect` keeps units free of errors: a
    SPEC as `refbnn eval --protect` reads it ("top-importance:25%", "layer:0", "0:1,2")
    or {weight layer: [output channels]}. As `refbnn eval`.

    >>> import refbnn
    >>> model = refbnn.example_model(); x, y = refbnn.example_data(40)
    >>> [float(r.mean) for r in refbnn.accuracy_under_bit_errors(model, x, y, ber=[0, 0.5], reps=3)]
    [1.0, 0.5083333333333333]
    >>> clean = refbnn.accuracy_under_bit_errors(model, x, y, ber=[0.5], reps=3, protect="all")
    >>> clean[0].accuracies                          # nothing left to flip
    [Fraction(1, 1), Fraction(1, 1), Fraction(1, 1)]
    """
    x, y = np.asarray(x), np.asarray(y)
    em = error_model(model, 0.0, seed, granularity, batch_size, None if layers is None else tuple(layers),
                     activations, len(y))
    bers = [(f"{p:g}", float(p)) for p in ber]
    check_sweep_size(model, len(y), reps, len(bers), em, "reps")
    chosen = _protection(model, x, y, protect, seed)
    out = []
    for p, s in zip(ber, accuracy_sweep(FastEngine(model), x, y, bers, reps, em, protect=chosen)):
        ci = s.ci95
        out.append(BitErrorResult(float(p), list(s.accuracies), s.mean, s.std, None if ci is None else tuple(ci)))
    return out


def certify(model: Model, x: np.ndarray, y: np.ndarray, k: Sequence[int] = (0, 1, 2, 3, 4)) -> dict[int, Fraction]:
    """Certified accuracy at each k (Theorem 1 across the network): the share of inputs
    predicted correctly whose prediction no k weight flips anywhere can change. As
    `refbnn certify`.

    >>> import refbnn
    >>> model = refbnn.example_model(); x, y = refbnn.example_data(40)
    >>> refbnn.certify(model, x, y, k=[0, 1, 2])     # on every input, some first-layer margin is < 4Z
    {0: Fraction(1, 1), 1: Fraction(0, 1), 2: Fraction(0, 1)}
    """
    doc = _certified_accuracy(FastEngine(model), np.asarray(x), np.asarray(y), list(k))
    return {int(kk): Fraction(v["exact"]) for kk, v in doc["certified_accuracy"].items()}


def profile(model: Model, x: np.ndarray, y: np.ndarray, ber: Sequence[float] = (0, 0.001, 0.01, 0.05, 0.1),
            reps: int = 10, seed: int = 0, b: Sequence[Numbers] = DEFAULT_B, k: Sequence[int] = (0, 1, 2, 3, 4),
            importance: bool = True, protect: Optional[str] = None, controls: int = 5) -> dict:
    """Every number of `refbnn profile` as its JSON document (a claims file with a
    `profile` section: certified accuracy, margins in tolerated flips, flip probabilities,
    importance shares, and with `protect` the comparison against random units). The page
    and figures are the command's; this returns the numbers.

    >>> import refbnn
    >>> model = refbnn.example_model(); x, y = refbnn.example_data(40)
    >>> doc = refbnn.profile(model, x, y, ber=[0, 0.1], reps=4)
    >>> doc["profile"]["margins"]["1"]["tolerated_flips"][:3]
    [7840, 2328, 72]
    """
    x, y = np.asarray(x), np.asarray(y)
    em = error_model(model, 0.0, seed, "batch", 128, None, False, len(y))
    cfg = ProfileConfig([(f"{p:g}", float(p)) for p in ber], reps, em, "batch",
                        [_named_b(v) for v in b], list(k), importance, protect, controls)
    return _profile(FastEngine(model), x, y, cfg)


# -- training, import and export -------------------------------------------------------------


def load_dataset(spec: str, z: Optional[int] = None) -> DataSplit:
    """A training and a test split as integer arrays (x_train, y_train, x_test, y_test, Z,
    classes): "digits" (scikit-learn's, the `data` extra), "fashion-mnist[:DIR]"
    (Debian's dataset-fashion-mnist), "mnist-idx:DIR", "cifar10:DIR" or "npz:TRAIN,TEST"
    (with z). As `refbnn train --dataset`.

    >>> import refbnn
    >>> digits = refbnn.load_dataset("digits")
    >>> digits.x_train.shape, digits.x_test.shape, digits.Z, digits.classes
    ((1348, 1, 8, 8), (449, 1, 8, 8), 16, 10)
    """
    return _load_dataset(spec, z)


def train(arch: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, z: int,
          epochs: int = 20, train_ber: float = 0.0, seed: int = 0, **options) -> Model:
    """Train a BNN with the NumPy trainer (straight-through estimator, batch norm, Adam;
    with `train_ber` > 0, bit flip training) and return it exported to an exact refbnn
    model. `arch` is "fc:W,...", "cnn:C,mp,...;F,..." or a preset ("fc-8", "cnn-fashion");
    `options` are further TrainConfig fields (batch_size, lr, order, padding, threads).
    As `refbnn train`.

    >>> import refbnn
    >>> x, y = refbnn.example_data(200, seed=1)
    >>> model = refbnn.train("fc:8", x[:150], y[:150], x[150:], y[150:], z=3, epochs=3)
    >>> model.neurons, model.classes
    (8, 2)
    """
    y_all = np.concatenate([np.asarray(y_train), np.asarray(y_test)])
    data = DataSplit(np.asarray(x_train), np.asarray(y_train), np.asarray(x_test), np.asarray(y_test), int(z),
                     int(y_all.max()) + 1, "arrays")
    return _train(TrainConfig(arch, epochs=epochs, train_ber=train_ber, seed=seed, **options), data).model()


def import_model(path: PathLike, z: Optional[int] = None, input_map: str = "x/Z",
                 input_shape: Optional[Sequence[int]] = None, layout: Optional[PathLike] = None) -> Model:
    """Import an ONNX or QONNX graph, a Keras/Larq file or a state dict (.pt, .npz,
    .safetensors with a layout file) as an exact refbnn model (§10). As `refbnn import`;
    ONNX needs the `import` extra, Keras files the `keras` extra.

    >>> import refbnn, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "bars.npz")
    >>> layout = refbnn.export_model(refbnn.example_model(), path, to="npz")
    >>> refbnn.import_model(path, layout=layout) == refbnn.example_model()
    True
    """
    from .importers import import_model as _import
    return _import(os.fspath(path), z=z, input_map=input_map,
                   input_shape=None if input_shape is None else tuple(input_shape),
                   layout=None if layout is None else os.fspath(layout)).model


def export_model(model: Model, path: PathLike, to: str = "onnx", input_map: str = "x/Z") -> Optional[str]:
    """Write `model` as an ONNX graph ("onnx"), FINN's QONNX dialect ("qonnx"), or a state
    dict ("npz", "safetensors", "pt") with its layout file beside it, whose path is
    returned. Importing the file gives back `model` (§13). As `refbnn export`.

    >>> import refbnn, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "bars.npz")
    >>> os.path.basename(refbnn.export_model(refbnn.example_model(), path, to="npz"))
    'bars.layout.json'
    """
    from .export.onnx import input_map_of
    a, c = input_map_of(input_map, model)
    if to in ("onnx", "qonnx"):
        from .export.onnx import write_onnx
        write_onnx(os.fspath(path), model, a, c, qonnx=to == "qonnx")
        return None
    from .export.statedict import write_state_dict
    return str(write_state_dict(os.fspath(path), to, model, a, c))


def to_torch(model: Model, input_map: str = "x/Z"):
    """A torch.nn.Module that computes `model`'s class scores from the input map of the
    integer data (needs torch: the `torch` extra). See refbnn.export.to_torch.

    >>> import refbnn, torch
    >>> model = refbnn.example_model(); x, y = refbnn.example_data(20)
    >>> net = refbnn.to_torch(model)
    >>> scores = net(torch.tensor(x / model.Z, dtype=torch.float32))
    >>> bool((scores.argmax(1).numpy() == y).all())         # the bars model is always right
    True
    """
    from .export import to_torch as _to_torch
    from .export.onnx import input_map_of
    return _to_torch(model, *input_map_of(input_map, model))


# -- the oracle -------------------------------------------------------------------------------


def verify(model: Model, x: np.ndarray, y: np.ndarray, claims: dict, atol: float = 1e-9,
           diagnose: bool = True) -> ClaimsReport:
    """Check another implementation's claims (the layout of `refbnn verify --claims`:
    "accuracy", "T", "T_bar", "layers", "importance", "var_importance", "predictions",
    "bit_errors", ...) against refbnn. The report's `failed` lists the wrong numbers,
    `lines` is what the command prints (with a diagnosis naming the convention where
    one explains the difference) and `json` its --json document.

    >>> import refbnn
    >>> model = refbnn.example_model(); x, y = refbnn.example_data(40)
    >>> report = refbnn.verify(model, x, y, {"accuracy": 1.0, "T": {"1": 0.9}})
    >>> [(c["quantity"], c["pass"]) for c in report.checks]
    [('accuracy', True), ('T[1]', False)]
    >>> report.lines[0]
    'claims: 2 checked, 1 pass, 1 fail'
    """
    data = Dataset(np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64))
    return claims_report(model, data, jsonable(claims), "claims", atol, diagnose=diagnose)

