"""`refbnn certify`: the network corollary of Theorem 1 (proofs/theorem1.md)."""
import json
from fractions import Fraction

import numpy as np
from click.testing import CliRunner
from hypothesis import given
from strategies import model_cases

from refbnn.cli import main
from refbnn.engines.fast import FastEngine
from refbnn.engines.interpreter import Interpreter
from refbnn.formats.datafile import write_data
from refbnn.formats.modelfile import write_model
from refbnn.measure.certify import _score_bound, adversarial_masks, certified_k, certified_ks, check_certificates
from refbnn.semantics.model import Linear, Model, Threshold, Weight


def certify_net() -> Model:
    """8 inputs in {0, 1} (Z = 1) -> 4 neurons, all weights +1, s = (-10, -10, -10, 0)
    -> 2 classes with weights [[+1]*4, [-1]*4]."""
    return Model.build((8,), 1, [
        Linear(Weight.from_array(np.ones((4, 8)))), Threshold((-10, -10, -10, 0)),
        Linear(Weight.from_array([[1] * 4, [-1] * 4]))])


# Every neuron has h = sum(x); first layer, so floor(T/2) = floor(m / 4Z) = m // 4, m = |2(h-s) - 1|.
# x1 = three ones:  h = 3. s=-10: m = 25 -> 6 (< fan-in 8).  s=0: m = 5 -> 1.
#    a = [+,+,+,+], scores [4, -4]: class 0, gap 8 to class 1 (> c) -> floor(8/4) = 2.  k = 1 (layer 1).
# x2 = all ones:    h = 8. s=-10: m = 35 -> 8 >= fan-in 8 (every weight may flip): no limit.
#    s=0: m = 15 -> 3.  scores [4, -4] -> 2.  k = 2 (scores).
# x3 = zeros:       h = 0. s=-10: m = 19 -> 4.  s=0: m = 1 -> 0 (h = s: no margin).  k = 0.
X = np.array([[1, 1, 1, 0, 0, 0, 0, 0], [1] * 8, [0] * 8])


def test_certified_k_by_hand():
    model = certify_net()
    ref = Interpreter(model)
    certs = [certified_k(model, ref.run(x)) for x in X]
    assert [(c.k, c.bottleneck) for c in certs] == [(1, "layer 1"), (2, "scores"), (0, "layer 1")]
    ks, where = certified_ks(FastEngine(model), X)
    assert ks.tolist() == [1, 2, 0] and where == ["layer 1", "scores", "layer 1"]


def test_score_bound_respects_the_tie_rule():
    # [9, 5]: c = 0, class 1 > c may tie: gap 4 -> 1 flip each (7 vs 7 still goes to 0).
    # [5, 9]: c = 1, class 0 < c must stay below: 9 - 5 - 1 = 3 -> 0 (one flip each ties at 7, class 0 wins).
    # [1, 9, 5]: gaps 9-1-1 = 7 and 9-5 = 4 -> 1.   [5, 9, 9]: c = 1, gap 0 to class 2 -> 0.
    scores = np.array([[9, 5, -99], [5, 9, -99], [1, 9, 5], [5, 9, 9]])
    assert _score_bound(scores, 1, 100, 100).tolist() == [1, 0, 1, 0]


def test_one_flip_more_than_certified_can_change_the_prediction():
    # x2 is limited by the scores at k = 2: three flips per class unit move the gap of 8 by 12.
    model = certify_net()
    engine = FastEngine(model)
    assert Interpreter(model, adversarial_masks(engine, X[1], 2)).run(X[1]).prediction == 0
    assert Interpreter(model, adversarial_masks(engine, X[1], 3)).run(X[1]).prediction == 1


@given(model_cases(max_inputs=4))
def test_reference_and_fast_certificates_agree(case):
    """Property: the vectorised certificate equals the definition on every input."""
    ref = Interpreter(case.model)
    ks, where = certified_ks(FastEngine(case.model), case.x)
    certs = [certified_k(case.model, ref.run(x)) for x in case.x]
    assert ks.tolist() == [c.k for c in certs] and where == [c.bottleneck for c in certs]


@given(model_cases(max_inputs=4))
def test_adversarial_flips_at_the_certified_k_never_change_a_prediction(case):
    """Property (network corollary): for every certified input, the most harmful k_i flips
    per unit leave the reference interpreter's prediction unchanged."""
    engine = FastEngine(case.model)
    ks, _ = certified_ks(engine, case.x)
    checks = check_certificates(engine, Interpreter, case.x, ks, draws=3, seed=0)
    assert [c for c in checks if c["changed"]] == []


def test_certify_cli_reports_certified_accuracy(tmp_path):
    write_model(tmp_path / "m.json", certify_net())
    write_data(tmp_path / "d.npz", X, np.array([0, 0, 0]))
    out = tmp_path / "c.json"
    result = CliRunner().invoke(main, ["certify", str(tmp_path / "m.json"), str(tmp_path / "d.npz"),
                                       "--k", "0,1,2,3", "--check", "10", "--json", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    # all three correct; k_i = [1, 2, 0]: certified at 0: 3/3, 1: 2/3, 2: 1/3, 3: 0
    assert {k: Fraction(v["exact"]) for k, v in r["certified_accuracy"].items()} == {
        "0": 1, "1": Fraction(2, 3), "2": Fraction(1, 3), "3": 0}
    assert r["bottleneck"] == {"layer 1": 2, "scores": 1}
    assert len(r["checks"]) == 10 and not any(c["changed"] for c in r["checks"])
