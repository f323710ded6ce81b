"""Which of the paper's findings a run speaks to, and the evidence lines (refbnn/experiments/
findings.py), on records written by hand: each experiment's claims, the cells compared
(only training BERs above 0 against 0, only cells with records on both sides), the
accuracy claim of Fig. 1 at the largest evaluated BER, and each evidence line word for word."""
from __future__ import annotations

import pytest

from refbnn.experiments.cells import Config
from refbnn.experiments.findings import accuracy_at, paper_claims

LOW, HIGH = [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]      # 3 against 3, cleanly apart: p = 1/20


def _record(arch, ber, t_bar, var=1.0, accuracies=None):
    r = {"arch": arch, "train_ber": ber, "T_bar": {"value": t_bar}, "var_importance": {"value": var}}
    if accuracies:
        r["bit_errors"] = {"results": [{"ber": b, "mean": {"value": a}} for b, a in accuracies.items()]}
    return r


def _claims(config, records):
    return {c.claim.split(" (")[0]: c for c in paper_claims(config, records)}


def test_each_experiment_speaks_to_its_own_findings():
    """table3: T-bar and both VAR(Pi) findings; fig2: the VAR(Pi) findings only; fig1: T-bar
    and accuracy under bit errors. A run without 0% or without any flip training has no
    comparison to make; without 5% no VAR(Pi) finding."""
    recs = [_record("fc-8", b, t, accuracies={"0.1": 0.5}) for b in (0.0, 0.05) for t in LOW]
    table3 = Config("table3", sizes=(8,), train_bers=(0.0, 0.05))
    assert sorted(_claims(table3, recs)) == [
        "flip training raises T-bar", "smaller flip-trained BNNs have lower VAR(Pi)"]
    assert sorted(_claims(Config("fig2", sizes=(8,), train_bers=(0.0, 0.05)), recs)) == [
        "smaller flip-trained BNNs have lower VAR(Pi)"]
    fig1 = Config("fig1", sizes=(8,), train_bers=(0.0, 0.05), eval_bers=(0.0, 0.1))
    assert sorted(_claims(fig1, recs)) == ["flip training raises T-bar",
                                           "flip-trained BNNs are more accurate under bit errors"]
    assert paper_claims(Config("table3", sizes=(8,), train_bers=(0.05, 0.1)), recs) == []
    assert paper_claims(Config("table3", sizes=(8,), train_bers=(0.0,)), recs) == []
    assert sorted(_claims(Config("table3", sizes=(8,), train_bers=(0.0, 0.1)), recs)) == [
        "flip training raises T-bar"]


def test_t_bar_is_compared_per_flip_ber_against_0_with_its_evidence_line():
    """Two sizes, training BERs 0, 5% and 10%: one comparison per size and BER above 0 (4),
    never 0 against itself; a cell without records is left out, not compared empty. Each
    evidence line names the cell and the metric: fc-8 at 5% holds with p = 1/20."""
    recs = [_record(a, 0.0, t) for a in ("fc-8", "fc-16") for t in LOW]
    recs += [_record(a, b, t) for a in ("fc-8", "fc-16") for b in (0.05, 0.1) for t in HIGH]
    config = Config("table3", sizes=(8, 16), train_bers=(0.0, 0.05, 0.1))
    claim = _claims(config, recs)["flip training raises T-bar"]
    assert [c.label for c in claim.comparisons] == ["fc-8, trained at 0.05 vs 0", "fc-8, trained at 0.1 vs 0",
                                                    "fc-16, trained at 0.05 vs 0", "fc-16, trained at 0.1 vs 0"]
    assert claim.outcome == "held" and claim.claim.endswith("(4 of 4 comparisons hold, 0 contradict it)")
    assert claim.evidence[0] == ("fc-8, trained at 0.05 vs 0: mean T-bar 0.5 vs 0.2; shift 0.3, 95% CI (-inf, inf): "
                                 "too few repetitions for a 95% interval; p = 0.05 (smallest attainable 0.05): held")
    missing = [r for r in recs if not (r["arch"] == "fc-16" and r["train_ber"] == 0.1)]
    claim = _claims(config, missing)["flip training raises T-bar"]
    assert len(claim.comparisons) == 3 and "fc-16, trained at 0.1 vs 0" not in [c.label for c in claim.comparisons]


