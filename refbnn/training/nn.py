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
from typing import Callable, Optional

import numpy as np

from ..engines.ops import field_shape, gather_fields
from . import pieces

class Module:
    """What every layer of the float network shares: the threads its element-wise pieces run
    on (`pieces.over_batch`), set by the Network from TrainConfig.threads. One by default: on 2
    cores, threads made the CNN steps slower (they queue for the interpreter lock between
    short NumPy calls, and BLAS already runs the products on every core)."""
    threads: int = 1


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


class BinaryLinear(Module):
    """y = x @ sign(W).T, W latent in [-1, 1]. With `input_grad` False (the first weight
    layer, whose input is data) the backward pass computes the weight gradient only."""

    input_grad = True

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
        return dy @ self.wb if self.input_grad else None


WIDE = 64    # input channels from which receptive fields are gathered channels last (the
             # trainer keeps the fields of the whole batch for the backward pass, so its
             # switch-over is measured apart from the engine's, refbnn.engines.ops.WIDE)


def _fields(x: np.ndarray, k: int, p: int, owner: object):
    """Receptive fields of x [B, C, H, W] (padding p) in `owner`'s buffers, gathered by
    refbnn.engines.ops.gather_fields (channels last from WIDE channels on). Returns
    (gather(slice of inputs), the fields as a matrix [B*Ho*Wo, k*k*C], the fields of a slice
    of inputs as such a matrix)."""
    b, c, h, w = x.shape
    ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
    last = c >= WIDE
    pad_shape, col_shape = field_shape(x.shape, k, p, last)
    padded = pieces.buffer(owner, f"padded {last}", pad_shape, x.dtype, zeros=True)
    cols = pieces.buffer(owner, f"fields {last}", col_shape, x.dtype)
    if last:
        def gather(sl: slice) -> None:
            gather_fields(x[sl], k, p, padded[sl], cols[sl], True)

        matrix = cols.reshape(b * ho * wo, -1)
        return gather, matrix, lambda sl: matrix[sl.start * ho * wo:sl.stop * ho * wo]

    def gather_by_tap(sl: slice) -> None:
        gather_fields(x[sl], k, p, padded[:, sl], cols[:, :, :, sl], False)

    by_input = cols.reshape(k * k * c, b, ho * wo)
    return gather_by_tap, cols.reshape(k * k * c, -1).T, lambda sl: by_input[:, sl].reshape(len(by_input), -1).T


