"""Training: Adam, learning rate halved every 25 epochs, optional bit flip training.

Reproducible by construction: every random draw is keyed, not streamed:
initialisation from `default_rng(seed)`, the shuffle of epoch e from
`default_rng([seed, e])`, and the flip mask of weight layer t at step k of epoch e
from `default_rng([seed, e, k, t]).random(shape, float32) < p` (keyed like
`refbnn.biterrors`, in float32 for speed: training flips need not match evaluation's). A checkpoint (an `.npz`, no pickle, written atomically after
every epoch) therefore holds everything a resumed run needs, and `--resume`
continues to exactly the result of an uninterrupted run.
"""
from __future__ import annotations

import json
import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Callable, ContextManager, Optional

import numpy as np

from ..engines.fast import FastEngine
from ..formats.files import InputError, atomic_open, parse_json_bytes
from ..formats.npzfile import npz_arrays, npz_headers
from ..semantics.model import Model
from .architectures import Network
from .datasets import DataSplit
from .export import export
from .nn import softmax_cross_entropy


@dataclass(frozen=True)
class TrainConfig:
    arch: str
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    lr_halving: int = 25          # epochs between halvings of the learning rate
    train_ber: float = 0.0        # bit flip probability during training
    seed: int = 0
    order: str = "pool-threshold"
    padding: int = 1              # of the 3x3 convolutions
    threads: int = 1              # for the element-wise pieces (0: one per core, at most 4);
                                  # the same model on any number, so checkpoints ignore it


class Adam:
    """Adam (beta1 0.9, beta2 0.999, eps 1e-8) with bias correction, as PyTorch computes it:
    p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps). In place, so a step
    costs a few passes over each parameter and no large temporaries."""

    def __init__(self, params):
        self.params = params
        self.m = [np.zeros_like(p.value) for p in params]
        self.v = [np.zeros_like(p.value) for p in params]
        self.t = 0

    def step(self, lr: float) -> None:
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        c1, c2 = 1 - b1**self.t, np.sqrt(1 - b2**self.t)
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad
            m *= b1
            m += (1 - b1) * g
            g *= g                                  # the gradient buffer is reset below anyway
            v *= b2
            v += (1 - b2) * g
            np.sqrt(v, out=g)
            g /= c2
            g += eps
            np.divide(m, g, out=g)
            g *= lr / c1
            p.value -= g
            g[...] = 0


@dataclass
class EpochLog:
    epoch: int
    loss: float
    train_accuracy: float
    test_accuracy: float


