"""The bit error model (paper section II-C, SPEC section 6) and accuracy under it.

- Symmetric: every targeted stored bit reads flipped with the same probability p.
- Transient: a flip affects one read; the stored model is unchanged afterwards.
- Targets: the weight bits of the chosen weight layers (default: all, first and
  last included) and, optionally, the +-1 activations that feed hidden weight layers.
- Granularity: one flip pattern per batch of `batch_size` inputs. Per input is
  batch_size = 1, per pass is batch_size >= the data set size.

Masks are *keyed*, not streamed: the mask of tensor t in repetition r and batch j
is `numpy.random.default_rng([seed, r, j, t]).random(shape) < p`. Tensors are
numbered **weights first**: t = 0 .. L-1 for the L weight tensors in layer order,
then t = L, L+1, ... for the activation tensors (the inputs of the hidden weight
layers, in layer order; shape [batch size, *input shape of that layer]). So a mask
never depends on which other tensors are targeted, on the engine, on evaluation
order or threads, and any implementation can rebuild it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from math import comb, sqrt
from typing import Iterator, Optional, Sequence

import numpy as np

from .model import Model


@dataclass(frozen=True)
class ErrorModel:
    """What to flip, how often, and how the flip patterns are keyed."""

    p: float
    seed: int = 0
    batch_size: int = 128
    layers: Optional[tuple[int, ...]] = None   # weight layer indices; None = all
    activations: bool = False

    def targets(self, model: Model) -> list[int]:
        return list(model.weight_indices) if self.layers is None else list(self.layers)


def activation_layers(model: Model) -> list[int]:
    """The hidden weight layers, whose +-1 inputs can be targeted."""
    return list(model.weight_indices[1:])


def keyed_mask(seed: int, r: int, j: int, t: int, shape: tuple[int, ...], p: float) -> np.ndarray:
    """SPEC section 6: default_rng([seed, r, j, t]).random(shape) < p."""
    return np.random.default_rng([seed, r, j, t]).random(shape) < p


def pattern(model: Model, em: ErrorModel, r: int, j: int, batch: int) -> tuple[list, dict]:
    """The flip pattern of repetition r, batch j (of `batch` inputs): weight masks (one
    per weight layer, None where untargeted) and activation masks {layer: [batch, ...]}."""
    targets = set(em.targets(model))
    weights = []
    for t, i in enumerate(model.weight_indices):
        shape = model.layers[i].weight.shape
        weights.append(keyed_mask(em.seed, r, j, t, shape, em.p) if i in targets and em.p > 0 else None)
    acts = {}
    if em.activations and em.p > 0:
        n_weights = len(model.weight_indices)
        for k, i in enumerate(activation_layers(model)):
            shape = (em.batch_size,) + model.shapes[i - 1]
            acts[i] = keyed_mask(em.seed, r, j, n_weights + k, shape, em.p)[:batch]
    return weights, acts


def batches(n: int, batch_size: int) -> Iterator[tuple[int, slice]]:
    for j, start in enumerate(range(0, n, batch_size)):
        yield j, slice(start, min(n, start + batch_size))


def correct_under_errors(engine_cls, model: Model, x: np.ndarray, y: np.ndarray, em: ErrorModel,
                         r: int, given: Optional["MaskSet"] = None) -> int:
    """Correct predictions in repetition r: each batch j under its own flip pattern (keyed,
    or taken from a MaskSet)."""
    correct = 0
    for j, sl in batches(len(y), em.batch_size):
        if given is not None:
            weights, acts = given.pattern(r, j, sl.stop - sl.start)
        else:
            weights, acts = pattern(model, em, r, j, sl.stop - sl.start)
        engine = engine_cls(model, weights)
        correct += int((np.asarray(engine.predictions(x[sl], act_masks=acts or None)) == y[sl]).sum())
    return correct


# -- summaries ----------------------------------------------------------------------------

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (standard tables).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the table above, then the Cornish-Fisher expansion (error < 1e-4)."""
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass
class Summary:
    """Accuracy over R repetitions at one BER."""

    ber: str
    accuracies: list[Fraction] = field(default_factory=list)

    def as_dict(self) -> dict:
        from .report import exact

        acc = [float(a) for a in self.accuracies]
        r = len(acc)
        mean = sum(self.accuracies, Fraction(0)) / r
        std = float(np.std(acc, ddof=1)) if r > 1 else 0.0
        half = t_quantile_975(r - 1) * std / sqrt(r) if r > 1 else None
        return {"ber": self.ber, "reps": r, "mean": exact(mean), "std": std,
                "min": exact(min(self.accuracies)), "max": exact(max(self.accuracies)),
                "ci95": None if half is None else [max(0.0, float(mean) - half), min(1.0, float(mean) + half)],
                "accuracies": [exact(a) for a in self.accuracies]}


