"""Benchmark of accuracy sweeps under bit errors. Prints ratios measured in one run.

    python benchmarks/sweep.py [--inputs 3000] [--bers 10] [--reps 10] [--quick]

Workload (the paper's Fig. 1, top row): the Fashion FC 784-2048-2048-10 of Table II
with random weight bits, random inputs in 0..255, batch 128, `--bers` BERs times
`--reps` repetitions, a fresh keyed flip pattern per batch on every weight layer.
Ratios, all against `bers * reps` bare float32 forwards of the same shapes:
  1. `accuracy_sweep` as `refbnn eval` runs it: one engine; each batch's keyed draws made
     once (raw 64-bit outputs) and shared by every BER; flips negated in place, nested in p;
  2. the same sweep the way it was before: per BER and batch, the definitional masks
     `random(shape) < p` and a new FastEngine built from them;
  3. the definitional mask generation of (2) alone.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
from workloads import bare_float32, fashion_fc, float32_weights

from refbnn.biterrors.masks import ErrorModel, error_batches, keyed_mask
from refbnn.biterrors.sweep import accuracy_sweep
from refbnn.engines.fast import FastEngine


def rebuild_per_batch(model, x, y, bers, reps, em) -> int:
    """The sweep with a new engine per batch (unpack and convert every weight again)."""
    correct = 0
    for _, p in bers:
        for r in range(reps):
            for j, sl in error_batches(len(y), em.batch_size):
                weights = [keyed_mask(em.seed, r, j, t, model.layers[i].weight.shape, p)
                           for t, i in enumerate(model.weight_indices)]
                correct += int((FastEngine(model, weights).predictions(x[sl]) == y[sl]).sum())
    return correct


def masks_only(model, n, bers, reps, em) -> None:
    for _, p in bers:
        for r in range(reps):
            for j, sl in error_batches(n, em.batch_size):
                [keyed_mask(em.seed, r, j, t, model.layers[i].weight.shape, p)
                 for t, i in enumerate(model.weight_indices)]


def measure(n: int, nb: int, reps: int) -> None:
    """Run the sweep workload and print its ratios (see the module docstring)."""
    rng = np.random.default_rng(0)
    model = fashion_fc(rng)
    x = rng.integers(0, 256, (n,) + model.input_shape)
    y = rng.integers(0, 10, n)
    bers = [(f"{p:g}", p) for p in np.linspace(0.001, 0.1, nb)]
    em = ErrorModel(0.0, 0, 128)
    engine = FastEngine(model)
    print(f"\n== BER sweep: Fashion FC 784-2048-2048-10, {n} inputs, batch 128, {nb} BERs x {reps} "
          f"repetitions (load average {os.getloadavg()[0]:.2f}) ==")
    ws = float32_weights(model)
    t = time.perf_counter()
    for _ in range(nb * reps):
        bare_float32(model, ws, x, 128)
    t_bare = time.perf_counter() - t
    t = time.perf_counter()
    sweep = accuracy_sweep(engine, x, y, bers, reps, em)
    t_sweep = time.perf_counter() - t
    t = time.perf_counter()
    old = rebuild_per_batch(model, x, y, bers, reps, em)
    t_old = time.perf_counter() - t
    assert old == sum(a.numerator * n // a.denominator for s in sweep for a in s.accuracies), \
        "the sweep and the per-BER rebuild must give the same predictions"
    t = time.perf_counter()
    masks_only(model, n, bers, reps, em)
    t_masks = time.perf_counter() - t
    print(f"accuracy_sweep                       / {nb * reps} bare forwards: {t_sweep / t_bare:6.2f}x  "
          f"(target <= 2x)")
    print(f"per-BER masks, engine rebuilt per batch / {nb * reps} bare forwards: {t_old / t_bare:6.2f}x")
    print(f"per-BER mask generation alone         / {nb * reps} bare forwards: {t_masks / t_bare:6.2f}x")
    print(f"before / now: {t_old / t_sweep:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=3000)
    ap.add_argument("--bers", type=int, default=10)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="300 inputs, 2 BERs x 2 repetitions")
    args = ap.parse_args()
    measure(*((300, 2, 2) if args.quick else (args.inputs, args.bers, args.reps)))


if __name__ == "__main__":
    main()
