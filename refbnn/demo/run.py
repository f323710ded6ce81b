"""`refbnn demo`: the paper's story on one pair of models.

Train a regular and a bit-flip-trained BNN with the same seed, then measure both
the same way: accuracy over BER (`refbnn.biterrors.sweep.accuracy_sweep`), the T
tuple and T-bar (eqs. 1-5), and VAR(Pi) (Algorithm 1, eq. 6).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

from ..biterrors.masks import ErrorModel
from ..biterrors.sweep import accuracy_sweep
from ..engines.fast import FastEngine, one_blas_thread
from ..formats.datafile import write_data
from ..formats.modelfile import write_model
from ..formats.values import exact
from ..semantics.importance import importance_variance
from ..semantics.margin import DEFAULT_B, t_bar
from ..training.datasets import DataSplit
from ..training.trainer import TrainConfig, train


def demo(data: DataSplit, arch: str, epochs: int, train_ber: float, bers: Sequence[tuple[str, float]],
         reps: int, seed: int, out_dir: str, trainer_hooks: Optional[Callable[[str], dict]] = None) -> dict:
    """Train both models, write them and the test data into `out_dir`, and return, per
    model, its training BER, its accuracy sweep (as `refbnn eval --json` writes each BER),
    T, T-bar and VAR(Pi). `trainer_hooks(name)` gives the keyword arguments (progress,
    on_epoch) for `refbnn.training.trainer.train` of the model called `name`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x, y = data.x_test, data.y_test
    write_data(out / "test.npz", x, y)
    columns = {}
    for name, p, file in (("regular", 0.0, "regular.json"), (f"flips {train_ber:g}", train_ber, "flips.json")):
        cfg = TrainConfig(arch, epochs=epochs, batch_size=128, lr=1e-3, lr_halving=25, train_ber=p, seed=seed,
                          threads=1)
        with one_blas_thread():     # as the experiment runner trains: the same model in any process
            model = train(cfg, data, **(trainer_hooks(name) if trainer_hooks else {})).model()
        write_model(out / file, model)
        engine = FastEngine(model)
        sweep = accuracy_sweep(engine, x, y, bers, reps, ErrorModel(0.0, seed, 128))
        T = engine.tolerance(x, DEFAULT_B).overall
        pi = engine.importance(x, y)
        columns[name] = {"train_ber": p, "sweep": {s.ber: s.as_dict() for s in sweep},
                         "T": {str(b): exact(v) for b, v in T.items()},
                         "T_bar": exact(t_bar(T)), "var_importance": exact(importance_variance(pi))}
    return {"dataset": data.name, "arch": arch, "epochs": epochs, "models": columns}
