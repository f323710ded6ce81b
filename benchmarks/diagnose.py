"""Benchmark of `verify`'s diagnosis. Prints times and ratios measured in one run.

    python benchmarks/diagnose.py [--inputs 1000] [--cnn] [--bit-errors]

Workload (issue: "diagnosing a failing T claim on the Fashion FC with 1,000 inputs"):
the Fashion FC 784-2048-2048-10 of Table II with random weight bits (or the CNN with
--cnn), random inputs in 0..255, labels equal to the predictions with 10% changed. The
claims are T, T_bar and the per-layer T at the default b, computed under the
`margin-without-half` convention (|h - s|), so they fail and one alternative explains them.
With --bit-errors the claims are those a user writes (accuracy, predictions, T and the
accuracies of 5 repetitions under refbnn's keyed masks at BER 0.01), made under the
forward convention `tie-ge`, so the diagnosis must replay the masks under it.
Prints: the time of one plain check of the claims, of the diagnosis, the number of
alternatives tried, and the diagnosis per alternative as a multiple of the plain check.
"""
from __future__ import annotations

import argparse
import os
import time
from fractions import Fraction

import numpy as np
from workloads import fashion_cnn, fashion_fc

from refbnn.biterrors.masks import ErrorModel
from refbnn.biterrors.sweep import correct_under_errors
from refbnn.engines.fast import FastEngine
from refbnn.formats.datafile import Dataset
from refbnn.formats.values import exact
from refbnn.semantics.accuracy import accuracy
from refbnn.semantics.margin import DEFAULT_B, t_bar
from refbnn.oracle.checker import check_claims
from refbnn.oracle.conventions import Variant
from refbnn.oracle.variants import VariantEngine
from refbnn.oracle.diagnose import diagnose_claims


def tie_ge_claims(model, x, y) -> dict:
    """A user's claims file written by an implementation whose thresholds give +1 at h = s."""
    engine = VariantEngine(model, Variant(tie_ge=True))
    preds = engine.predictions(x)
    T = engine.tolerance(x, DEFAULT_B)
    em = ErrorModel(0.01, seed=0, batch_size=128)
    accs = [Fraction(correct_under_errors(engine, x, y, em, r), len(y)) for r in range(5)]
    return {"accuracy": exact(accuracy(preds, y)), "predictions": [int(p) for p in preds],
            "T": {str(b): exact(T.overall[b]) for b in DEFAULT_B},
            "bit_errors": {"seed": 0, "batch_size": 128, "results": [{"ber": "0.01", "accuracies": [exact(a) for a in accs]}]}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", type=int, default=1000)
    ap.add_argument("--cnn", action="store_true")
    ap.add_argument("--bit-errors", action="store_true", help="claims with bit errors, made under tie-ge")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    model = fashion_cnn(rng) if args.cnn else fashion_fc(rng)
    x = rng.integers(0, 256, (args.inputs, 1, 28, 28))
    y = np.asarray(FastEngine(model).predictions(x))
    noisy = rng.random(len(y)) < 0.1
    y[noisy] = rng.integers(0, 10, int(noisy.sum()))
    data = Dataset(x, y)

    if args.bit_errors:
        claims = tie_ge_claims(model, x, y)
    else:
        wrong = VariantEngine(model, Variant(no_half=True)).tolerance(x, DEFAULT_B)
        T = {str(b): wrong.overall[b] for b in DEFAULT_B}
        claims = {"T": {k: exact(v) for k, v in T.items()}, "T_bar": exact(t_bar(T)),
                  "layers": [{"T": {str(b): exact(layer[b]) for b in DEFAULT_B}} for layer in wrong.layers]}

    start = time.perf_counter()
    checks = check_claims(FastEngine(model), model, data, claims, "claims", 1e-9)
    plain = time.perf_counter() - start
    start = time.perf_counter()
    d = diagnose_claims(model, data, claims, "claims", 1e-9, checks)
    spent = time.perf_counter() - start
    print(f"{'CNN' if args.cnn else 'FC 784-2048-2048-10'}, {args.inputs} inputs, {os.cpu_count()} cores")
    print(f"failing checks: {sum(not c['pass'] for c in checks)} of {len(checks)}")
    print(f"plain check of the claims: {plain:.2f} s")
    print(f"diagnosis: {spent:.2f} s for {d.tried} alternatives tried "
          f"({spent / max(d.tried, 1):.3f} s each, {spent / max(d.tried, 1) / plain:.2f}x a plain check)")
    print("\n".join(d.lines()))


if __name__ == "__main__":
    main()
