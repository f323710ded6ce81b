"""The scientific verdicts downstream of the metrics, against answers computed by hand:
the exact permutation test of the experiments (ties weigh 1/2), the majority rule at its
boundary, the direction of each of the paper's claims, and the exact expected accuracy
under bit errors against brute-force enumeration."""
from fractions import Fraction

import numpy as np
import pytest
from conftest import enumerated_expected_accuracy

from refbnn.biterrors.masks import ErrorModel
from refbnn.engines.fast import FastEngine
from refbnn.experiments.cells import ClaimResult, Config, _verdict, paper_claims, permutation_p
from refbnn.formats.files import InputError
from refbnn.formats.maskfile import MaskSet, read_masks
from refbnn.semantics.model import Linear, Model, Threshold, Weight
from refbnn.verify.statistics import audit_masks, exact_expected_accuracy


def test_permutation_p_weighs_ties_one_half():
    # lower = [1, 1, 1], higher = [0, 2, 3]: observed U = (0 beats none) + (2 beats three 1s)
    # + (3 beats three 1s) = 6. Over the 20 splits of the pooled values into 3 "higher", with
    # k ones among them and S the rest, ties between ones add 1/2 * k * (3 - k):
    #   k = 0, S = {0, 2, 3}: U = 6                                  -> 1 split reaches 6
    #   k = 1, S = {2, 3}: 2 (2, 3 > 0) + 2 * 2 (> the two 1s left) + 1 (1 > 0) + 1 (ties) = 8  -> 3 splits
    #          S = {0, 3}: 1 + 2 + 0 + 1 = 4;  S = {0, 2}: 0 + 2 + 0 + 1 = 3
    #   k = 2, S = {3}: 2 + 1 + 2 + 1 = 6                           -> 3 splits
    #          S = {2}: 1 + 1 + 2 + 1 = 5;  S = {0}: 1
    #   k = 3: U = 3
    # so p = 7 / 20. (Ties counting 1 would give 10/20, counting 0 give 4/20.)
    assert permutation_p([1, 1, 1], [0, 2, 3]) == pytest.approx(7 / 20, abs=1e-12)


def test_permutation_p_of_a_clean_separation_is_the_smallest_attainable():
    # all three of "higher" above all three of "lower": only 1 of C(6, 3) = 20 splits reaches U = 9
    assert permutation_p([1, 2, 3], [4, 5, 6]) == pytest.approx(1 / 20)
    assert permutation_p([4, 5, 6], [1, 2, 3]) == pytest.approx(1.0)     # the other direction: every split


@pytest.mark.parametrize("significant,majority,held", [
    ([True, False], True, False),          # 1 of 2 is not most: 2 * 1 > 2 is false
    ([True, True, False], True, True),     # 2 of 3 is most
    ([True], True, True),
    ([False, False], False, True),         # "not lower": held when none is significant
    ([False, True], False, False),
])
def test_the_majority_rule_at_its_boundary(significant, majority, held):
    res = _verdict(ClaimResult("c", False), significant, majority)
    assert res.held is held
    assert f"({sum(significant)} of {len(significant)} comparisons significant" in res.claim


def _records(metric: str, values: dict) -> list[dict]:
    """Records of arch x training BER with the given per-repetition values of `metric` (the
    other metric of Table III constant, so that it decides nothing)."""
    other = "var_importance" if metric == "T_bar" else "T_bar"
    return [{"arch": arch, "train_ber": ber, metric: {"value": v}, other: {"value": 1.0}}
            for (arch, ber), vs in values.items() for v in vs]


def test_flip_training_raises_t_bar_holds_only_in_its_direction():
    config = Config("table3", sizes=(8,), train_bers=(0.0, 0.05), reps=3)
    up = _records("T_bar", {("fc-8", 0.0): [0.1, 0.2, 0.3], ("fc-8", 0.05): [0.4, 0.5, 0.6]})
    down = _records("T_bar", {("fc-8", 0.0): [0.4, 0.5, 0.6], ("fc-8", 0.05): [0.1, 0.2, 0.3]})
    # 3 against 3, cleanly separated: p = 1/20 = 0.05 <= 0.05 in the claimed direction only
    claim = [c for c in paper_claims(config, up) if "T-bar" in c.claim]
    assert claim[0].held and "p = 0.05" in claim[0].evidence[0]
    assert not [c for c in paper_claims(config, down) if "T-bar" in c.claim][0].held


