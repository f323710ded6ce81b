"""A model that binarises its own input (docs/semantics.md §2.6): the file format, the
forward pass, T (eq. 1 for the first layer), Theorem 1 / certify and Algorithm 1."""
from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from strategies import model_cases

from refbnn.cli import main
from refbnn.engines.fast import FastEngine
from refbnn.engines.interpreter import Interpreter
from refbnn.formats.files import InputError
from refbnn.formats.modelfile import model_from_dict, model_to_dict, write_model
from refbnn.measure.certify import certified_ks
from refbnn.semantics.importance import neuron_importance
from refbnn.semantics.margin import tolerance
from refbnn.semantics.model import Linear, Model, Threshold, Weight


def two_input_net(binarise: bool) -> Model:
    """x in [-5, 5]^2 -> (binarised by x_0 > 0, x_1 <= 2) -> one neuron, weights (+1, +1),
    s = -1 -> 2 classes with weights (+1), (-1)."""
    t = Threshold((0, 2), (1, -1)) if binarise else None
    return Model.build((2,), 5, [Linear(Weight.from_array([[1, 1]])), Threshold((-1,)),
                                 Linear(Weight.from_array([[1], [-1]]))], t)


def test_forward_and_T_by_hand():
    """x = (3, 5): binarised, x_0 = 3 > 0 gives +1 and x_1 = 5 <= 2 fails, -1; h = 1 - 1 = 0;
    T = |h - s - 1/2| = |0 + 1 - 1/2| = 1/2 by eq. 1 (no /Z). Without the binarisation
    h = 3 + 5 = 8 and eq. 2 gives |8 + 1 - 1/2| / 5 = 17/10."""
    x = np.array([[3, 5]])
    for binarise, h, t in ((True, 0, Fraction(1, 2)), (False, 8, Fraction(17, 10))):
        model = two_input_net(binarise)
        run = Interpreter(model).run(x[0])
        assert run.h == [[h]] and run.prediction == 0        # h > s: +1, scores (1, -1)
        b = [t, Fraction(1)]
        got = tolerance(model, [run], b).overall
        assert got == {t: Fraction(1), Fraction(1): Fraction(int(t >= 1))}
        assert FastEngine(model).tolerance(x, b).overall == got
        assert model.neuron_layers[0].first is not binarise


def test_the_model_file_keeps_the_binarisation_and_names_bad_fields():
    doc = model_to_dict(two_input_net(True))
    assert doc["input"]["binarize"] == {"thresholds": [0, 2], "polarity": [1, -1]}
    assert model_from_dict(json.loads(json.dumps(doc))) == two_input_net(True)
    assert "binarize" not in model_to_dict(two_input_net(False))["input"]
    for edit, message in [
        (lambda d: d["input"]["binarize"].update(thresholds=[0], polarity=[1]),
         "input.binarize.thresholds: 1 values for 2"),
        (lambda d: d["input"]["binarize"].update(polarity=[1, 0]), "input.binarize.polarity[1]: must be 1 or -1"),
        (lambda d: d["input"]["binarize"].update(thresholds=[0, 2.5]), "input.binarize.thresholds[1]"),
        (lambda d: d["input"]["binarize"].update(level=3), "input.binarize: unknown key 'level'"),
    ]:
        bad = json.loads(json.dumps(doc))
        edit(bad)
        with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
            model_from_dict(bad, "m.json")


def _binarised(model: Model, x: np.ndarray) -> np.ndarray:
    """The input binarisation of §2.6 written out here: +1 iff x > s_c (polarity +1) or
    x <= s_c (polarity -1), per input channel."""
    t = model.input_threshold
    shape = (1, -1) + (1,) * (x.ndim - 2)
    s = np.array(t.thresholds).reshape(shape)
    fires = (x > s) != (np.array(t.polarity) < 0).reshape(shape)
    return np.where(fires, 1, -1)