class BinaryConv2d(BinaryLinear):
    """3x3 (or k x k) convolution with sign(W), stride 1, zero padding.

    The receptive fields are gathered tap by tap as columns [k, k, C, B, Ho, Wo] (few
    channels) or channels last as [B, Ho, Wo, k, k, C] (WIDE channels or more), and
    multiplied with sign(W) reordered to [N, k, k, C]; the output is channels-last in
    memory. The input gradient takes one product per tap and adds the taps in row-major
    order. Every sum has the same terms as in the textbook [C, k, k] order
    (tests/test_nn.py checks forward and both gradients against the definition, bit for
    bit where the sums are exact). Hidden layers read +-1, so their outputs are exact
    integers either way; the float32 gradients may round differently in the last bit,
    because BLAS adds the terms in another order (docs/training.md, "Speed").
    """

    def __init__(self, n_out: int, n_in: int, k: int, padding: int, rng: np.random.Generator,
                 dtype=np.float32):
        bound = 1 / np.sqrt(n_in * k * k)
        self.w = Param(rng.uniform(-bound, bound, (n_out, n_in, k, k)).astype(dtype))
        self.k, self.padding = k, padding

    def forward(self, x: np.ndarray, train: bool, flip: Optional[np.ndarray] = None) -> np.ndarray:
        b, c, h, w = self.x_shape = x.shape
        k, p = self.k, self.padding
        ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
        self.wk = np.ascontiguousarray(self.signs(flip).transpose(0, 2, 3, 1)).reshape(len(self.w.value), -1)
        gather, self.cols, piece = _fields(x, k, p, self)
        out = pieces.buffer(self, "out", (b, ho, wo, len(self.wk)), x.dtype)
        if not self.input_grad:      # the first layer reads data: one product, as always
            pieces.over_batch(gather, b, self.cols.nbytes // b, self.threads)
            np.matmul(self.cols, self.wk.T, out=out.reshape(-1, len(self.wk)))
            return out.transpose(0, 3, 1, 2)

        def gather_and_multiply(sl: slice) -> None:
            gather(sl)
            # the product while the piece's fields are in the cache: a hidden layer reads
            # +-1, so its sums are exact integers, the same in any blocking (float sums
            # are not: BLAS may add them in another order for another number of rows)
            np.matmul(piece(sl), self.wk.T, out=out[sl].reshape(-1, len(self.wk)))

        pieces.over_batch(gather_and_multiply, b, self.cols.nbytes // b, self.threads)
        return out.transpose(0, 3, 1, 2)

    def backward(self, dy: np.ndarray) -> Optional[np.ndarray]:
        b, n, ho, wo = dy.shape
        dyt = dy.transpose(0, 2, 3, 1).reshape(-1, n)    # no copy when dy is channels-last in memory
        dw = (dyt.T @ self.cols).reshape(n, self.k, self.k, -1)
        self.w.grad += dw.transpose(0, 3, 1, 2)      # straight-through, as in BinaryLinear.backward
        if not self.input_grad:
            return None
        _, c, h, w = self.x_shape
        k, p = self.k, self.padding
        taps = self.wk.reshape(n, k, k, c)
        # col2im with one product per tap, added into dx before the next (each entry of dx
        # gets its taps in row-major order); a product is contiguous, so the additions run
        # over whole channel rows
        prod = pieces.buffer(self, "tap product", (b, ho, wo, c), dy.dtype)
        dx = pieces.buffer(self, "dx", (b, h + 2 * p, w + 2 * p, c), dy.dtype)
        dx.fill(0)
        for r in range(k):
            for s in range(k):
                np.matmul(dyt, taps[:, r, s, :], out=prod.reshape(-1, c))
                dx[:, r:r + ho, s:s + wo, :] += prod
        return dx[:, p:p + h, p:p + w, :].transpose(0, 3, 1, 2)


def elementwise_views(*arrays: np.ndarray) -> tuple[tuple[np.ndarray, ...], Callable[[np.ndarray], np.ndarray]]:
    """Views of same-shaped arrays for element-wise work with per-channel vectors (axis 1),
    and how to shape such a vector for them. Maps [B, C, H, W] that are all channels-last
    in memory are viewed as rows [B, H*W*C] and a vector is tiled H*W times along the row:
    NumPy then runs one long loop per input instead of one loop of C numbers per position
    (two to three times faster), and every entry meets the same number as before.
    Otherwise the arrays themselves, and the vector shaped to broadcast over axis 1."""
    a = arrays[0]
    if a.ndim == 4 and all(x.transpose(0, 2, 3, 1).flags.c_contiguous for x in arrays):
        positions = a.shape[2] * a.shape[3]
        rows = tuple(x.transpose(0, 2, 3, 1).reshape(len(x), -1) for x in arrays)
        return rows, lambda v: np.tile(np.ravel(v), positions)
    shape = (1, -1) + (1,) * (a.ndim - 2)
    return arrays, lambda v: np.reshape(v, shape)


class BatchNorm(Module):
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

    @staticmethod
    def channel_sum(a: np.ndarray, b: Optional[np.ndarray] = None) -> np.ndarray:
        """Per channel, the sum of a (or of a * b) over the batch and positions. Dense
        layers use NumPy's sums; for maps, channel rows [B*H*W, C] (views of the
        channels-last memory) are summed by BLAS, several times faster."""
        if a.ndim == 2:
            return (a if b is None else a * b).sum(axis=0)
        rows = a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])
        if b is None:
            return np.ones(len(rows), a.dtype) @ rows
        return np.einsum("mc,mc->c", rows, b.transpose(0, 2, 3, 1).reshape(-1, a.shape[1]))

    def forward(self, x: np.ndarray, train: bool, flip=None) -> np.ndarray:
        shape = self._shape(x)
        n = x.size // x.shape[1]
        self.xhat, y = pieces.buffer_like(self, "xhat", x), pieces.buffer_like(self, "y", x)   # x's memory layout
        if not train:
            mean, var = self.running_mean.astype(x.dtype), self.running_var.astype(x.dtype)
        elif x.ndim == 2:
            mean, var = x.mean(axis=0), x.var(axis=0)
        else:
            mean = self.channel_sum(x) / n
        (xv, xhat, yv), per_channel = elementwise_views(x, self.xhat, y)
        mean_v = per_channel(mean)
        pieces.over_batch(lambda sl: np.subtract(xv[sl], mean_v, out=xhat[sl]), len(x), x[0].nbytes, self.threads)
        if train:
            if x.ndim > 2:
                var = self.channel_sum(self.xhat, self.xhat) / n
            self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * mean.ravel()
            self.running_var = (1 - self.momentum) * self.running_var + self.momentum * var * n / max(n - 1, 1)
        self.inv_std = (1 / np.sqrt(var + self.eps)).astype(x.dtype).reshape(shape)
        inv_std, gamma, beta = (per_channel(v) for v in (self.inv_std, self.gamma.value, self.beta.value))

        def normalise(sl: slice) -> None:
            xh = xhat[sl]
            xh *= inv_std
            np.multiply(gamma, xh, out=yv[sl])
            yv[sl] += beta

        pieces.over_batch(normalise, len(x), x[0].nbytes, self.threads)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dx = inv_std / n * (n dxhat - sum(dxhat) - xhat sum(dxhat xhat)), dxhat = gamma dy.
        For maps, gamma comes out of the sums (they are the parameter gradients), which
        leaves one element-wise pass; dense layers keep NumPy's order of operations."""
        shape = self._shape(dy)
        n = dy.size // dy.shape[1]
        sum_dy_xhat, sum_dy = self.channel_sum(dy, self.xhat), self.channel_sum(dy)
        self.gamma.grad += sum_dy_xhat
        self.beta.grad += sum_dy
        gamma = self.gamma.value.reshape(shape)
        if dy.ndim == 2:
            dxhat = dy * gamma
            sum_dxhat = self.channel_sum(dxhat).reshape(shape)
            sum_dxhat_xhat = self.channel_sum(dxhat, self.xhat).reshape(shape)
            scale = self.inv_std / n
        else:
            dxhat = pieces.buffer_like(self, "dxhat", dy)
            sum_dxhat, sum_dxhat_xhat = sum_dy.reshape(shape), sum_dy_xhat.reshape(shape)
            scale = gamma * self.inv_std / n
        (dyv, dxv, xhat), per_channel = elementwise_views(dy, dxhat, self.xhat)
        sum_dxhat, sum_dxhat_xhat, scale = (per_channel(v) for v in (sum_dxhat, sum_dxhat_xhat, scale))

        def gradient(sl: slice) -> None:
            d = dxv[sl]
            if dy.ndim > 2:
                np.copyto(d, dyv[sl])
            d *= n
            d -= sum_dxhat
            d -= xhat[sl] * sum_dxhat_xhat
            d *= scale

        pieces.over_batch(gradient, len(dy), dy[0].nbytes, self.threads)
        return dxhat


