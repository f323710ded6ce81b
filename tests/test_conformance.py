"""The conformance suite (docs/semantics.md §12.5): rebuilt byte for byte, small, every
convention of verify's registry and every edge of §12.2 changes or reaches some case,
its expected numbers agree with the reference interpreter, and `conformance run` passes a
correct implementation and fails the buggy ones."""
import json
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import run_cli

from refbnn.engines.interpreter import Interpreter
from refbnn.formats.datafile import read_data
from refbnn.formats.modelfile import read_model
from refbnn.measure.metrics import metrics
from refbnn.testing.build import Case, case_features
from refbnn.testing.conformance import SUITE
from refbnn.testing.edges import EDGES, reached
from refbnn.oracle.conventions import REGISTRY
from refbnn.oracle.diagnose import differs_under

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
INDEX = json.loads((SUITE / "index.json").read_text())


def _load(name: str):
    d = SUITE / name
    model = read_model(d / "model.json")
    data = read_data(d / "data.npz", model)
    request = json.loads((d / "request.json").read_text())
    expected = json.loads((d / "expected.json").read_text())
    return model, data, request, expected


@pytest.fixture(scope="module")
def suite():
    return {e["case"]: _load(e["case"]) for e in INDEX}


def test_the_suite_is_rebuilt_byte_for_byte(tmp_path):
    """`refbnn conformance write` reproduces every committed file (the README is written by hand)."""
    r = run_cli("conformance", "write", tmp_path)
    assert r.exit_code == 0, r.output
    committed = sorted(p.relative_to(SUITE) for p in SUITE.rglob("*") if p.is_file() and p.name != "README.md")
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert written == committed
    for rel in committed:
        assert (tmp_path / rel).read_bytes() == (SUITE / rel).read_bytes(), rel


def test_the_suite_is_small():
    assert sum(p.stat().st_size for p in SUITE.rglob("*") if p.is_file()) <= 200_000


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registry_convention_changes_an_expected_number(suite, name):
    """For each alternative convention of verify's registry some case's expected claims fail
    when recomputed under it, so an implementation with that convention fails the suite."""
    variant = REGISTRY[name].variant
    assert any(differs_under(model, data, expected, variant, 1e-12)
               for model, data, request, expected in suite.values()), name


def test_the_contract_itself_changes_no_expected_number(suite):
    """The converse: recomputed under no alternative at all (the contract's own Variant()),
    every case's expected claims hold, so differs_under does not cry wolf."""
    from refbnn.oracle.conventions import Variant

    assert not any(differs_under(model, data, expected, Variant(), 1e-12)
                   for model, data, request, expected in suite.values())


def test_every_edge_is_reached_by_a_case(suite):
    """Each edge of §12.2 is reached by some case (recomputed, not read from the index), and
    the index lists what each case reaches and which features it needs."""
    found = set()
    for e in INDEX:
        model, data, request, _ = suite[e["case"]]
        case = Case(model, data.x, data.y, request, case_features(model))
        assert sorted(reached(case)) == e["edges"]
        assert sorted(case.features) == e["features"]
        found |= reached(case)
    assert found == set(EDGES)


def test_expected_numbers_agree_with_the_reference_interpreter(suite):
    """expected.json (the fast engine's) equals the bitarray interpreter's metrics on every case."""
    for model, data, request, expected in suite.values():
        bs = [(b, Fraction(b)) for b in request["b"]]
        ours = metrics(Interpreter(model), data.x, data.y, bs, request["importance"])
        for key in ("accuracy", "T", "T_bar", "layers") + (("importance", "var_importance")
                                                            if request["importance"] else ()):
            assert ours[key] == expected[key], key


def _run(cmd: str, *args):
    return run_cli("conformance", "run", "--impl", cmd, *args)


def test_a_correct_implementation_passes_every_case():
    r = _run(f"{PY} {ROOT}/examples/independent_metrics.py --answer {{model}} {{data}} {{request}} {{claims}}")
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines()[-1] == f"conformance: {len(INDEX)} cases: {len(INDEX)} pass, 0 fail, " \
                                                "0 skipped (features left out)"


@pytest.mark.parametrize("bug", ["tie-ge", "pad-minus-one", "first-layer-without-z"])
def test_the_suite_alone_catches_each_bug(bug):
    r = _run(f"{PY} {ROOT}/examples/buggy_metrics.py --bug {bug} {{model}} {{data}} {{request}} {{claims}}")
    assert r.exit_code == 1, r.output
    assert " 0 fail" not in r.output.strip().splitlines()[-1]


def test_cases_needing_a_feature_left_out_are_skipped_and_counted(tmp_path):
    cmd = f"{PY} {ROOT}/examples/independent_metrics.py --answer {{model}} {{data}} {{request}} {{claims}}"
    r = _run(cmd, "--features", "fc", "--json", tmp_path / "out.json")
    assert r.exit_code == 0, r.output
    out = json.loads((tmp_path / "out.json").read_text())
    only_fc = [e["case"] for e in INDEX if e["features"] == ["fc"]]
    assert out["pass"] == len(only_fc) and out["skipped"] == len(INDEX) - len(only_fc)
    assert all(c["needs"] for c in out["cases"] if c["result"] == "skipped")