# -- mask files ---------------------------------------------------------------------------

class MaskSet:
    """Flip patterns read from a masks file (layout in docs/bit-errors.md):
    `batch_size` (int scalar), `w{t}` bool [R, J, *weight shape] per weight tensor t,
    optionally `a{t}` bool [R, J, batch_size, *input shape] for activation tensor t."""

    def __init__(self, arrays: dict[str, np.ndarray], model: Model, name: str):
        from .files import InputError

        def fail(field_: str, msg: str) -> InputError:
            return InputError(f"{name}: {field_}: {msg}")

        if "batch_size" not in arrays:
            raise fail("batch_size", "missing")
        bs = arrays["batch_size"]
        if bs.shape != () or bs.dtype.kind not in "iu" or int(bs) < 1:
            raise fail("batch_size", "expected a positive integer scalar")
        self.batch_size = int(bs)
        n_w = len(model.weight_indices)
        hidden = activation_layers(model)
        allowed = {f"w{t}" for t in range(n_w)} | {f"a{n_w + k}" for k in range(len(hidden))} | {"batch_size"}
        unknown = sorted(set(arrays) - allowed)
        if unknown:
            raise fail(unknown[0], f"unknown array (this model has w0..w{n_w - 1}"
                                   f"{f' and a{n_w}..a{n_w + len(hidden) - 1}' if hidden else ''})")
        self.weights: dict[int, np.ndarray] = {}
        self.acts: dict[int, np.ndarray] = {}
        rj = None
        for key, arr in sorted(arrays.items()):
            if key == "batch_size":
                continue
            if arr.dtype != np.bool_:
                raise fail(key, f"expected dtype bool, got {arr.dtype}")
            t = int(key[1:])
            if key[0] == "w":
                want = model.layers[model.weight_indices[t]].weight.shape
            else:
                want = (self.batch_size,) + model.shapes[hidden[t - n_w] - 1]
            if arr.ndim != 2 + len(want) or tuple(arr.shape[2:]) != tuple(want):
                raise fail(key, f"shape {list(arr.shape)}, expected [R, J, {', '.join(map(str, want))}]")
            if rj is not None and arr.shape[:2] != rj:
                raise fail(key, f"R, J = {list(arr.shape[:2])} differ from the other arrays' {list(rj)}")
            rj = arr.shape[:2]
            (self.weights if key[0] == "w" else self.acts)[t] = arr
        if rj is None:
            raise fail("w0", "the file holds no masks")
        self.reps, self.n_batches = rj
        self.model = model

    def pattern(self, r: int, j: int, batch: int) -> tuple[list, dict]:
        n_w = len(self.model.weight_indices)
        weights = [self.weights[t][r, j] if t in self.weights else None for t in range(n_w)]
        hidden = activation_layers(self.model)
        acts = {hidden[t - n_w]: a[r, j, :batch] for t, a in self.acts.items()}
        return weights, acts


def read_masks(path: str, model: Model) -> MaskSet:
    """Read and validate a masks file against `model` (no pickle)."""
    import zipfile

    from .files import InputError

    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: cannot read as .npz ({e})") from None
    return MaskSet(arrays, model, path)


def write_masks(path: str, model: Model, em: ErrorModel, reps: int, n_inputs: int) -> None:
    """Write the keyed masks of `reps` repetitions over `n_inputs` inputs (atomically)."""
    from .files import atomic_open

    n_batches = (n_inputs + em.batch_size - 1) // em.batch_size
    arrays: dict[str, np.ndarray] = {"batch_size": np.array(em.batch_size)}
    n_w = len(model.weight_indices)
    targets = set(em.targets(model))
    for t, i in enumerate(model.weight_indices):
        if i in targets:
            arrays[f"w{t}"] = np.stack([np.stack([keyed_mask(em.seed, r, j, t, model.layers[i].weight.shape, em.p)
                                                  for j in range(n_batches)]) for r in range(reps)])
    if em.activations:
        for k, i in enumerate(activation_layers(model)):
            shape = (em.batch_size,) + model.shapes[i - 1]
            arrays[f"a{n_w + k}"] = np.stack([np.stack([keyed_mask(em.seed, r, j, n_w + k, shape, em.p)
                                                        for j in range(n_batches)]) for r in range(reps)])
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


# -- exact flip probability of one hidden neuron ------------------------------------------

