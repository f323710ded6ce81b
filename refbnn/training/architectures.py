"""Architecture specs and the float network they build.

    fc:W1,W2,...            Flatten -> [BinaryLinear(W) -> BN -> sign]* -> output
    cnn:C1,mp,C2,mp;F1,...  [conv 3x3 pad 1 (-> maxpool) -> BN -> sign]* -> Flatten
                            -> [BinaryLinear(F) -> BN -> sign]* -> output

`mp` after a conv width pools that block. Convolutions are 3x3 with padding 1
(default) or 0. The block order is the authors'
conv -> pool -> BN -> sign by default (`order="pool-threshold"`); with
`order="threshold-pool"` it is conv -> BN -> sign -> pool.

Presets: the paper's Table II (`fashion-fc`, `fashion-cnn`, `cifar10-cnn`) and the
small Table III families (`fc-8` ... `fc-128` for FC N,N and `cnn-8` ... `cnn-64`
for CNN N,N,2N).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..formats.files import InputError
from .nn import BatchNorm, BinaryConv2d, BinaryLinear, Flatten, MaxPool, ScaledOutput, SignActivation

PRESETS = {
    "fashion-fc": "fc:2048,2048",
    "fashion-cnn": "cnn:64,mp,64,mp;2048",
    "cifar10-cnn": "cnn:128,128,mp,256,256,mp,256,256,mp;2048",
    **{f"fc-{n}": f"fc:{n},{n}" for n in (8, 16, 32, 64, 128)},
    **{f"cnn-{n}": f"cnn:{n},mp,{n},mp;{2 * n}" for n in (8, 16, 32, 64)},
}
ORDERS = ("pool-threshold", "threshold-pool")


MAX_WEIGHTS = 2**26


def parse_arch(spec: str) -> tuple[list, list[int]]:
    """-> (conv tokens: ints and "mp", fc widths). Raises InputError naming --arch."""
    spec = PRESETS.get(spec, spec)
    kind, _, body = spec.partition(":")

    def tokens(text: str) -> list[str]:
        parts = [t.strip() for t in text.split(",")] if text.strip() else []
        if "" in parts:
            raise InputError(f"--arch: an empty entry in {spec[:60]!r} (two commas, or a comma at an end)")
        return parts

    def widths(text: str) -> list[int]:
        out = []
        for t in tokens(text):
            if not (t.isascii() and t.isdigit()) or not 1 <= int(t) <= 65536:
                raise InputError(f"--arch: {t[:20]!r} is not a width in 1..65536 in {spec[:60]!r}")
            out.append(int(t))
        return out

    if kind == "fc":
        if not widths(body):
            raise InputError(f"--arch: {spec!r} has no hidden layer, so the network has no neurons "
                             "(give at least one width, e.g. fc:64,64)")
        return [], widths(body)
    if kind == "cnn":
        conv_text, _, fc_text = body.partition(";")
        convs = []
        for t in tokens(conv_text):
            if t == "mp":
                if not convs or convs[-1] == "mp":
                    raise InputError(f"--arch: 'mp' must follow a conv width in {spec!r}")
                convs.append("mp")
            else:
                convs += widths(t)
        if not any(isinstance(t, int) for t in convs):
            raise InputError(f"--arch: {spec!r} has no conv layer")
        return convs, widths(fc_text)
    raise InputError(f"--arch: unknown {spec!r} (fc:W,..., cnn:C,mp,...;F,..., or a preset: "
                     f"{', '.join(PRESETS)})")


class Network:
    """A list of float modules mirroring the exported model layer for layer, plus the
    bookkeeping export needs: which modules carry weight bits."""

    def __init__(self, arch: str, input_shape: tuple[int, ...], classes: int, seed: int,
                 order: str = "pool-threshold", dtype=np.float32, padding: int = 1, threads: int = 1):
        if order not in ORDERS:
            raise InputError(f"--order: {order!r} is not one of {', '.join(ORDERS)}")
        rng = np.random.default_rng(seed)
        convs, fcs = parse_arch(arch)
        self.weights = 0
        self.arch, self.order = arch, order
        self.modules: list = []
        c, h, w = input_shape
        for k, token in enumerate(convs):
            if token == "mp":
                continue
            pooled = k + 1 < len(convs) and convs[k + 1] == "mp"
            h, w = h + 2 * padding - 2, w + 2 * padding - 2
            if min(h, w) < (2 if pooled else 1):
                raise InputError(f"--arch: {arch!r} shrinks the input below 1x1 (padding {padding})")
            self._count(arch, token * c * 9)
            self.modules.append(BinaryConv2d(token, c, 3, padding, rng, dtype))
            block = [BatchNorm(token, dtype), SignActivation()]
            if pooled:
                block = [MaxPool()] + block if order == "pool-threshold" else block + [MaxPool()]
                h, w = h // 2, w // 2
            self.modules += block
            c = token
        self.modules.append(Flatten())
        n = c * h * w
        for width in fcs:
            self._count(arch, width * n)
            self.modules += [BinaryLinear(width, n, rng, dtype), BatchNorm(width, dtype), SignActivation()]
            n = width
        self._count(arch, classes * n)
        self.modules.append(ScaledOutput(classes, n, rng, dtype))
        for m in self.modules:
            m.threads = threads                      # the same results on any number (over_batch)
        self.weighted = [m for m in self.modules if isinstance(m, BinaryLinear)]
        self.weighted[0].input_grad = False          # nothing learns from the data's gradient

    def _count(self, arch: str, weights: int) -> None:
        """Refuse, before allocating, a network past MAX_WEIGHTS (about 1 GiB of training state:
        latent weights, gradients and Adam's two moments, in float32)."""
        self.weights += weights
        if self.weights > MAX_WEIGHTS:
            raise InputError(f"--arch: {arch[:60]!r} has more than {MAX_WEIGHTS} weights "
                             f"(the trainer's limit, about 1 GiB of training state)")

    def params(self):
        return [p for m in self.modules for p in m.params()]

    def forward(self, x: np.ndarray, train: bool, flips: Optional[list] = None) -> np.ndarray:
        """x: the network input already divided by Z; flips: one mask per weighted module."""
        k = 0
        for m in self.modules:
            if isinstance(m, BinaryLinear):
                x = m.forward(x, train, flips[k] if flips is not None else None)
                k += 1
            else:
                x = m.forward(x, train)
        return x

    def backward(self, grad: np.ndarray) -> None:
        for m in reversed(self.modules):
            grad = m.backward(grad)
            if grad is None:                         # the first weight layer: done
                return
