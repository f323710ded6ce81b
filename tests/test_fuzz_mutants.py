"""Done-when of the fuzz issue, on implementations outside verify's registry (wrong code,
tests/mutant_metrics.py): `refbnn fuzz` finds each from scratch within 200 examples and
shrinks it to a handful of neurons and inputs; the conformance suite alone catches each."""
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from refbnn.formats.modelfile import read_model

HERE = Path(__file__).resolve().parent
MUTANTS = ["kernel-rotated", "binarize-polarity-ignored", "first-layer-spared", "mean-over-one-input-too-many",
           "binarized-first-layer-over-z"]


def _cmd(name: str) -> str:
    return f"{sys.executable} {HERE}/mutant_metrics.py {name} {{model}} {{data}} {{request}} {{claims}}"


@pytest.mark.slow
@pytest.mark.parametrize("name", MUTANTS)
def test_fuzz_finds_each_mutant_from_scratch(tmp_path, name):
    out = tmp_path / "out"
    r = run_cli("fuzz", "--impl", _cmd(name), "--out", out, "--max-examples", "200", "--shrink-time", "30")
    assert r.exit_code == 1, r.output
    assert any(line.startswith("finding: wrong: ") for line in r.output.splitlines()), r.output
    assert read_model(out / "model.json").neurons <= 5
    assert len(np.load(out / "data.npz")["y"]) <= 2


@pytest.mark.parametrize("name", MUTANTS)
def test_the_conformance_suite_alone_catches_each_mutant(name):
    r = run_cli("conformance", "run", "--impl", _cmd(name))
    assert r.exit_code == 1, r.output
    assert " 0 fail" not in r.output.strip().splitlines()[-1]
