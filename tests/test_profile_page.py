"""The words of profile.md (refbnn/measure/profile_page.py) on a profile document written
by hand: every number in it is chosen here, so each sentence, with its percentages,
choices (the weakest layer, the first BER that falls 5 points, the most important neuron,
the certified k where accuracy reaches 0) and branches, is known before the page is
made. test_profile.py checks the same page against a real profile's own numbers."""
from __future__ import annotations

import copy

from refbnn.measure.profile_page import (accuracy_reading, certified_reading, importance_reading, protection_reading,
                                         tolerance_reading, write_page)


def _q(v: str) -> dict:
    return {"value": v}


DOC = {
    "model": "m.json", "data": "d.npz", "inputs": 200, "neurons": 12,
    "accuracy": _q("0.8"),
    "T": ["0.5", "1"], "T_bar": _q("0.625"),
    "layers": [
        {"layer": 1, "T_bar": _q("0.75"), "neurons": 8, "first": True},
        {"layer": 3, "T_bar": _q("0.5"), "neurons": 4, "first": False},
    ],
    "bit_errors": {"results": [
        {"ber": "0", "mean": _q("0.8"), "reps": 5, "ci95": None},
        {"ber": "0.01", "mean": _q("0.78"), "reps": 5, "ci95": [0.765, 0.795]},   # 2 points down
        {"ber": "0.05", "mean": _q("0.74"), "reps": 5, "ci95": None},            # 6 points down: the first
        {"ber": "0.1", "mean": _q("0.5"), "reps": 5, "ci95": [0.45, 0.55]},
    ]},
    "importance": [_q("0.25"), _q("-0.125"), _q("0.5"), _q("0")],
    "var_importance": _q("0.0537109375"),
    "profile": {
        "margins": {"1": {"tolerated_flips": [10, 30, 40, 20]}, "3": {"tolerated_flips": [5, 0, 0, 0]}},
        "importance_share": {"1": {"neurons": 8, "carry_half": 2, "total": _q("1.5")},
                             "3": {"neurons": 4, "carry_half": 0, "total": _q("0")}},
        "certified": {"certified_accuracy": {"0": _q("0.8"), "1": _q("0.45"), "2": _q("0"), "3": _q("0")},
                      "bottleneck": {"layer 1": 30, "layer 3": 70}},
        "protection": {
            "spec": "top-importance:2", "described": "2 neurons of layer 1", "controls": 5, "alpha": 0.05,
            "results": [
                {"ber": "0", "unprotected_mean": _q("0.8"), "protected_mean": _q("0.8"), "control_mean": _q("0.8"),
                 "p_beats_random": _q("1"), "beats_random": False, "min_p": _q("0.03125")},
                {"ber": "0.05", "unprotected_mean": _q("0.74"), "protected_mean": _q("0.79"),
                 "control_mean": _q("0.75"), "p_beats_random": _q("0.03125"), "beats_random": True,
                 "min_p": _q("0.03125")},
                {"ber": "0.1", "unprotected_mean": _q("0.5"), "protected_mean": _q("0.55"),
                 "control_mean": _q("0.54"), "p_beats_random": _q("0.40625"), "beats_random": False,
                 "min_p": _q("0.03125")},
            ]},
    },
}


def test_the_accuracy_reading():
    """Clean 80% on 200 inputs; BER 0 is not repeated; 0.78 is 2 points down (with its
    interval), 0.74 is 6 > 5 points down: the first BER to fall that far."""
    assert accuracy_reading(DOC) == [
        "Clean accuracy: 80.0% on 200 inputs.",
        "At BER 0.01: mean accuracy 78.0% over 5 repetitions (95% interval 76.5% to 79.5%).",
        "At BER 0.05: mean accuracy 74.0% over 5 repetitions.",
        "At BER 0.1: mean accuracy 50.0% over 5 repetitions (95% interval 45.0% to 55.0%).",
        "The mean accuracy first falls more than 5 points below clean at BER 0.05.",
    ]
    steady = copy.deepcopy(DOC)
    for r in steady["bit_errors"]["results"]:
        r["mean"] = _q("0.76")                                   # 4 points down at every BER
    assert accuracy_reading(steady)[-1] == "The mean accuracy stays within 5 points of clean at every BER measured."


