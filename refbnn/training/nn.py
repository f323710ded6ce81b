"""The float BNN for training (docs/semantics.md §8), with hand-written backward passes.

Binarisation as in the authors' code: +1 iff the value is > 0, else -1, for
weights and activations, with a straight-through estimator. The activation is
hardtanh followed by sign, so its gradient is passed where |z| <= 1. Inputs are
fed as x / Z. The output layer's scores are multiplied by a learnable positive
scale exp(theta) before the softmax cross-entropy; the scale does not change the
prediction and is not exported.

Every module has `forward(x, train)` and `backward(grad)`; parameters are
`Param`s (value and gradient). Bit flip training passes a mask per weight layer
to `forward`; the backward pass treats the flip as identity.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..engines.ops import im2col, maxpool


@dataclass
class Param:
    value: np.ndarray
    grad: np.ndarray = field(default=None)

    def __post_init__(self):
        self.grad = np.zeros_like(self.value)


def binarize(w: np.ndarray) -> np.ndarray:
    """+1 iff w > 0, else -1 (sign(0) = -1), in w's dtype."""
    out = np.empty_like(w)
    np.greater(w, 0, out=out)          # 1.0 or 0.0 (np.where is ten times slower here)
    out *= 2
    out -= 1
    return out


class BinaryLinear:
    """y = x @ sign(W).T, W latent in [-1, 1]."""

    def __init__(self, n_out: int, n_in: int, rng: np.random.Generator, dtype=np.float32):
        bound = 1 / np.sqrt(n_in)
        self.w = Param(rng.uniform(-bound, bound, (n_out, n_in)).astype(dtype))

    def params(self) -> list[Param]:
        return [self.w]

    def signs(self, flip: Optional[np.ndarray]) -> np.ndarray:
        wb = binarize(self.w.value)
        if flip is not None:
            np.negative(wb, out=wb, where=flip)
        return wb

    def forward(self, x: np.ndarray, train: bool, flip: Optional[np.ndarray] = None) -> np.ndarray:
        self.x, self.wb = x, self.signs(flip)
        return x @ self.wb.T

    def backward(self, dy: np.ndarray) -> np.ndarray:
        # straight-through: d sign(W) / dW = 1 where |W| <= 1, which is everywhere because
        # the trainer clips the latent weights to [-1, 1] after every step
        self.w.grad += dy.T @ self.x
        return dy @ self.wb


class BinaryConv2d(BinaryLinear):
    """3x3 (or k x k) convolution with sign(W), stride 1, zero padding."""

    def __init__(self, n_out: int, n_in: int, k: int, padding: int, rng: np.random.Generator,
                 dtype=np.float32):
        bound = 1 / np.sqrt(n_in * k * k)
        self.w = Param(rng.uniform(-bound, bound, (n_out, n_in, k, k)).astype(dtype))
        self.k, self.padding = k, padding

    def forward(self, x: np.ndarray, train: bool, flip: Optional[np.ndarray] = None) -> np.ndarray:
        self.x_shape = x.shape
        self.wb = self.signs(flip).reshape(len(self.w.value), -1)
        self.cols = im2col(x, self.k, self.padding)                    # B Ho Wo F
        b, ho, wo, f = self.cols.shape
        return (self.cols.reshape(-1, f) @ self.wb.T).reshape(b, ho, wo, -1).transpose(0, 3, 1, 2)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        b, n, ho, wo = dy.shape
        dyt = dy.transpose(0, 2, 3, 1).reshape(-1, n)
        f = self.cols.shape[-1]
        dw = (dyt.T @ self.cols.reshape(-1, f)).reshape(self.w.value.shape)
        self.w.grad += dw            # straight-through, as in BinaryLinear.backward
        dcols = (dyt @ self.wb).reshape(b, ho, wo, -1, self.k, self.k)
        _, c, h, w = self.x_shape
        p = self.padding
        dx = np.zeros((b, c, h + 2 * p, w + 2 * p), dtype=dy.dtype)
        for r in range(self.k):            # col2im: every tap adds back to its input pixel
            for s in range(self.k):
                dx[:, :, r:r + ho, s:s + wo] += dcols[:, :, :, :, r, s].transpose(0, 3, 1, 2)
        return dx[:, :, p:p + h, p:p + w]


