"""An honest up-front estimate of an experiment's time (docs/experiments.md, "Presets and
what they cost"): a slice of each distinct cell is run and timed here, and extrapolated.

A cell's time is its training (steps per epoch x epochs, plus the test-set evaluation
the trainer does after each epoch), then its measurement: Algorithm 1 and the T tuple
on the test set (table3, fig2), or the accuracy sweep (fig1). Cells that share an
architecture and whether they inject bit flips while training cost the same, so each
such kind is timed once: a few training steps (after one untimed warm-up step), one
evaluation and one Algorithm 1 on a slice of the test set. Algorithm 1 is linear in the
inputs; its cost per neuron depends on the trained weights only through how often a flip
changes a prediction, which the untrained slice does not know, so the estimate is a
guide (the comparison with measured runs is in tests/test_experiments.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from ..biterrors.masks import ErrorModel
from ..biterrors.sweep import accuracy_sweep
from ..engines.fast import FastEngine, one_blas_thread
from ..training.datasets import DataSplit
from ..training.trainer import TrainConfig, Trainer
from .cells import Cell, Config

TIMED_STEPS = 6
MEASURE_SLICE = 500


@dataclass(frozen=True)
class CellCost:
    """Seconds of one cell of a kind, by part."""

    train: float
    measure: float

    @property
    def total(self) -> float:
        return self.train + self.measure


def _timed(f) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def cell_cost(config: Config, data: DataSplit, arch: str, flips: bool) -> CellCost:
    """One cell of this architecture (with or without flips in training), timed on slices."""
    tc = TrainConfig(arch, epochs=1, batch_size=128, lr=1e-3, lr_halving=25,
                     train_ber=0.05 if flips else 0.0, seed=0, threads=1)
    trainer = Trainer(tc, _first_steps(data, tc.batch_size * (TIMED_STEPS + 1)))
    trainer.train_epoch()                                     # one step to warm up, then timed ones
    trainer.data = _first_steps(data, tc.batch_size * TIMED_STEPS)
    per_step = _timed(trainer.train_epoch) / TIMED_STEPS      # includes one evaluation of the slice's test set
    steps = -(-len(data.y_train) // tc.batch_size)
    x = data.x_test[:MEASURE_SLICE]
    y = data.y_test[:MEASURE_SLICE]
    engine = FastEngine(trainer.model(), threads=1)
    scale = len(data.y_test) / len(y)
    evaluate = _timed(lambda: engine.predictions(x)) * scale
    if config.experiment == "fig1":
        sweep = _timed(lambda: accuracy_sweep(engine, x, y, [("b", config.eval_bers[-1])], 1,
                                              ErrorModel(0.0, 0, 128)))
        measure = sweep * scale * len(config.eval_bers) * config.sweep_reps
    else:
        measure = _timed(lambda: engine.importance(x, y)) * scale
    return CellCost(per_step * steps * config.epochs + evaluate * config.epochs, measure + evaluate)


def _first_steps(data: DataSplit, n: int) -> DataSplit:
    """The data set cut to its first n training inputs and a 128-input test set."""
    return DataSplit(data.x_train[:n], data.y_train[:n], data.x_test[:128], data.y_test[:128], data.Z,
                     data.classes, data.name)


def estimate_seconds(config: Config, data: DataSplit, todo: Sequence[Cell]) -> float:
    """The total single-core seconds of the cells `todo`, from one timed slice per kind of
    cell (architecture, flips in training or not), timed on one thread as the cells run
    (`one_blas_thread`, as `cells.run_cell`)."""
    with one_blas_thread():
        costs: dict[tuple[str, bool], float] = {}
        for c in todo:
            kind = (c.arch, c.train_ber > 0)
            if kind not in costs:
                costs[kind] = cell_cost(config, data, c.arch, c.train_ber > 0).total
        return sum(costs[(c.arch, c.train_ber > 0)] for c in todo)


def describe(seconds: float, workers: int) -> str:
    """'12.5 min of one core, 6.3 min on 2 workers'."""
    def span(s: float) -> str:
        return f"{s / 60:.1f} min" if s < 3 * 3600 else f"{s / 3600:.1f} h"
    return f"{span(seconds)} of one core, {span(seconds / max(workers, 1))} on {workers} " \
           f"worker{'s' if workers != 1 else ''}"