def test_hypothesis_1_wants_a_lower_var_pi_for_small_nets_and_not_lower_for_large_ones():
    config = Config("table3", sizes=(8, 64), train_bers=(0.0, 0.05), reps=3)
    lower_small = _records("var_importance", {("fc-8", 0.0): [4, 5, 6], ("fc-8", 0.05): [1, 2, 3],
                                              ("fc-64", 0.0): [1, 2, 3], ("fc-64", 0.05): [1, 2, 3]})
    claims = {c.claim.split(" (")[0]: c for c in paper_claims(config, lower_small)}
    small = claims["smaller flip-trained BNNs have lower VAR(Pi)"]
    large = claims["for 64 neurons and more, VAR(Pi) is not lower with flip training"]
    assert small.held and large.held
    lower_large = _records("var_importance", {("fc-8", 0.0): [1, 2, 3], ("fc-8", 0.05): [4, 5, 6],
                                              ("fc-64", 0.0): [4, 5, 6], ("fc-64", 0.05): [1, 2, 3]})
    claims = {c.claim.split(" (")[0]: c for c in paper_claims(config, lower_large)}
    assert not claims["smaller flip-trained BNNs have lower VAR(Pi)"].held
    assert not claims["for 64 neurons and more, VAR(Pi) is not lower with flip training"].held


def test_exact_expected_accuracy_equals_brute_force_enumeration():
    """statistics.exact_expected_accuracy (used to judge other generators' claims) equals the
    enumeration of all 2^8 flip patterns, weighted p^k (1 - p)^(8 - k), exactly."""
    model = Model.build((2,), 1, [Linear(Weight.from_array([[1, 0], [0, 1]])), Threshold((0, 1)),
                                  Linear(Weight.from_array([[1, 1], [0, 1]]))])
    x = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1], [1, 0]])
    y = np.array([0, 1, 1, 0, 0])
    engine = FastEngine(model)
    for p in (0.1, 0.25, 0.5):
        want = enumerated_expected_accuracy(model, x, y, Fraction(p))
        assert exact_expected_accuracy(engine, x, y, ErrorModel(p, 0, 2)) == want
    # only layer 2 targeted: 4 bits
    got = exact_expected_accuracy(engine, x, y, ErrorModel(0.25, 0, 2, layers=(2,)))
    assert got == enumerated_expected_accuracy(model, x, y, Fraction(1, 4), layers=(2,))


def test_the_flip_count_audit_uses_the_continuity_correction():
    # one tensor of 100 bits, one pattern, p = 1/2: mean 50, sd = sqrt(100 / 4) = 5. With 60 flips
    # the corrected z = (|60 - 50| - 1/2) / 5 = 1.9, two-sided p = 2 (1 - Phi(1.9)) = 0.057433
    # (without the correction z = 2 and p = 0.0455: a mutant that drops it fails here).
    model = Model.build((10,), 1, [Linear(Weight.from_array(np.ones((10, 10), bool)))])
    flips = np.zeros((1, 1, 10, 10), bool)
    flips.reshape(-1)[:60] = True
    masks = MaskSet({"batch_size": np.array(4), "w0": flips}, model, "m.npz")
    checks = {c["check"]: c["p_value"] for c in audit_masks(masks, model, ErrorModel(0.5, 0, 4), 0.01)}
    assert checks["w0: flip count"] == pytest.approx(0.057433, abs=2e-6)


def test_a_mask_file_must_cover_every_input_with_whole_batches(tmp_path):
    # 2 batches of 4 inputs cover 8 inputs; a 9th needs a third batch (ceil(9 / 4) = 3)
    from refbnn.measure.bars import example_model
    model = example_model()
    flips = np.zeros((1, 2) + model.layers[0].weight.shape, bool)
    np.savez(tmp_path / "m.npz", batch_size=np.array(4), w0=flips)
    assert read_masks(str(tmp_path / "m.npz"), model, 8).n_batches == 2
    with pytest.raises(InputError, match="2 batches of 4 do not cover 9 inputs"):
        read_masks(str(tmp_path / "m.npz"), model, 9)
