"""Benchmark of the bit kernel (refbnn.engines.bitkernel, the `fast` extra). Prints ratios
measured side by side in one run, on all cores and on one.

    python benchmarks/bitkernel.py [--inputs 3000] [--cnn-inputs 1000] [--reps 10] [--quick]

Workloads (benchmarks/workloads.py): the Fashion FC 784-2048-2048-10 and the Fashion CNN
of Table II with random weight bits and random inputs in 0..255. Ratios:
  1. forward + T tuple on the bit kernel (the fast engine's default with numba, "auto":
     every layer of at least 2^16 products per input)  vs  the bare float32 GEMMs of the same shapes
     (the floor the NumPy engine is held against), and vs the NumPy engine;
  2. the BER sweep (10 BERs x --reps repetitions, FC, batch 128) on the bit kernel  vs
     10 x reps bare float32 forwards;
  3. Algorithm 1 on the CNN (--cnn-inputs inputs) on the bit kernel  vs  one bare float32
     forward (the Pi of both equal);
and the compile time of a fresh environment (a child process with an empty numba cache),
apart. Each time is the best of three (a shared machine only ever adds time), except the
sweeps', which run once each (the bare forwards and the engines alike).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from workloads import bare_float32, fashion_cnn, fashion_fc, float32_weights, timed  # beside this script

from refbnn.biterrors.masks import ErrorModel
from refbnn.biterrors.sweep import accuracy_sweep
from refbnn.engines import bitkernel
from refbnn.engines.fast import FastEngine, one_blas_thread
from refbnn.semantics.margin import DEFAULT_B

# every kernel once, in the types the engine calls them with
COMPILE = ("import numpy as np, time; t = time.perf_counter(); from refbnn.engines import bitkernel as b; "
           "a = np.ones((2, 100), np.int8); b.signs_product(a, a, dtype=np.float32); "
           "b.integer_product(a, a, 3, dtype=np.float32); "
           "b.conv_product(np.ones((1, 4, 3, 3), np.int8), np.ones((2, 36), np.int8), 3, 1, dtype=np.float32); "
           "b.integer_conv(np.ones((1, 1, 3, 3), np.int64), np.ones((2, 9), np.int8), 3, 1, 255, np.float32); "
           "m = np.ones((1, 2, 2, 2), np.float32); b.maxpool(m); b.maxpool(m.transpose(0, 3, 1, 2)); "
           "b.margins_at_least(m, np.zeros(2, np.int64), [1], 3); "
           "b.margins_at_least(m.transpose(0, 3, 1, 2), np.zeros(2, np.int64), [1], 3); "
           "tb, ids = b.field_tables(np.ones((2, 9), np.int8), 3, 2, 2, 1); "
           "b.negated_channel_fires(np.ones((1, 2, 2), bool), -2 * tb, ids, 1, np.arange(1), True, "
           "np.zeros((1, 2, 2, 2), np.float32), np.zeros((1, 1, 1, 2), bool)); "
           "b.flip_weight_bits(b.pack_weights(a), np.arange(3), 100); b.change_product(2 * a, a, dtype=np.float32); "
           "b.change_fires(2 * a, a, None, np.arange(2), np.zeros((2, 2), np.float32), np.zeros((2, 2), bool), "
           "np.zeros(2, bool)); "
           "print(time.perf_counter() - t)")


def compile_seconds() -> float:
    """The first call's time in a fresh environment: a child process with an empty cache."""
    with tempfile.TemporaryDirectory() as cache:
        out = subprocess.run([sys.executable, "-c", COMPILE], capture_output=True, text=True, check=True,
                             env={**os.environ, "NUMBA_CACHE_DIR": cache})
    return float(out.stdout.split()[-1])


