"""The conformance suite: committed cases with their expected claims as exact fractions,
for implementations in any language (docs/semantics.md §12.5), like CPython's decimal
test data.

Each case is built by the fuzz builder from a seeded NumPy generator: the first seed
whose case reaches the spec's edges and whose expected claims change under each of the
spec's registry conventions (an implementation with that convention must fail it).
So `write_suite` rebuilds the committed files byte for byte.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..formats.datafile import Dataset, read_data
from ..formats.files import InputError, atomic_open, read_json, write_json
from ..formats.modelfile import read_model
from ..oracle.conventions import REGISTRY
from ..oracle.diagnose import differs_under
from .build import Case, Reach, RngDraws, build_case
from .compare import Finding, check_request, expected_claims, judge
from .edges import reached
from .external import run_command

SUITE = Path(__file__).resolve().parent / "vectors"
SUITE_KEY = 20210202          # the paper's arXiv month: the generator's key for every case
MAX_SEEDS = 4000


@dataclass(frozen=True)
class Spec:
    """A case of the suite: what it pins (edges, conventions), where (§), and its reach."""

    name: str
    pins: str
    section: str
    features: tuple[str, ...]
    edges: tuple[str, ...] = ()
    conventions: tuple[str, ...] = ()
    importance: bool = True
    bit_errors: bool = False
    max_neurons: int = 6
    max_inputs: int = 6


SPECS = (
    Spec("first-layer-tie", "a tie h = s in the first layer; eq. 2's 1/Z and its s", "§2.3, §4", ("fc",),
         ("tie-first-layer", "data-reaches-z", "z-not-power-of-two"),
         ("tie-ge", "first-layer-without-z", "first-layer-without-s")),
    Spec("hidden-tie-polarity", "a tie in a hidden layer with polarity -1; eq. 1's 1/2 and >= b", "§2.3, §4",
         ("fc", "polarity"), ("tie-hidden-layer", "polarity", "fractional-b"),
         ("polarity-ignored", "t-strict", "margin-without-half")),
    Spec("score-tie", "class scores tie at the top: the smaller index wins", "§2.5", ("fc",), ("score-tie",),
         ("argmax-last",)),
    Spec("data-below-z", "data whose largest |x| stays below Z: still divided by Z", "§1, §4", ("fc",),
         ("data-below-z", "fractional-b"), ("first-layer-without-z",)),
    Spec("float32-first-layer", "a first-layer decision that float32 sums of x/Z get wrong", "§1, §2.3",
         ("fc",), ("float32-rounding",), (), False, False, 6, 8),
    Spec("padding-hidden", "padding in a hidden conv layer: padded taps are absent", "§2.2",
         ("conv", "padding"), ("padding-hidden-layer",), ("pad-minus-one", "pad-plus-one")),
    Spec("pool-first-odd-map", "conv -> maxpool -> threshold on an odd map", "§2.1, §2.4",
         ("conv", "pool-first"), ("pool-first", "odd-map-before-pool"), ("pool-threshold-swapped",)),
    Spec("threshold-first", "conv -> threshold -> maxpool (pooling is OR)", "§2.4",
         ("conv", "threshold-first"), ("threshold-first",), ("pool-threshold-swapped",)),
    Spec("flatten-order", "flatten in C, H, W order; weight bits big-endian", "§2.1, §3.1",
         ("conv", "fc"), (), ("flatten-channels-last", "bits-little-endian")),
    Spec("importance", "Algorithm 1 and eq. 6: relative drop, output flipped, 1/N", "§5", ("fc",), (),
         ("pi-absolute", "pi-over-flipped", "pi-flip-h", "var-ddof1")),
    Spec("conv-importance", "a conv neuron is flipped at every position; eqs. 3-5 averaged in turn", "§4, §5",
         ("conv",), (), ("conv-pi-one-position", "pooled-mean", "layers-unweighted")),
    Spec("binarized-input", "an input the network binarises: eq. 1 for its first layer", "§2.6",
         ("fc", "binarized-input"), ("binarized-input", "fractional-b")),
    Spec("b-past-every-margin", "b above every margin, and fractions of b", "§4", ("fc", "conv"),
         ("b-past-every-margin", "fractional-b")),
    Spec("bit-errors", "keyed masks per batch, every weight layer, transient; the sample std", "§6",
         ("fc",), (), ("keys-batch-first", "masks-per-input", "masks-per-pass", "output-layer-clean",
                       "persistent-errors", "std-ddof0"), False, True),
    Spec("bit-errors-activations", "activation flips: tensors numbered weights first", "§6", ("fc",),
         ("activations-targeted",), ("activations-numbered-first",), False, True),
    Spec("everything", "all features at once", "§2", ("fc", "conv", "padding", "pool-first", "threshold-first",
                                                       "polarity", "binarized-input"),
         ("polarity",), (), True, True, 10, 6),
)


def _reach(spec: Spec) -> Reach:
    return Reach(frozenset(spec.features), spec.max_neurons, spec.max_inputs, None, spec.importance, spec.bit_errors)


def _accepts(spec: Spec, case: Case) -> Optional[dict]:
    """The expected claims if the case reaches the spec's edges and separates its conventions."""
    if not set(spec.edges) <= reached(case):
        return None
    expected = expected_claims(case.model, case.x, case.y, case.request)
    data = Dataset(case.x, case.y)
    for name in spec.conventions:
        if not differs_under(case.model, data, expected, REGISTRY[name].variant, 1e-12):
            return None
    return expected