@given(model_cases())
def test_a_binarising_model_is_the_same_network_fed_binarised_data(case):
    """Property: a model with an input binarisation gives, on x, exactly the predictions, T
    tuple, Pi and certified k that the same layers with Z = 1 and no binarisation give on
    the binarised x (so its first layer is measured by eq. 1 and certified as a hidden one)."""
    model = case.model
    if model.input_threshold is None:
        model = Model.build(model.input_shape, model.Z, model.layers,
                            Threshold(tuple(range(model.input_shape[0])), (1,) * model.input_shape[0]))
    plain = Model.build(model.input_shape, 1, model.layers)
    xb = _binarised(model, case.x)
    ref, ref_plain = Interpreter(model), Interpreter(plain)
    assert ref.predictions(case.x) == ref_plain.predictions(xb)
    assert list(FastEngine(model).predictions(case.x)) == ref_plain.predictions(xb)
    bs = [Fraction(1, 2), Fraction(1), Fraction(3, 2), Fraction(4)]
    assert FastEngine(model).tolerance(case.x, bs) == tolerance(plain, [ref_plain.run(x) for x in xb], bs)
    y = case.y.copy()
    y[0] = ref_plain.run(xb[0]).prediction
    assert FastEngine(model).importance(case.x, y) == neuron_importance(ref_plain, xb, y)
    ks, _ = certified_ks(FastEngine(model), case.x)
    ks_plain, _ = certified_ks(FastEngine(plain), xb)
    assert list(ks) == list(ks_plain)


def test_inspect_says_the_input_is_binarised(tmp_path):
    path = tmp_path / "m.json"
    write_model(path, two_input_net(True))
    r = CliRunner().invoke(main, ["inspect", str(path), "--json", str(tmp_path / "i.json")])
    assert r.exit_code == 0, r.output
    assert "the input is binarised (+1 iff, per channel: x > 0, x <= 2)" in r.output and "eq. 1" in r.output
    assert json.loads((tmp_path / "i.json").read_text())["input"]["binarize"]["thresholds"] == [0, 2]


def _image_net() -> Model:
    """2 input channels 5x5 binarised (x > 3; x <= -1) -> conv 3x3 pad 1 (4) -> threshold ->
    maxpool -> flatten -> linear (3): enough neurons for Pi and bit errors."""
    from refbnn.semantics.model import Conv2d, Flatten, MaxPool2d

    rng = np.random.default_rng(3)
    return Model.build((2, 5, 5), 7, [
        Conv2d(Weight.from_array(rng.integers(0, 2, (4, 2, 3, 3))), 1), Threshold((0, -2, 1, 3), (1, -1, 1, 1)),
        MaxPool2d(), Flatten(), Linear(Weight.from_array(rng.integers(0, 2, (3, 16))))],
        Threshold((3, -1), (1, -1)))


def test_verify_passes_its_own_claims_and_self_checks_on_a_binarising_model(tmp_path):
    """`refbnn metrics` (with Π) and `eval` write claims; `verify` recomputes them on the
    binarising model and passes, and `verify --self` holds its metamorphic checks."""
    from conftest import run_cli

    from refbnn.formats.datafile import write_data

    model = _image_net()
    rng = np.random.default_rng(4)
    x = rng.integers(-7, 8, (40, 2, 5, 5))
    y = np.array(FastEngine(model).predictions(x))
    y[:8] = (y[:8] + 1) % 3                               # some errors, so A < 1
    write_model(tmp_path / "m.json", model)
    write_data(tmp_path / "d.npz", x, y)
    r = run_cli("metrics", tmp_path / "m.json", tmp_path / "d.npz", "--importance", "--json", tmp_path / "c.json")
    assert r.exit_code == 0, r.output
    claims = json.loads((tmp_path / "c.json").read_text())
    assert claims["layers"][0]["first"] is False                   # eq. 1, not eq. 2 (§2.6)
    r = run_cli("verify", tmp_path / "m.json", tmp_path / "d.npz", "--claims", tmp_path / "c.json")
    assert r.exit_code == 0, r.output
    r = run_cli("verify", tmp_path / "m.json", tmp_path / "d.npz", "--self")
    assert r.exit_code == 0, r.output