class SignActivation(Module):
    """hardtanh then sign: +1 iff z > 0; the gradient passes where |z| <= 1."""

    def params(self) -> list[Param]:
        return []

    def forward(self, z: np.ndarray, train: bool, flip=None) -> np.ndarray:
        self.pass_, out = pieces.buffer_like(self, "pass", z, bool), pieces.buffer_like(self, "out", z)   # z's memory layout

        def sign(sl: slice) -> None:
            np.less_equal(np.abs(z[sl]), 1, out=self.pass_[sl])
            o = out[sl]
            np.greater(z[sl], 0, out=o)      # as binarize: 1.0 or 0.0, then +-1
            o *= 2
            o -= 1

        pieces.over_batch(sign, len(z), z[0].nbytes, self.threads)
        return out

    def backward(self, da: np.ndarray) -> np.ndarray:
        return np.multiply(da, self.pass_, out=pieces.buffer_like(self, "grad", da))


class MaxPool(Module):
    """2x2, stride 2, floor; the gradient goes to the first maximum of each window in
    row-major order (top left, top right, bottom left, bottom right).

    Computed on the channels-last memory the convolution leaves (x.transpose(0, 2, 3, 1)
    is then contiguous), so every strided quarter has whole channel rows innermost."""

    QUARTERS = ((0, 0), (0, 1), (1, 0), (1, 1))

    def params(self) -> list[Param]:
        return []

    def forward(self, x: np.ndarray, train: bool, flip=None) -> np.ndarray:
        self.x_shape = b, c, h, w = x.shape
        xt = x.transpose(0, 2, 3, 1)
        h, w = h // 2 * 2, w // 2 * 2
        out = pieces.buffer(self, "out", (b, h // 2, w // 2, c), x.dtype)
        # which quarter holds the first maximum: the top pair's left one unless the right one
        # is larger, likewise the bottom pair, and the top pair unless the bottom one is larger
        self.left_top, self.left_bottom, self.top = (pieces.buffer(self, name, out.shape, bool)
                                                     for name in ("left top", "left bottom", "top"))

        def pool(sl: slice) -> None:
            q = [xt[sl, r:h:2, s:w:2, :] for r, s in self.QUARTERS]
            o = out[sl]
            top, bottom = np.maximum(q[0], q[1]), np.maximum(q[2], q[3])
            np.maximum(top, bottom, out=o)
            if train:
                np.greater_equal(q[0], q[1], out=self.left_top[sl])
                np.greater_equal(q[2], q[3], out=self.left_bottom[sl])
                np.greater_equal(top, bottom, out=self.top[sl])

        pieces.over_batch(pool, b, x[0].nbytes, self.threads)
        return out.transpose(0, 3, 1, 2)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        b, c, h, w = self.x_shape
        # channels-last, as the convolution reads it; the quarters below write every entry
        # but a floor-cut last row or column, which stays zero
        dx = pieces.buffer(self, "dx", (b, h, w, c), dy.dtype, zeros=True)
        dyt = dy.transpose(0, 2, 3, 1)
        h, w = h // 2 * 2, w // 2 * 2

        def route(sl: slice) -> None:
            top, left_top, left_bottom = self.top[sl], self.left_top[sl], self.left_bottom[sl]
            bottom = ~top
            firsts = (top & left_top, top & ~left_top, bottom & left_bottom, bottom & ~left_bottom)
            for (r, s), first in zip(self.QUARTERS, firsts):
                np.multiply(dyt[sl], first, out=dx[sl, r:h:2, s:w:2, :])   # dy there, 0 elsewhere

        pieces.over_batch(route, b, dx[0].nbytes, self.threads)
        return dx.transpose(0, 3, 1, 2)


class Flatten(Module):
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