def build_spec(index: int, spec: Spec) -> tuple[Case, dict, int]:
    """The first seed's case that the spec accepts, its expected claims, and the seed."""
    for seed in range(MAX_SEEDS):
        case = build_case(RngDraws(np.random.default_rng([SUITE_KEY, index, seed])), _reach(spec))
        expected = _accepts(spec, case)
        if expected is not None:
            return case, expected, seed
    raise RuntimeError(f"conformance: no seed below {MAX_SEEDS} builds a case for {spec.name}")


def write_suite(directory: Path, progress: Optional[Callable[[int, int], None]] = None) -> list[dict]:
    """Write every case (model.json, data.npz, request.json, expected.json) and index.json."""
    from .fuzz import write_case

    index = []
    for k, spec in enumerate(SPECS):
        case, expected, seed = build_spec(k, spec)
        name = f"{k + 1:02d}-{spec.name}"
        write_case(case, directory / name)
        _write_text(directory / name / "expected.json", json.dumps(expected, indent=1) + "\n")
        index.append({"case": name, "pins": spec.pins, "section": spec.section,
                      "features": sorted(case.features), "edges": sorted(reached(case)),
                      "conventions": list(spec.conventions), "seed": seed,
                      "size": case.size()})
        if progress is not None:
            progress(k + 1, len(SPECS))
    _write_text(directory / "index.json", json.dumps(index, indent=1) + "\n")
    return index


def _write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


@dataclass
class CaseResult:
    case: str
    pins: str
    outcome: str                 # "pass", "fail", "skipped"
    finding: Optional[Finding] = None
    missing_features: tuple = ()


def run_suite(cmd: str, features: frozenset, timeout: float, atol: float, work: Path,
              directory: Path = SUITE, progress: Optional[Callable[[int, int], None]] = None,
              model_format: str = "json") -> list[CaseResult]:
    """Run the implementation on every case whose features it supports; judge each. With
    `model_format` "onnx" it is handed the case's model as refbnn export writes it."""
    from .fuzz import write_model_onnx

    index = read_json(directory / "index.json")
    results = []
    for k, entry in enumerate(index):
        d = directory / entry["case"]
        lacking = tuple(sorted(set(entry["features"]) - set(features)))
        if lacking:
            results.append(CaseResult(entry["case"], entry["pins"], "skipped", None, lacking))
            continue
        model = read_model(d / "model.json")
        data = read_data(d / "data.npz", model)
        request = check_request(read_json(d / "request.json"), str(d / "request.json"))
        files = {"model": d / "model.json", "data": d / "data.npz", "request": d / "request.json",
                 "claims": work / "claims.json", "trace": work / "trace.npz"}
        if model_format == "onnx":
            files["model"], files["request"] = work / "model.onnx", work / "request.json"
            write_model_onnx(model, files["model"])
            write_json(files["request"], {**request, "onnx": {"input": "x/Z", "Z": model.Z}})
        outcome = run_command(cmd, files, timeout)
        finding = outcome.fault
        if finding is None:
            finding, _ = judge(model, data.x, data.y, request, outcome.claims, str(files["claims"]), atol)
        results.append(CaseResult(entry["case"], entry["pins"], "pass" if finding is None else "fail", finding))
        if progress is not None:
            progress(k + 1, len(index))
    return results


def check_suite_dir(directory: Path) -> None:
    if not (directory / "index.json").is_file():
        raise InputError(f"{directory}: not a conformance suite (no index.json)")