class Trainer:
    """Trains a `Network` on a `DataSplit`; `model()` exports it."""

    def __init__(self, cfg: TrainConfig, data: DataSplit):
        self.cfg, self.data = cfg, data
        self.input_shape = tuple(data.x_train.shape[1:])
        self.net = Network(cfg.arch, self.input_shape, data.classes, cfg.seed, cfg.order,
                           padding=cfg.padding, threads=cfg.threads)
        self.opt = Adam(self.net.params())
        self.epoch = 0
        self.history: list[EpochLog] = []

    def model(self) -> Model:
        return export(self.net, self.input_shape, self.data.Z)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> float:
        """Accuracy through the exported integer model (exact; see refbnn.export)."""
        return float((FastEngine(self.model()).predictions(x) == y).mean())

    def _flips(self, step: int) -> Optional[list[np.ndarray]]:
        if self.cfg.train_ber <= 0:
            return None
        return [np.random.default_rng([self.cfg.seed, self.epoch, step, t]).random(m.w.value.shape, np.float32)
                < self.cfg.train_ber for t, m in enumerate(self.net.weighted)]

    def train_epoch(self, progress: Optional[Callable[[int, int], None]] = None) -> EpochLog:
        cfg, d = self.cfg, self.data
        lr = cfg.lr * 0.5 ** (self.epoch // cfg.lr_halving)
        order = np.random.default_rng([cfg.seed, self.epoch]).permutation(len(d.y_train))
        steps = (len(order) + cfg.batch_size - 1) // cfg.batch_size
        total_loss = correct = 0.0
        for step in range(steps):
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            x = (d.x_train[idx] / d.Z).astype(np.float32)
            scores = self.net.forward(x, train=True, flips=self._flips(step))
            loss, grad = softmax_cross_entropy(scores, d.y_train[idx])
            self.net.backward(grad)
            self.opt.step(lr)
            for m in self.net.weighted:
                np.clip(m.w.value, -1, 1, out=m.w.value)
            total_loss += loss * len(idx)
            correct += int((scores.argmax(axis=1) == d.y_train[idx]).sum())
            if progress is not None:
                progress(step + 1, steps)
        self.epoch += 1
        log = EpochLog(self.epoch, total_loss / len(order), correct / len(order),
                       self.evaluate(d.x_test, d.y_test))
        self.history.append(log)
        return log

    # -- checkpoints ----------------------------------------------------------------------

    def _arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for k, (p, m, v) in enumerate(zip(self.opt.params, self.opt.m, self.opt.v)):
            out[f"param{k}"], out[f"adam_m{k}"], out[f"adam_v{k}"] = p.value, m, v
        bns = [m for m in self.net.modules if hasattr(m, "running_mean")]
        for k, bn in enumerate(bns):
            out[f"bn_mean{k}"], out[f"bn_var{k}"] = bn.running_mean, bn.running_var
        return out

    def save(self, path: str) -> None:
        """Write the checkpoint atomically: arrays plus a JSON `meta` (as bytes, no pickle)."""
        meta = {"config": asdict(self.cfg), "epoch": self.epoch, "adam_t": self.opt.t,
                "dataset": self.data.name, "history": [asdict(h) for h in self.history]}
        arrays = self._arrays()
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        with atomic_open(path, "wb") as f:
            np.savez(f, **arrays)

    def load(self, path: str) -> None:
        """Resume from a checkpoint written by `save` with the same configuration. Every
        array and every field of the meta is checked before anything is changed."""
        mine = self._arrays()
        headers = npz_headers(path, max(v.nbytes for v in mine.values()) + 2**20)
        if "meta" not in headers or headers["meta"].dtype != np.uint8 or len(headers["meta"].shape) != 1:
            raise InputError(f"{path}: meta: missing (not a refbnn checkpoint)")
        for key, value in mine.items():
            h = headers.get(key)
            if h is None or h.shape != value.shape or h.dtype.kind != "f":
                raise InputError(f"{path}: {key}: missing, or not a float array of shape {list(value.shape)}")
        extra = sorted(set(headers) - set(mine) - {"meta"})
        if extra:
            raise InputError(f"{path}: {extra[0][:40]}: unknown array")
        arrays = npz_arrays(path, headers, headers)
        meta = self._check_meta(path, arrays.pop("meta").tobytes())
        for key, value in mine.items():
            if not np.isfinite(arrays[key]).all():
                raise InputError(f"{path}: {key}: holds NaN or infinity")
            value[...] = arrays[key]
        self.epoch, self.opt.t = meta["epoch"], meta["adam_t"]
        self.history = [EpochLog(**h) for h in meta["history"]]

    def _check_meta(self, path: str, raw: bytes) -> dict:
        """The checkpoint's meta, checked field by field against this run."""
        meta = parse_json_bytes(raw, f"{path}: meta")
        if not isinstance(meta, dict) or set(meta) != {"config", "epoch", "adam_t", "dataset", "history"}:
            raise InputError(f"{path}: meta: expected an object with config, epoch, adam_t, dataset, history")
        saved, mine = meta["config"], asdict(self.cfg)
        saved, mine = ({k: v for k, v in c.items() if k != "threads"} if isinstance(c, dict) else c
                       for c in (saved, mine))
        if not isinstance(saved, dict) or set(saved) != set(mine):
            raise InputError(f"{path}: meta.config: expected the fields {', '.join(sorted(mine))}")
        for key in mine:
            if key != "epochs" and saved[key] != mine[key]:
                raise InputError(f"{path}: config.{key}: checkpoint has {_brief(saved[key])}, "
                                 f"this run has {mine[key]!r}")
        if meta["dataset"] != self.data.name:
            raise InputError(f"{path}: dataset: checkpoint has {_brief(meta['dataset'])}, "
                             f"this run {self.data.name!r}")
        for key in ("epoch", "adam_t"):
            v = meta[key]
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 10**9:
                raise InputError(f"{path}: meta.{key}: expected a non-negative integer")
        history = meta["history"]
        fields = {f: t for f, t in EpochLog.__annotations__.items()}
        if not isinstance(history, list) or len(history) != meta["epoch"] or not all(
                isinstance(h, dict) and set(h) == set(fields)
                and all(isinstance(h[f], (int, float)) and not isinstance(h[f], bool) for f in fields)
                for h in history):
            raise InputError(f"{path}: meta.history: expected one record per epoch with "
                             f"{', '.join(fields)}")
        return meta


def _brief(value) -> str:
    """repr of a value read from a file, cut to 40 characters for a one-line message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def train(cfg: TrainConfig, data: DataSplit, checkpoint: Optional[str] = None, resume: bool = False,
          progress: Optional[Callable[[int], ContextManager[Callable[[int, int], None]]]] = None,
          on_epoch: Optional[Callable[[EpochLog], None]] = None,
          on_resume: Optional[Callable[[int], None]] = None) -> Trainer:
    """Train (or resume from `checkpoint`) to cfg.epochs, saving a checkpoint after every
    epoch when one is given. `progress(epoch)` opens the progress callback of an epoch;
    `on_epoch` hears each finished epoch, `on_resume` the epoch a checkpoint ended."""
    trainer = Trainer(cfg, data)
    if resume:
        if not checkpoint or not os.path.exists(checkpoint):
            raise InputError(f"--resume: no checkpoint at {checkpoint!r} (give --checkpoint PATH)")
        trainer.load(checkpoint)
        if on_resume is not None:
            on_resume(trainer.epoch)
    while trainer.epoch < cfg.epochs:
        with progress(trainer.epoch + 1) if progress else nullcontext() as callback:
            log = trainer.train_epoch(callback)
        if on_epoch is not None:
            on_epoch(log)
        if checkpoint:
            trainer.save(checkpoint)
    return trainer
