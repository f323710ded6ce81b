"""refbnn.testing: the strategies draw only contract-valid cases, honour the feature
switches and reach every edge of docs/semantics.md §12.2; requests are judged as verify
judges claims; assert_claims works as documented."""
import doctest
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

import refbnn.testing
from refbnn.engines.interpreter import Interpreter
from refbnn.formats.datafile import read_data, write_data
from refbnn.formats.files import InputError
from refbnn.formats.modelfile import model_from_dict, model_to_dict
from refbnn.measure.metrics import metrics
from refbnn.semantics.model import FEATURES
from refbnn.testing import assert_claims, cases, datasets, models
from refbnn.testing.compare import check_request, expected_claims, judge
from refbnn.testing.edges import EDGES

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from independent_metrics import Conventions, FloatBNN  # noqa: E402

MANY = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@MANY
@given(case=cases())
def test_every_drawn_case_is_accepted_by_the_loaders(tmp_path_factory, case):
    """Property: the model survives the model file's loader unchanged (the loader is the
    judge of validity), the data file's reader accepts the data, and refbnn's accuracy is > 0
    (so Pi is defined)."""
    assert model_from_dict(model_to_dict(case.model)) == case.model
    path = tmp_path_factory.mktemp("d") / "d.npz"
    write_data(path, case.x, case.y)
    data = read_data(path, case.model)
    assert np.array_equal(data.x, case.x) and np.array_equal(data.y, case.y)
    check_request(case.request)
    assert expected_claims(case.model, case.x, case.y, case.request)["accuracy"]["value"] > 0


@MANY
@given(st.data())
def test_feature_switches_are_honoured(data):
    """Property: a case drawn with some features uses no other (case.features is a subset),
    and stays within max_neurons and max_inputs."""
    chosen = data.draw(st.sets(st.sampled_from(FEATURES), min_size=1).filter(lambda s: {"fc", "conv"} & s))
    case = data.draw(cases(features=chosen, max_neurons=5, max_inputs=3))
    assert case.features <= chosen
    assert case.model.neurons <= 5 and len(case.y) <= 3


@pytest.mark.parametrize("edge", sorted(EDGES))
def test_each_edge_is_drawn(edge):
    """Each edge of §12.2 is reached by some drawn case within 1,000 examples."""
    test = EDGES[edge][1]
    found = find(cases(), test, settings=settings(max_examples=1000, database=None, deadline=None, derandomize=True,
                                                   phases=[Phase.generate], suppress_health_check=list(HealthCheck)))
    assert test(found)


@MANY
@given(models(features={"conv", "padding"}), st.data())
def test_datasets_fit_their_model(model, data):
    """Property: datasets(model) draws inputs of the model's shape within |x| <= Z, and labels
    that include a correct prediction."""
    x, y = data.draw(datasets(model, max_inputs=4))
    assert x.shape[1:] == model.input_shape and np.abs(x).max() <= model.Z
    assert 1 <= len(y) <= 4 and 0 <= y.min() and y.max() < model.classes


@MANY
@given(cases(max_neurons=6, max_inputs=4, bit_errors=False))
def test_the_documented_pattern_passes_a_correct_float_implementation(case):
    """Property (the README's example): a correct float implementation's claims, checked with
    assert_claims against the case's request, raise nothing."""
    m = FloatBNN(model_to_dict(case.model)).metrics(case.x, case.y, bs=case.request["b"])
    m["T_bar"] = float(np.mean(list(m["T"].values())))
    assert_claims(case.model, case.x, case.y, m, request=case.request)


def test_assert_claims_raises_verify_report_for_a_convention_bug():
    """A float implementation that divides no first-layer margin by Z fails on a case built to
    show it, and the AssertionError carries verify's diagnosis naming the convention."""
    def t_of(c, conv=Conventions()):
        return FloatBNN(model_to_dict(c.model), conv).metrics(c.x, c.y, c.request["b"])["T"]

    case = find(cases(features={"fc"}, bit_errors=False),
                lambda c: c.model.input_threshold is None and t_of(c, Conventions(no_z=True)) != t_of(c),
                settings=settings(max_examples=500, database=None, derandomize=True))
    m = FloatBNN(model_to_dict(case.model), Conventions(no_z=True)).metrics(case.x, case.y, case.request["b"])
    with pytest.raises(AssertionError, match="first layer's margin is not divided by Z"):
        assert_claims(case.model, case.x, case.y, m)


def test_assert_claims_doctests():
    """The examples in refbnn.testing's docstrings run and print what they show."""
    for module in (refbnn.testing, refbnn.testing.strategies):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0


@pytest.fixture(scope="module")
def small_case():
    return find(cases(features={"fc"}, bit_errors=True), lambda c: c.model.neurons >= 2 and len(c.y) >= 2,
                settings=settings(database=None, derandomize=True))


def test_unasked_claims_are_not_checked_and_asked_ones_must_be_there(small_case):
    """A claim the request does not ask for is ignored, however wrong; a missing asked claim is
    a 'missing' finding naming it; a wrong asked one a 'wrong' finding."""
    c = small_case
    request = {**c.request, "importance": False}
    claims = expected_claims(c.model, c.x, c.y, request)
    claims["importance"] = [{"exact": "7/3"}] * c.model.neurons         # not asked: ignored
    assert judge(c.model, c.x, c.y, request, claims)[0] is None
    del claims["T_bar"]
    finding = judge(c.model, c.x, c.y, request, claims)[0]
    assert (finding.kind, finding.quantity) == ("missing", "T_bar")
    claims = expected_claims(c.model, c.x, c.y, request)
    claims["predictions"][1] = (claims["predictions"][1] + 1) % c.model.classes if c.model.classes > 1 else 7
    finding = judge(c.model, c.x, c.y, request, claims)[0]
    assert (finding.kind, finding.quantity) == ("wrong", "predictions[1]")


def test_bit_error_claims_must_use_the_requested_seed(small_case):
    """Accuracies drawn with another seed than the request's are a wrong bit_errors.seed."""
    c = small_case
    claims = expected_claims(c.model, c.x, c.y, c.request)
    claims["bit_errors"]["seed"] += 1
    finding = judge(c.model, c.x, c.y, c.request, claims)[0]
    assert (finding.kind, finding.quantity) == ("wrong", "bit_errors.seed")


def test_expected_claims_agree_with_the_reference_interpreter(small_case):
    """The expected numbers (fast engine) equal the bitarray interpreter's on a drawn case."""
    c = small_case
    from fractions import Fraction
    bs = [(b, Fraction(b)) for b in c.request["b"]]
    ours = metrics(Interpreter(c.model), c.x, c.y, bs, True)
    expected = expected_claims(c.model, c.x, c.y, c.request)
    for key in ("accuracy", "T", "T_bar", "importance", "var_importance"):
        assert ours[key] == expected[key]


@pytest.mark.parametrize("doc, field", [
    ({"b": []}, "b"), ({"b": ["-1"]}, "negative"), ({"b": ["2"], "extra": 1}, "extra"),
    ({"b": ["2"], "importance": "yes"}, "importance"),
    ({"b": ["2"], "bit_errors": {"ber": ["0.1"], "reps": 0, "seed": 0, "batch_size": 1}}, "reps"),
    ({"b": ["2"], "bit_errors": {"ber": ["2"], "reps": 1, "seed": 0, "batch_size": 1}}, "ber"),
])
def test_bad_requests_are_refused_naming_the_field(doc, field):
    with pytest.raises(InputError, match=field):
        check_request(doc)