class BatchNorm:
    """Batch norm over the channel axis 1: batch statistics in training, running ones
    (momentum 0.1, unbiased variance, as PyTorch) in evaluation."""

    def __init__(self, channels: int, dtype=np.float32, eps: float = 1e-5, momentum: float = 0.1):
        self.gamma = Param(np.ones(channels, dtype))
        self.beta = Param(np.zeros(channels, dtype))
        self.running_mean = np.zeros(channels, np.float64)
        self.running_var = np.ones(channels, np.float64)
        self.eps, self.momentum = eps, momentum

    def params(self) -> list[Param]:
        return [self.gamma, self.beta]

    def _shape(self, x):
        return (1, -1) + (1,) * (x.ndim - 2)

    def forward(self, x: np.ndarray, train: bool, flip=None) -> np.ndarray:
        axes = (0,) + tuple(range(2, x.ndim))
        shape = self._shape(x)
        if train:
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
            n = x.size // x.shape[1]
            self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * mean
            self.running_var = (1 - self.momentum) * self.running_var + self.momentum * var * n / max(n - 1, 1)
        else:
            mean, var = self.running_mean.astype(x.dtype), self.running_var.astype(x.dtype)
        self.inv_std = (1 / np.sqrt(var + self.eps)).astype(x.dtype).reshape(shape)
        self.xhat = (x - mean.reshape(shape)) * self.inv_std
        self.axes = axes
        return self.gamma.value.reshape(shape) * self.xhat + self.beta.value.reshape(shape)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        shape, axes = self._shape(dy), self.axes
        n = dy.size // dy.shape[1]
        self.gamma.grad += (dy * self.xhat).sum(axis=axes)
        self.beta.grad += dy.sum(axis=axes)
        dxhat = dy * self.gamma.value.reshape(shape)
        return self.inv_std / n * (n * dxhat - dxhat.sum(axis=axes).reshape(shape)
                                   - self.xhat * (dxhat * self.xhat).sum(axis=axes).reshape(shape))


class SignActivation:
    """hardtanh then sign: +1 iff z > 0; the gradient passes where |z| <= 1."""

    def params(self) -> list[Param]:
        return []

    def forward(self, z: np.ndarray, train: bool, flip=None) -> np.ndarray:
        self.pass_ = np.abs(z) <= 1
        return np.where(z > 0, 1, -1).astype(z.dtype)

    def backward(self, da: np.ndarray) -> np.ndarray:
        return da * self.pass_


class MaxPool:
    """2x2, stride 2, floor; the gradient goes to the (first) maximum of each window."""

    def params(self) -> list[Param]:
        return []

    def forward(self, x: np.ndarray, train: bool, flip=None) -> np.ndarray:
        b, c, h, w = x.shape
        self.x_shape = x.shape
        win = x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(b, c, h // 2, 2, w // 2, 2)
        win = win.transpose(0, 1, 2, 4, 3, 5).reshape(b, c, h // 2, w // 2, 4)
        self.arg = win.argmax(axis=-1)
        return maxpool(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        b, c, h, w = self.x_shape
        onehot = (np.arange(4) == self.arg[..., None]) * dy[..., None]          # b c h2 w2 4
        dx = np.zeros(self.x_shape, dtype=dy.dtype)
        block = onehot.reshape(b, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5)
        dx[:, :, :h // 2 * 2, :w // 2 * 2] = block.reshape(b, c, h // 2 * 2, w // 2 * 2)
        return dx


class Flatten:
    def params(self) -> list[Param]:
        return []

    def forward(self, x: np.ndarray, train: bool, flip=None) -> np.ndarray:
        self.x_shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy.reshape(self.x_shape)


class ScaledOutput(BinaryLinear):
    """The output layer: scores = exp(theta) * (x @ sign(W).T)."""

    def __init__(self, n_out: int, n_in: int, rng: np.random.Generator, dtype=np.float32):
        super().__init__(n_out, n_in, rng, dtype)
        self.theta = Param(np.array([-0.5 * np.log(n_in)], dtype))

    def params(self) -> list[Param]:
        return [self.w, self.theta]

    def forward(self, x: np.ndarray, train: bool, flip: Optional[np.ndarray] = None) -> np.ndarray:
        self.raw = super().forward(x, train, flip)
        self.scale = np.exp(self.theta.value)
        return self.raw * self.scale

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.theta.grad += (dy * self.raw).sum() * self.scale
        return super().backward(dy * self.scale)


def softmax_cross_entropy(scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and its gradient with respect to the scores."""
    z = scores - scores.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -logp[np.arange(len(y)), y].mean()
    grad = np.exp(logp)
    grad[np.arange(len(y)), y] -= 1
    return float(loss), grad / len(y)