def forward_and_t(name: str, model, x, threads: int) -> None:
    bits, plain = FastEngine(model, kernel="auto", threads=threads), FastEngine(model, kernel="numpy", threads=threads)
    assert bits.tolerance(x[:64], DEFAULT_B) == plain.tolerance(x[:64], DEFAULT_B)
    ws = float32_weights(model)
    t_bare, _ = timed(bare_float32, model, ws, x, plain.batch_size, repeat=3)
    t_bits, _ = timed(bits.tolerance, x, DEFAULT_B, repeat=3)
    t_plain, _ = timed(plain.tolerance, x, DEFAULT_B, repeat=3)
    print(f"{name}: forward + T, bit kernel / bare float32 GEMMs: {t_bits / t_bare:5.2f}x   "
          f"(NumPy engine / bare: {t_plain / t_bare:5.2f}x; bit kernel / NumPy engine: {t_bits / t_plain:5.2f}x)")


def sweep(model, x, y, reps: int, threads: int) -> None:
    bers = [(f"{p:g}", p) for p in np.linspace(0.001, 0.1, 10)]
    em = ErrorModel(0.0, 0, 128)
    ws = float32_weights(model)
    t_bare, _ = timed(lambda: [bare_float32(model, ws, x, 128) for _ in range(10 * reps)])
    t_bits, a = timed(accuracy_sweep, FastEngine(model, kernel="auto", threads=threads), x, y, bers, reps, em)
    t_plain, b = timed(accuracy_sweep, FastEngine(model, kernel="numpy", threads=threads), x, y, bers, reps, em)
    assert [s.accuracies for s in a] == [s.accuracies for s in b]
    print(f"FC sweep 10 BERs x {reps}: bit kernel / {10 * reps} bare forwards: {t_bits / t_bare:5.2f}x   "
          f"(NumPy engine: {t_plain / t_bare:5.2f}x)")


def algorithm_1(model, x, y, threads: int) -> None:
    ws = float32_weights(model)
    bits, plain = FastEngine(model, kernel="auto", threads=threads), FastEngine(model, kernel="numpy", threads=threads)
    t_bare, _ = timed(bare_float32, model, ws, x, plain.batch_size, repeat=3)
    t_bits, pa = timed(bits.importance, x, y, repeat=3)
    t_plain, pb = timed(plain.importance, x, y, repeat=3)
    assert pa == pb
    print(f"CNN Algorithm 1, {len(x)} inputs: bit kernel / one bare forward: {t_bits / t_bare:5.2f}x   "
          f"(NumPy engine: {t_plain / t_bare:5.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=3000)
    ap.add_argument("--cnn-inputs", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="300 FC / 100 CNN inputs, 2 repetitions")
    args = ap.parse_args()
    if not bitkernel.available():
        raise SystemExit("bitkernel: needs numba (pip install -e '.[fast]')")
    if args.quick:
        args.inputs, args.cnn_inputs, args.reps = 300, 100, 2
    rng = np.random.default_rng(0)
    fc, cnn = fashion_fc(rng), fashion_cnn(rng)
    x = rng.integers(0, 256, (args.inputs,) + fc.input_shape)
    y = rng.integers(0, 10, args.inputs)
    xc, yc = x[:args.cnn_inputs], y[:args.cnn_inputs]
    print(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores; compile in a fresh environment: "
          f"{compile_seconds():.1f} s (once; cached after)")
    FastEngine(fc, kernel="bits").tolerance(x[:2], DEFAULT_B)        # this process's cache: loaded once
    warm = FastEngine(cnn, kernel="bits")                                  # (Algorithm 1's kernels too)
    warm.importance(xc[:4], warm.predictions(xc[:4]))
    for label, threads in (("all cores", os.cpu_count() or 1), ("one core", 1)):
        print(f"\n== {label} ==")
        with one_blas_thread(threads == 1):
            forward_and_t("Fashion FC ", fc, x, threads)
            forward_and_t("Fashion CNN", cnn, xc, threads)
            sweep(fc, x, y, args.reps, threads)
            algorithm_1(cnn, xc, yc, threads)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - t0:.0f} s in all)")
