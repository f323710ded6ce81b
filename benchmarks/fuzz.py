"""What one `refbnn fuzz` example costs on refbnn's side. Prints ratios measured in one run.

    python benchmarks/fuzz.py [--examples 200] [--max-neurons 64] [--max-inputs 32]

Each example: Hypothesis draws a case (every feature, Pi and bit errors asked), refbnn
writes model.json, data.npz and request.json, computes the expected numbers and compares
an implementation's claims with them (`judge`, as `refbnn verify --claims`; the claims
here are refbnn's own, so every check runs). The budget is 50 ms per example for
models up to 64 neurons and 32 inputs (docs/semantics.md §12.4). Printed: the
quantiles of one example's time as a ratio of that budget, the share of each part, and,
for scale, refbnn's side against one run of the float implementation of examples/
(a Python process that imports NumPy) on the same case.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings

from refbnn.testing import cases
from refbnn.testing.compare import expected_claims, judge
from refbnn.testing.fuzz import write_case

BUDGET = 0.050
ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--max-neurons", type=int, default=64)
    ap.add_argument("--max-inputs", type=int, default=32)
    args = ap.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f} (take ratios on an idle machine)")
    parts: dict[str, list[float]] = {"draw": [], "write": [], "expected + compare": []}
    neurons, inputs = [], []
    work = Path(tempfile.mkdtemp(prefix="refbnn-bench-"))
    clock = [time.perf_counter()]

    @settings(max_examples=args.examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(cases(max_neurons=args.max_neurons, max_inputs=args.max_inputs))
    def one(case):
        t0 = time.perf_counter()
        parts["draw"].append(t0 - clock[0])
        write_case(case, work)
        t1 = time.perf_counter()
        claims = expected_claims(case.model, case.x, case.y, case.request)   # the other side's claims
        t2 = time.perf_counter()
        finding, _ = judge(case.model, case.x, case.y, case.request, claims)
        assert finding is None
        t3 = time.perf_counter()
        parts["write"].append(t1 - t0)
        parts["expected + compare"].append(t3 - t2)
        neurons.append(case.model.neurons)
        inputs.append(len(case.y))
        one.last = case
        clock[0] = time.perf_counter()

    one()
    total = np.sum([parts[k] for k in parts], axis=0)
    print(f"{len(total)} examples; neurons up to {max(neurons)} (median {int(np.median(neurons))}), "
          f"inputs up to {max(inputs)} (median {int(np.median(inputs))})")
    q = np.quantile(total, [0.5, 0.95, 1.0])
    print(f"one example / 50 ms budget: median {q[0] / BUDGET:.2f}, 95th percentile {q[1] / BUDGET:.2f}, "
          f"max {q[2] / BUDGET:.2f}")
    for k, v in parts.items():
        print(f"  share of {k}: {np.sum(v) / np.sum(total):.2f}")
    worst = int(np.argmax(total))
    print(f"slowest example ({neurons[worst]} neurons, {inputs[worst]} inputs), parts / budget: "
          + ", ".join(f"{k} {parts[k][worst] / BUDGET:.2f}" for k in parts))
    case = one.last
    files = write_case(case, work)
    cmd = [sys.executable, str(ROOT / "examples/independent_metrics.py"), "--answer",
           *(str(files[p]) for p in ("model", "data", "request", "claims"))]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    theirs = time.perf_counter() - t0
    print(f"refbnn's side / one run of examples/independent_metrics.py (median example): "
          f"{q[0] / theirs:.2f}")


if __name__ == "__main__":
    main()