def test_the_tolerance_reading():
    """The weakest layer is layer 3 (T-bar 0.5 < 0.75), not the first; layer 1's margins:
    20 + 40 of 100 tolerate 2 or more flips (60.0%), 10 none; layer 3's 5 margins none."""
    assert tolerance_reading(DOC) == [
        "T-bar = 0.625 over b in {0.5, 1}; the lowest layer is layer 3 (T-bar 0.500, 4 neurons).",
        "Layer 1: 60.0% of its margins tolerate 2 or more weight flips, 10.0% tolerate none (Theorem 1).",
        "Layer 3: 0.0% of its margins tolerate 2 or more weight flips, 100.0% tolerate none (Theorem 1).",
    ]
    first = copy.deepcopy(DOC)
    first["layers"][0]["T_bar"] = _q("0.25")
    assert tolerance_reading(first)[0] == ("T-bar = 0.625 over b in {0.5, 1}; the lowest layer is layer 1 "
                                           "(T-bar 0.250, 8 neurons, first layer: eq. 2 divides by Z).")


def test_the_importance_reading():
    """VAR(Pi) as given; layer 1: 2 of 8 carry half; layer 3's total is 0: no accuracy lost;
    the most important neuron is neuron 2 (Pi = 0.5, the largest, not the first): flipping
    it loses 0.5 x 80% = 40.0% of the inputs."""
    assert importance_reading(DOC) == [
        "VAR(Pi) = 0.0537 (eq. 6).",
        "Layer 1: 2 of 8 neurons carry half of the layer's total importance.",
        "Layer 3: flipping any one of its 4 neurons costs no accuracy.",
        "The most important neuron is neuron 2 (Pi = 0.5): flipping its output loses 40.0% of the inputs.",
    ]
    skipped = {k: v for k, v in DOC.items() if k != "importance"}
    assert importance_reading(skipped) == ["Algorithm 1 was skipped (--no-importance): no Pi, no VAR(Pi)."]


def test_the_certified_reading():
    """k = 0: 80%; k = 1: 45% (1 flip, singular); k = 2 is the first k at 0, and not the
    last asked (3), so "2 or more"; layer 3 limits most often (70 > 30)."""
    assert certified_reading(DOC) == [
        ("Certified: 80.0% of the test inputs are classified correctly and keep that prediction under any 0 "
         "weight flips per neuron."),
        ("Certified: 45.0% of the test inputs are classified correctly and keep that prediction under any 1 "
         "weight flip per neuron."),
        ("Certified: no test input keeps a correct prediction under any 2 or more weight flips per neuron "
         "(of those asked)."),
        "What limits the certificate most often: layer 3 (70 inputs).",
    ]
    last = copy.deepcopy(DOC)
    cert = last["profile"]["certified"]
    del cert["certified_accuracy"]["3"]
    cert["bottleneck"] = {"layer 1": 0, "layer 3": 0}
    assert certified_reading(last)[2:] == [("Certified: no test input keeps a correct prediction under any 2 "
                                            "weight flips per neuron.")]


def test_the_protection_reading():
    """BER 0 is left out; at 0.05 the protection beats random (p = 1/32), at 0.1 not (p =
    13/32 = 0.406); both named in the answer."""
    assert protection_reading(DOC) == [
        ("Protected (top-importance:2): 2 neurons of layer 1. Control: as many units of the same layers, chosen at "
         "random (5 choices, averaged per repetition); both read the same flips as the unprotected model, less "
         "their protected bits."),
        ("BER 0.05: unprotected 74.0%, protected 79.0%, random control 75.0%; p = 0.0312 that the protection beats "
         "random (significant)."),
        ("BER 0.1: unprotected 50.0%, protected 55.0%, random control 54.0%; p = 0.406 that the protection beats "
         "random."),
        ("Answer: protecting these units helps more than protecting as many random ones at BER 0.05 (paired "
         "sign-flip test, p <= 0.05)."),
        "Not significant at BER 0.1.",
    ]
    none = copy.deepcopy(DOC)
    for r in none["profile"]["protection"]["results"]:
        r["beats_random"] = False
    assert protection_reading(none)[-1] == ("Answer: at no BER does protecting these units beat as many random ones "
                                            "significantly (the smallest p attainable with these repetitions is "
                                            "0.0312).")
    unprotected = copy.deepcopy(DOC)
    del unprotected["profile"]["protection"]
    assert protection_reading(unprotected) == []