def test_fig1_compares_accuracy_at_the_largest_evaluated_ber():
    """The accuracy claim reads each record's mean accuracy at max(eval BERs) = 0.1 (not at
    the first or the last listed): flip-trained 0.6 against regular 0.3 holds, although at
    0.01 the regular models are better."""
    acc_regular, acc_flip = {"0.1": 0.3, "0.01": 0.9, "0.05": 0.8}, {"0.1": 0.6, "0.01": 0.7, "0.05": 0.75}
    recs = [_record("fc-8", 0.0, t, accuracies={k: v + t / 100 for k, v in acc_regular.items()}) for t in LOW]
    recs += [_record("fc-8", 0.05, t, accuracies={k: v + t / 100 for k, v in acc_flip.items()}) for t in LOW]
    config = Config("fig1", sizes=(8,), train_bers=(0.0, 0.05), eval_bers=(0.01, 0.1, 0.05))
    claim = _claims(config, recs)["flip-trained BNNs are more accurate under bit errors"]
    assert claim.outcome == "held"
    assert claim.evidence[0].startswith("fc-8, trained at 0.05 vs 0: mean accuracy at BER 0.1 0.602 vs 0.302; ")
    assert accuracy_at(recs[0], 0.05) == pytest.approx(0.801)
    with pytest.raises(KeyError):
        accuracy_at(recs[0], 0.2)


def test_the_var_pi_findings_split_at_64_neurons_with_their_evidence_lines():
    """Sizes 32 and 64: 32 < 64 goes to Hypothesis 1 ("lower"), 64 to "not lower"; each
    evidence line says what is compared."""
    recs = [_record(a, b, 1.0, var=v) for a in ("fc-32", "fc-64") for b, vs in ((0.0, HIGH), (0.05, LOW))
            for v in vs]
    claims = _claims(Config("table3", sizes=(32, 64), train_bers=(0.0, 0.05)), recs)
    small = claims["smaller flip-trained BNNs have lower VAR(Pi)"]
    large = claims["for 64 neurons and more, VAR(Pi) is not lower with flip training"]
    assert [c.label for c in small.comparisons] == ["fc-32"] and [c.label for c in large.comparisons] == ["fc-64"]
    assert small.outcome == "held" and large.outcome == "not held"
    assert small.evidence[0].startswith("fc-32: mean VAR(Pi) (5%) vs (0%) 0.2 vs 0.5; ")


def test_the_level_travels_and_missing_cells_are_skipped_not_fatal():
    """paper_claims(alpha=0.2): 3 against 3 with one of the 9 pairs reversed has p = 2/20 =
    0.1, for T-bar and for VAR(Pi): held at 0.2, cannot tell at 0.05. A size whose flip-trained cell has no
    records is skipped; the sizes after it are still compared. A BER that was not evaluated
    is a KeyError naming it."""
    near = [0.1, 0.2, 0.45]                       # 0.45 above 0.4: one of the 9 pairs reversed
    recs = [_record("fc-8", 0.0, t, var=v) for t, v in zip(near, HIGH)]
    recs += [_record("fc-8", 0.05, t, var=v) for t, v in zip(HIGH, near)]
    config = Config("table3", sizes=(8,), train_bers=(0.0, 0.05))
    assert _claims(config, recs)["flip training raises T-bar"].comparisons[0].p == pytest.approx(0.1)
    assert _claims(config, recs)["flip training raises T-bar"].outcome == "cannot tell"
    lenient = {c.claim.split(" (")[0]: c for c in paper_claims(config, recs, alpha=0.2)}
    assert lenient["flip training raises T-bar"].outcome == "held"
    assert _claims(config, recs)["smaller flip-trained BNNs have lower VAR(Pi)"].outcome == "cannot tell"
    assert lenient["smaller flip-trained BNNs have lower VAR(Pi)"].outcome == "held"
    gap = [_record("fc-8", 0.0, 1.0, var=v) for v in HIGH]          # fc-8 has no 5% cell
    gap += [_record("fc-16", b, 1.0, var=v) for b, vs in ((0.0, HIGH), (0.05, LOW)) for v in vs]
    small = _claims(Config("table3", sizes=(8, 16), train_bers=(0.0, 0.05)), gap)[
        "smaller flip-trained BNNs have lower VAR(Pi)"]
    assert [c.label for c in small.comparisons] == ["fc-16"]
    with pytest.raises(KeyError, match="0.2"):
        accuracy_at(_record("fc-8", 0.0, 1.0, accuracies={"0.1": 0.5}), 0.2)


def test_every_training_ber_above_0_is_compared_even_a_small_one():
    """1% is a flip-training BER like any other: compared against 0% as 10% is."""
    recs = [_record("fc-8", 0.0, t) for t in LOW] + [_record("fc-8", b, t) for b in (0.01, 0.1) for t in HIGH]
    claim = _claims(Config("table3", sizes=(8,), train_bers=(0.0, 0.01, 0.1)), recs)["flip training raises T-bar"]
    assert [c.label for c in claim.comparisons] == ["fc-8, trained at 0.01 vs 0", "fc-8, trained at 0.1 vs 0"]
