"""Shared fixtures, helpers and the Hypothesis profiles.

Helpers that several test modules use live here, not in one test module that the others
import (`from conftest import run_cli, assert_clean_exit, damaged`).

Profiles (pick with HYPOTHESIS_PROFILE): `dev` (default on a workstation), `ci`
(chosen automatically when CI=true: derandomized, so a CI run is repeatable) and
`thorough` (many more examples, for a long run before a release).
"""
import itertools
import os
from fractions import Fraction

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one worker per core already: the bit kernel's loops (numba) on one thread each, read
    # when numba starts (test_bitkernel.py checks other thread counts in a child process)
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from refbnn.cli import main
from refbnn.engines import bitkernel
from refbnn.engines.fast import FastEngine
from refbnn.engines.interpreter import Interpreter

settings.register_profile("dev", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_addoption(parser):
    parser.addoption("--thorough", action="store_true",
                     help="use the 'thorough' Hypothesis profile (1,000 examples per property)")


def pytest_configure(config):
    if config.getoption("--thorough"):
        settings.load_profile("thorough")

class NumpyEngine(FastEngine):
    """The fast engine on its float GEMMs (the default without the `fast` extra)."""
    name = "fast-numpy"

    def __init__(self, model, *args, **kw):
        super().__init__(model, *args, kernel="numpy", **kw)


class BitsEngine(FastEngine):
    """The fast engine on the bit kernel (the `fast` extra: numba)."""
    name = "fast-bits"

    def __init__(self, model, *args, **kw):
        super().__init__(model, *args, kernel="bits", **kw)


ENGINES = [Interpreter, NumpyEngine] + ([BitsEngine] if bitkernel.available() else [])


@pytest.fixture(params=ENGINES, ids=lambda e: e.name)
def engine_cls(request):
    """Each behavioural test runs once per engine: the reference, and the fast one on each
    of its kernels."""
    return request.param


def run_cli(*args):
    """`refbnn ARGS` through click's runner (paths may be Path objects)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_exit(result) -> None:
    """The promise: exit 0, 1 or 2; on 2 one line naming refbnn's error; never a traceback."""
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("refbnn: error: ") and len(lines[0]) <= 420, lines


def damaged(raw: bytes, data) -> bytes:
    """Flip, delete or insert bytes, or truncate (drawn from Hypothesis `data`): the damage a
    disk or a bad writer does."""
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
    pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
    if kind == "truncate":
        return raw[:pos]
    if kind == "flip":
        return raw[:pos] + bytes([raw[pos] ^ data.draw(st.integers(1, 255))]) + raw[pos + 1:]
    if kind == "insert":
        return raw[:pos] + data.draw(st.binary(min_size=1, max_size=8)) + raw[pos:]
    return raw[:pos] + raw[pos + data.draw(st.integers(1, 64)):]


def enumerated_expected_accuracy(model, x, y, p: Fraction, layers=None) -> Fraction:
    """E[accuracy] under weight flips with probability p per bit, by brute force: every flip
    pattern of the targeted weight layers' bits (all layers, or `layers`), weighted
    p^k (1 - p)^(n - k) with k the flips in it, times the inputs it leaves correct, / I."""
    targets = [i for i in model.weight_indices if layers is None or i in layers]
    shapes = [model.layers[i].weight.shape for i in targets]
    sizes = [int(np.prod(s)) for s in shapes]
    n = sum(sizes)
    total = Fraction(0)
    for bits in itertools.product([False, True], repeat=n):
        flat = np.array(bits, dtype=bool)
        parts = dict(zip(targets, (m.reshape(s) for m, s in zip(np.split(flat, np.cumsum(sizes)[:-1]), shapes))))
        masks = [parts.get(i) for i in model.weight_indices]
        correct = int((FastEngine(model, masks).predictions(x) == y).sum())
        k = int(flat.sum())
        total += p**k * (1 - p)**(n - k) * correct
    return total / len(y)


def torch_zip(path, pkl: bytes, storages: dict = None, byteorder: str = "little") -> str:
    """A torch zip file at `path` from a hand-assembled data.pkl and raw storages (the
    layout torch.save writes: archive/data.pkl, archive/byteorder, archive/data/KEY)."""
    import zipfile
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", byteorder)
        for k, v in (storages or {}).items():
            z.writestr(f"archive/data/{k}", v)
    return str(path)