def test_the_page_puts_each_reading_under_its_heading_with_its_figures():
    """Sections in order, each figure linked only where it was written, the protection
    section only when protection was asked, and the skipped-figures note without figures."""
    page = write_page(DOC, ["accuracy.png", "accuracy.svg", "margins.png"], "refbnn profile m.json d.npz")
    heads = [line for line in page.splitlines() if line.startswith("#")]
    assert heads == ["# Bit error tolerance profile: m.json", "## Accuracy under bit errors",
                     "## What protection buys", "## Margins (eqs. 1-5, Theorem 1)",
                     "## Neuron importance (Algorithm 1, eq. 6)", "## Certified accuracy", "## How this was made"]
    assert "Data: d.npz, 200 inputs; 12 neurons." in page
    assert "![accuracy](accuracy.png)" in page and "![margins](margins.png)" in page
    assert "![tolerance]" not in page and "Figures were skipped" not in page
    assert "- Not significant at BER 0.1." in page and "Command: `refbnn profile m.json d.npz`" in page
    bare = copy.deepcopy(DOC)
    del bare["profile"]["protection"]
    page = write_page(bare, [], "c")
    assert "## What protection buys" not in page and "![" not in page
    assert "Figures were skipped: matplotlib is not installed (`pip install 'refbnn[plots]'`)" in page


def test_the_readings_at_their_edges():
    """Exactly 5 points below clean (0.75 - 0.05 = 0.7 in floats too) is not "more than 5";
    no correct input at k = 0 already, and the first k at 0 being 1 (the last asked); the
    most limiting layer is the one with most inputs, not the last named; a layer whose
    importance totals 0.5 still has neurons carrying half; plain numbers read as numbers."""
    from refbnn.measure.profile_page import _v

    edge = copy.deepcopy(DOC)
    edge["accuracy"] = _q("0.75")
    edge["bit_errors"]["results"] = [{"ber": "0.1", "mean": _q("0.7"), "reps": 5, "ci95": None}]
    assert accuracy_reading(edge)[-1] == "The mean accuracy stays within 5 points of clean at every BER measured."
    cert = edge["profile"]["certified"]
    cert["certified_accuracy"] = {"0": _q("0"), "1": _q("0")}
    cert["bottleneck"] = {"layer 1": 70, "layer 3": 30}
    assert certified_reading(edge) == [
        ("Certified: 0.0% of the test inputs are classified correctly and keep that prediction under any 0 "
         "weight flips per neuron."),
        "Certified: no test input keeps a correct prediction under any 1 weight flips per neuron.",
        "What limits the certificate most often: layer 1 (70 inputs)."]
    edge["profile"]["importance_share"]["1"]["total"] = _q("0.5")
    assert importance_reading(edge)[1] == "Layer 1: 2 of 8 neurons carry half of the layer's total importance."
    assert _v(0.25) == 0.25 and _v({"value": "0.5"}) == 0.5


def test_every_figure_under_its_heading_and_the_defaults():
    """With all five figures written each is linked once, in the page's order; a document
    without model and data names says "model" and "?"; the closing sentence names verify."""
    names = ["accuracy", "tolerance", "margins", "importance", "certified"]
    page = write_page(DOC, [f"{n}.png" for n in names], "c")
    links = [line for line in page.splitlines() if line.startswith("![")]
    assert links == [f"![{n}]({n}.png)" for n in names]
    bare = {k: v for k, v in DOC.items() if k not in ("model", "data")}
    page = write_page(bare, [], "c")
    assert page.startswith("# Bit error tolerance profile: model\n") and "Data: ?, 200 inputs; 12 neurons." in page
    assert ("Every number is in `profile.json`, exact where exact; `refbnn verify MODEL DATA --claims "
            "profile.json` recomputes the accuracy, T, Pi, VAR(Pi) and the accuracies under bit errors.") in page
