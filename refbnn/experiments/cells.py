"""The paper's experiments as cells: Fig. 1, Table III and Fig. 2 (docs/experiments.md).

A cell is one trained model and its measurements: (experiment, arch, training BER,
repetition). Its seed is derived from a stable key, so a cell's result does not depend
on where or in which order it runs (`refbnn.experiments.runner` runs cells locally, in a
process pool or on a Dask cluster). A cell returns its model (JSON-ready) and a record
that holds the keys `refbnn metrics --json` writes, plus the accuracy over BER where the
experiment measures it.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import lru_cache

from ..biterrors.masks import ErrorModel
from ..biterrors.sweep import accuracy_sweep
from ..engines.fast import FastEngine, one_blas_thread
from ..formats.claimsfile import bit_errors_claims
from ..formats.files import InputError
from ..formats.modelfile import model_to_dict
from ..measure.metrics import metrics
from ..training.datasets import DataSplit, load_dataset
from ..training.trainer import TrainConfig, train

EXPERIMENTS = ("fig1", "table3", "fig2")
TABLE3_BERS = (0.0, 0.01, 0.05, 0.1, 0.2, 0.3)
FIG1_EVAL_BERS = (0.0, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)
FIG1_B = ("1/2", "1", "2", "4", "8", "16", "32", "64")
PAPER_B = ("2", "4", "8", "16", "32", "64")

PRESETS = {
    # digits, 60 epochs (seconds each), 3 repetitions: Table III for the FC family in minutes
    "quick": {"dataset": "digits", "epochs": 60, "reps": 3, "sweep_reps": 5},
    # the paper's setting (section V-A): Fashion, 100 epochs, 10 repetitions
    "paper": {"dataset": "fashion-mnist", "epochs": 100, "reps": 10, "sweep_reps": 10},
}
FAMILIES = {"fc": (8, 16, 32, 64, 128), "cnn": (8, 16, 32, 64)}


@dataclass(frozen=True)
class Config:
    """Everything that decides the results of a run; a results directory holds one."""

    experiment: str
    dataset: str = "digits"
    family: str = "fc"
    sizes: tuple[int, ...] = FAMILIES["fc"]
    train_bers: tuple[float, ...] = TABLE3_BERS
    reps: int = 3
    epochs: int = 15
    seed: int = 0
    eval_bers: tuple[float, ...] = FIG1_EVAL_BERS
    sweep_reps: int = 5

    def as_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, doc: dict) -> "Config":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in doc.items()})

    def archs(self) -> list[str]:
        return [f"{self.family}-{n}" for n in self.sizes]


@dataclass(frozen=True)
class Cell:
    config: Config
    arch: str
    train_ber: float
    rep: int

    @property
    def key(self) -> str:
        """Stable across runs and machines: names the cell's files."""
        return f"{self.arch}_ber{self.train_ber:g}_rep{self.rep}"

    @property
    def seed(self) -> int:
        """Derived from the key and the run's seed only (not from the order of execution)."""
        digest = hashlib.sha256(f"{self.config.seed}/{self.config.experiment}/{self.key}".encode()).hexdigest()
        return int(digest[:15], 16)


def cells(config: Config) -> list[Cell]:
    """Every cell of the experiment, in a fixed order."""
    return [Cell(config, arch, ber, rep) for arch in config.archs() for ber in config.train_bers
            for rep in range(config.reps)]


@lru_cache(maxsize=4)
def dataset(spec: str) -> DataSplit:
    """The data set, loaded once per process (a worker runs many cells)."""
    return load_dataset(spec)


def run_cell(cell: Cell) -> dict:
    """Train the cell's model and measure it; returns {"key", "model" (its JSON), "record"}.
    On one BLAS thread (where threadpoolctl is present) and one trainer thread, so that the
    float training gives the same model in any process on this machine; the runner's
    parallelism is its cells, one per core."""
    with one_blas_thread():
        return _run_cell(cell)


def _run_cell(cell: Cell) -> dict:
    cfg = cell.config
    data = dataset(cfg.dataset)
    tc = TrainConfig(cell.arch, epochs=cfg.epochs, batch_size=128, lr=1e-3, lr_halving=25,
                     train_ber=cell.train_ber, seed=cell.seed, threads=1)
    model = train(tc, data).model()
    engine = FastEngine(model, threads=1)
    x, y = data.x_test, data.y_test
    bs = [(b, Fraction(b)) for b in (FIG1_B if cfg.experiment == "fig1" else PAPER_B)]
    record = {"key": cell.key, "model": f"models/{cell.key}.json", "data": "data/test.npz", "arch": cell.arch,
              "train_ber": cell.train_ber, "rep": cell.rep, "seed": cell.seed,
              **metrics(engine, x, y, bs, with_importance=cfg.experiment != "fig1")}
    if cfg.experiment == "fig1":
        sweep = accuracy_sweep(engine, x, y, [(f"{p:g}", p) for p in cfg.eval_bers], cfg.sweep_reps,
                               ErrorModel(0.0, cell.seed, 128))
        record["bit_errors"] = bit_errors_claims(cell.seed, 128, "batch", None, False, int(len(y)),
                                                 [s.as_dict() for s in sweep])
    return {"key": cell.key, "model": model_to_dict(model), "record": record}


def check_config(config: Config) -> None:
    """Refuse what cannot run, naming the option."""
    if config.experiment not in EXPERIMENTS:
        raise InputError(f"EXPERIMENT: {config.experiment!r} is not one of {', '.join(EXPERIMENTS)}")
    if config.family not in FAMILIES:
        raise InputError(f"--arch: {config.family!r} is not a family ({', '.join(FAMILIES)})")
    if not config.sizes or any(n not in FAMILIES[config.family] for n in config.sizes):
        raise InputError(f"--sizes: {list(config.sizes)}: the {config.family} family has sizes "
                         f"{', '.join(map(str, FAMILIES[config.family]))}")
    for opt, values in (("--train-ber", config.train_bers), ("--eval-ber", config.eval_bers)):
        if not values or any(not 0 <= b < 1 for b in values):
            raise InputError(f"{opt}: every BER must lie in [0, 1), got {list(values)}")
