"""The model, data and helpers that the `refbnn verify` tests share: claims and traces "from
another implementation" come from examples/independent_metrics.py, a float NumPy
implementation written apart from refbnn, with one convention switched."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from refbnn.claims import write_claims, write_trace
from refbnn.cli import main
from refbnn.engines.fast import FastEngine
from refbnn.formats.datafile import write_data
from refbnn.formats.modelfile import model_to_dict, write_model
from refbnn.semantics.model import Conv2d, Flatten, Linear, MaxPool2d, Model, Threshold, Weight

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from independent_metrics import Conventions, FloatBNN  # noqa: E402,F401  (Conventions: for the tests)

BS = (0.5, 1, 2, 4)


def model_and_data():
    """A CNN with every feature a convention can touch: padding 1, threshold -> pool,
    polarity -1, a flatten of [3, 3, 3], hidden layers of 3 and 5 neurons (unequal, so
    that averaging the layers differently shows), Z = 3, ties h = s, and labels that
    make the accuracy about 0.8 (some argmax ties too: 3 classes of small integer scores)."""
    rng = np.random.default_rng(20)
    layers = [Conv2d(Weight.from_array(rng.integers(0, 2, (3, 1, 3, 3))), 1),
              Threshold((0, 2, -1), (1, -1, 1)), MaxPool2d(), Flatten(),
              Linear(Weight.from_array(rng.integers(0, 2, (5, 27)))), Threshold((1, -1, 0, 3, -3), (1, 1, -1, 1, -1)),
              Linear(Weight.from_array(rng.integers(0, 2, (3, 5))))]
    model = Model.build((1, 6, 6), 3, layers)
    x = rng.integers(-3, 4, (240, 1, 6, 6))
    y = np.asarray(FastEngine(model).predictions(x))
    noisy = rng.random(len(y)) < 0.2
    y[noisy] = rng.integers(0, 3, int(noisy.sum()))
    return model, x, y


def make_setup(tmp_path_factory):
    """(folder with m.json and d.npz, model, x, y, the model as JSON), for a module fixture."""
    d = tmp_path_factory.mktemp("verify2")
    model, x, y = model_and_data()
    write_model(d / "m.json", model)
    write_data(d / "d.npz", x, y)
    return d, model, x, y, model_to_dict(model)


def run_verify(d, *args):
    r = CliRunner().invoke(main, ["verify", str(d / "m.json"), str(d / "d.npz"), *map(str, args),
                                  "--json", str(d / "out.json")])
    return r, (json.loads((d / "out.json").read_text()) if (d / "out.json").exists() else None)


def claims_of(d, doc, x, y, conv: Conventions, bit_errors: dict | None = None, name="claims.json"):
    net = FloatBNN(doc, conv)
    m = net.metrics(x, y, bs=BS)
    write_claims(d / name, **m, bit_errors=bit_errors)
    return d / name


def trace_of(d, doc, x, conv: Conventions, name="trace.npz"):
    net = FloatBNN(doc, conv)
    hs, outs, scores = net.forward(x)
    write_trace(d / name, h=hs, a=outs, scores=scores, predictions=net.predict(scores))
    return d / name