def neuron_flip_probability(agree: int, disagree: int, m: int, p: Fraction) -> Fraction:
    """P(a hidden neuron's output flips) when each of its weights flips independently with
    probability p, exactly.

    With g = 2(h - s) - 1 and m = |g|, `agree` summands w_j x_j equal sign(g) and
    `disagree` do not. Flipping X of the agreeing and Y of the disagreeing summands moves
    g by -4 sign(g) (X - Y), so the output flips iff X - Y >= f = (m - 1) // 4 + 1, with
    X ~ Bin(agree, p) and Y ~ Bin(disagree, p) independent:
        P = sum_{x - y >= f} C(a, x) p^x (1-p)^(a-x) * C(d, y) p^y (1-p)^(d-y)."""
    p = Fraction(p)
    q = 1 - p
    f = (m - 1) // 4 + 1
    px = [comb(agree, x) * p**x * q**(agree - x) for x in range(agree + 1)]
    py = [comb(disagree, y) * p**y * q**(disagree - y) for y in range(disagree + 1)]
    return sum((px[x] * py[y] for x in range(agree + 1) for y in range(disagree + 1) if x - y >= f),
               Fraction(0))


def _binom_pmf(n: int, p: float) -> np.ndarray:
    """Binomial(n, p) probabilities in float64, via log-gamma (stable for n in the thousands)."""
    from math import lgamma, log

    k = np.arange(n + 1)
    if p <= 0:
        return (k == 0).astype(float)
    if p >= 1:
        return (k == n).astype(float)
    lg = np.array([lgamma(n + 1) - lgamma(i + 1) - lgamma(n - i + 1) for i in k])
    return np.exp(lg + k * log(p) + (n - k) * log(1 - p))


def flip_probability_float(agree: int, disagree: int, m: int, p: float) -> float:
    """`neuron_flip_probability` evaluated in float64: sum_y P(Y = y) P(X >= f + y)."""
    f = (m - 1) // 4 + 1
    px = _binom_pmf(agree, p)
    tail = np.concatenate([np.cumsum(px[::-1])[::-1], [0.0]])   # tail[k] = P(X >= k)
    py = _binom_pmf(disagree, p)
    idx = np.minimum(f + np.arange(disagree + 1), agree + 1)
    return float((py * tail[np.maximum(idx, 0)]).sum())


def layer_flip_probabilities(engine, x: np.ndarray, ps: Sequence[float]) -> dict[int, list[float]]:
    """Mean output flip probability of each hidden threshold layer (neurons directly after
    a weight layer, not the first one) over inputs, neurons and positions, per p.
    Computed from the closed form, grouped by the distinct (agree, disagree, m)."""
    from .ops import im2col
    from .model import Conv2d

    model = engine.model
    out: dict[int, list[float]] = {}
    for nl in model.neuron_layers:
        if nl.first or nl.weight_index != nl.threshold_index - 1:
            continue     # first layer (integer inputs) and pooled h: not a binomial difference
        counts: dict[tuple[int, int, int], int] = {}
        for sl in engine._batches(len(x)):
            outs = engine.outputs(x[sl])
            layer = model.layers[nl.weight_index]
            inp = outs[nl.weight_index - 1]
            h = outs[nl.weight_index]
            s, _ = engine._thr[nl.threshold_index]
            if isinstance(layer, Conv2d):   # real (non-padded) taps at each position
                real = im2col(np.ones_like(inp[:1], dtype=np.int64), layer.weight.shape[-1], layer.padding)
                k_real = np.broadcast_to(real.sum(axis=-1)[0][None, None], h.shape)
            else:
                k_real = np.full(h.shape, inp.shape[1], dtype=np.int64)
            hv = h.astype(np.int64)
            g = 2 * (hv - s.reshape((1, -1) + (1,) * (h.ndim - 2)).astype(np.int64)) - 1
            # K summands of +-1 add up to h, so (K + h) / 2 of them are +1
            plus = (k_real + hv) // 2
            agree = np.where(g > 0, plus, k_real - plus)
            key = np.stack([agree.ravel(), (k_real - agree).ravel(), np.abs(g).ravel()], axis=1)
            uniq, cnt = np.unique(key, axis=0, return_counts=True)
            for (a, d, m), c in zip(uniq.tolist(), cnt.tolist()):
                counts[(a, d, m)] = counts.get((a, d, m), 0) + c
        total = sum(counts.values())
        out[nl.threshold_index] = [sum(c * flip_probability_float(a, d, m, p) for (a, d, m), c in counts.items()) / total
                                   for p in ps]
    return out
