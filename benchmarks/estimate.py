"""Benchmark of `refbnn experiment`'s up-front estimate against the measured wall time.
Prints, per configuration, the estimate, the measured time and their ratio, in one run.

    python benchmarks/estimate.py [--jobs 2] [--skip-fashion]

Configurations (docs/experiments.md, "Presets and what they cost"):
  1. `table3 --preset quick` (digits, FC 8..128, 6 training BERs, 3 repetitions, 60 epochs: 90 cells);
  2. a few Fashion-MNIST cells: `table3 --dataset fashion-mnist --sizes 8,32 --train-ber 0,0.05
     --reps 1 --epochs 3` (4 cells), where Fashion-MNIST is installed.
The goal is a ratio measured / estimated within 0.5..2. Run it on an idle machine (check
`uptime` first): the estimate and the run must see the same cores.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from refbnn.experiments.cells import PRESETS, Config, cells, dataset
from refbnn.experiments.estimate import estimate_seconds

FASHION = Path("/usr/share/datasets/fashion-mnist")


def measure(args: list[str], jobs: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "refbnn.cli", "experiment", *args, "--out", str(Path(out) / "run"),
                        "--jobs", str(jobs)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--skip-fashion", action="store_true")
    a = ap.parse_args()
    runs = [("quick table3 (90 cells)", Config("table3", **{k: v for k, v in PRESETS["quick"].items()}),
             ["table3", "--preset", "quick"])]
    if FASHION.exists() and not a.skip_fashion:
        runs.append(("Fashion, 4 cells of 3 epochs",
                     Config("table3", dataset="fashion-mnist", sizes=(8, 32), train_bers=(0.0, 0.05), reps=1,
                            epochs=3),
                     ["table3", "--dataset", "fashion-mnist", "--sizes", "8,32", "--train-ber", "0,0.05",
                      "--reps", "1", "--epochs", "3"]))
    print(f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {a.jobs} workers")
    for name, config, args in runs:
        data = dataset(config.dataset)
        t0 = time.perf_counter()
        estimate = estimate_seconds(config, data, cells(config)) / a.jobs
        took = time.perf_counter() - t0
        wall = measure(args, a.jobs)
        print(f"{name}: estimated {estimate:.0f} s (in {took:.1f} s), measured {wall:.0f} s, "
              f"measured / estimated = {wall / estimate:.2f}")


if __name__ == "__main__":
    main()
