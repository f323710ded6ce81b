"""The trainer's float layers: backward passes against central finite differences.

Binarisation and the sign's straight-through estimator have no derivative to
check; everything else (batch norm, max pooling, the output scale with softmax
cross-entropy, and the linear and conv maps for fixed signs) is checked in float64.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refbnn.training import pieces
from refbnn.training.nn import (BatchNorm, BinaryConv2d, BinaryLinear, MaxPool, ScaledOutput, SignActivation,
                                softmax_cross_entropy)
from refbnn.training.pieces import PIECE_BYTES, over_batch

RNG = np.random.default_rng(0)


def numeric_grad(f, x, eps=1e-6):
    """Central differences of the scalar f at every entry of x (modified in place)."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        up = f()
        x[idx] = old - eps
        down = f()
        x[idx] = old
        g[idx] = (up - down) / (2 * eps)
    return g


def check_module(module, x, train=True, params=()):
    """Compare backward with finite differences for f = sum(R * forward(x))."""
    out = module.forward(x, train)
    r = RNG.normal(size=out.shape)

    def f():
        return float((r * module.forward(x, train)).sum())

    module.forward(x, train)
    for p in module.params():
        p.grad[...] = 0
    dx = module.backward(r)
    assert np.allclose(dx, numeric_grad(f, x), atol=1e-6)
    for p in params:
        analytic = p.grad.copy()
        assert np.allclose(analytic, numeric_grad(f, p.value), atol=1e-6)


def channels_last(x):
    """x's values in channels-last memory, as the convolution leaves its maps."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("shape,layout", [((6, 3), None), ((4, 2, 3, 3), None), ((4, 2, 3, 3), channels_last)])
def test_batchnorm_backward_in_training(shape, layout):
    bn = BatchNorm(shape[1], dtype=np.float64)
    bn.gamma.value[:] = RNG.normal(size=shape[1])
    bn.beta.value[:] = RNG.normal(size=shape[1])
    x = RNG.normal(size=shape)
    check_module(bn, layout(x) if layout else x, params=[bn.gamma, bn.beta])


def _broadcast_over_axis_1(*arrays):
    """elementwise_views without its fast path: the arrays, vectors broadcast over axis 1."""
    shape = (1, -1) + (1,) * (arrays[0].ndim - 2)
    return arrays, lambda v: np.reshape(v, shape)


@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_batchnorm_on_channels_last_maps_gives_the_same_bits_as_plain_broadcasting(b, c, h, w, seed):
    """Property: on maps stored channels-last, batch norm's element-wise work as rows with
    tiled per-channel vectors (elementwise_views) gives bit for bit the forward output,
    the input gradient and the parameter gradients of plain broadcasting over axis 1."""
    from refbnn.training import nn

    rng = np.random.default_rng(seed)
    x, dy = (channels_last(rng.normal(size=(b, c, h, w)).astype(np.float32)) for _ in range(2))
    gamma = rng.normal(size=c).astype(np.float32)
    results = []
    for views in (nn.elementwise_views, _broadcast_over_axis_1):
        saved, nn.elementwise_views = nn.elementwise_views, views
        try:
            bn = BatchNorm(c)
            bn.gamma.value[:] = gamma
            y = bn.forward(x, True)
            results.append((y, bn.backward(dy), bn.gamma.grad, bn.beta.grad))
        finally:
            nn.elementwise_views = saved
    assert nn.elementwise_views(x, dy)[0][0].ndim == 2      # x and dy took the fast path: rows
    assert all(np.array_equal(a, b) for a, b in zip(*results))


def test_batchnorm_uses_running_statistics_in_evaluation():
    bn = BatchNorm(2, dtype=np.float64)
    x = RNG.normal(size=(50, 2)) * 3 + 1
    bn.forward(x, True)
    # one step of momentum 0.1 from (0, 1): mean 0.1 * batch mean, var 0.9 + 0.1 * unbiased var
    assert np.allclose(bn.running_mean, 0.1 * x.mean(axis=0))
    assert np.allclose(bn.running_var, 0.9 + 0.1 * x.var(axis=0, ddof=1))
    y = bn.forward(x, False)
    assert np.allclose(y, (x - bn.running_mean) / np.sqrt(bn.running_var + 1e-5))


def test_maxpool_backward_routes_to_the_maximum():
    check_module(MaxPool(), RNG.normal(size=(2, 2, 5, 4)))   # odd height: the last row gets no gradient


def test_linear_and_conv_backward_for_fixed_signs():
    lin = BinaryLinear(3, 5, RNG, np.float64)
    check_module(lin, RNG.normal(size=(4, 5)))
    conv = BinaryConv2d(3, 2, 3, 1, RNG, np.float64)
    check_module(conv, RNG.normal(size=(2, 2, 4, 5)))


def direct_conv(x, w, p):
    """The convolution by its definition: out[b,o,i,j] = sum_{c,r,s} xpad[b,c,i+r,j+s] w[o,c,r,s]."""
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    k = w.shape[-1]
    ho, wo = xp.shape[2] - k + 1, xp.shape[3] - k + 1
    out = np.zeros((len(x), len(w), ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = np.einsum("bcrs,ocrs->bo", xp[:, :, i:i + k, j:j + k], w)
    return out


def direct_conv_backward(x, w, p, dy):
    """dW[o,c,r,s] = sum_{b,i,j} dy[b,o,i,j] xpad[b,c,i+r,j+s]; dx: each tap's share back to its pixel."""
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    k = w.shape[-1]
    dw, dxp = np.zeros(w.shape), np.zeros(xp.shape)
    for i in range(dy.shape[2]):
        for j in range(dy.shape[3]):
            dw += np.einsum("bo,bcrs->ocrs", dy[:, :, i, j], xp[:, :, i:i + k, j:j + k])
            dxp[:, :, i:i + k, j:j + k] += np.einsum("bo,ocrs->bcrs", dy[:, :, i, j], w)
    return dw, dxp[:, :, p:xp.shape[2] - p, p:xp.shape[3] - p]


@pytest.mark.parametrize("wide", [1, 10**6], ids=["fields-channels-last", "fields-by-tap"])
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 6), st.integers(1, 6),
       st.integers(0, 1), st.integers(0, 2**32 - 1), st.booleans())
def test_conv_equals_its_definition_bit_for_bit_on_integers(wide, b, c, n, h, w, p, seed, first):
    """Property: on integer-valued inputs, weights and output gradients every sum is exact in
    float64, so the convolution (receptive fields gathered tap by tap or channels last, by
    pieces of inputs in a hidden layer, one product per tap in the input gradient) gives
    exactly the definition's forward, weight gradient and input gradient, whatever the
    order of the terms, in either memory layout of x, as first layer or hidden layer."""
    from refbnn.training import nn

    if min(h, w) + 2 * p < 3:
        return
    rng = np.random.default_rng(seed)
    conv = BinaryConv2d(n, c, 3, p, rng, np.float64)
    conv.input_grad = not first
    x = rng.integers(-3, 4, (b, c, h, w)).astype(np.float64)
    if seed % 2:
        x = channels_last(x)
    signs = conv.signs(None)
    saved = nn.WIDE, pieces.PIECE_BYTES
    nn.WIDE, pieces.PIECE_BYTES = wide, 1      # pieces of one input
    try:
        y = conv.forward(x, True)
    finally:
        nn.WIDE, pieces.PIECE_BYTES = saved
    assert np.array_equal(y, direct_conv(x, signs, p))
    dy = rng.integers(-5, 6, y.shape).astype(np.float64)
    dx = conv.backward(dy)
    dw, dx_direct = direct_conv_backward(x, signs, p, dy)
    assert np.array_equal(conv.w.grad, dw)
    assert dx is None if first else np.array_equal(dx, dx_direct)


def test_first_weight_layer_computes_no_input_gradient():
    """The first weight layer's input is data: backward gives its weight gradient (the same
    as with the input gradient) and returns None, and the network stops there."""
    from refbnn.training.architectures import Network

    x = RNG.integers(-3, 4, (2, 2, 5, 5)).astype(np.float64)
    grads = []
    for input_grad in (True, False):
        conv = BinaryConv2d(3, 2, 3, 1, np.random.default_rng(1), np.float64)
        conv.input_grad = input_grad
        dy = np.random.default_rng(2).normal(size=conv.forward(x, True).shape)
        out = conv.backward(dy)
        assert (out is None) == (not input_grad)
        grads.append(conv.w.grad.copy())
    assert np.array_equal(*grads)
    net = Network("cnn:4,mp;6", (1, 8, 8), 3, seed=0)
    assert [m.input_grad for m in net.weighted] == [False, True, True]
    scores = net.forward(RNG.normal(size=(4, 1, 8, 8)).astype(np.float32), True)
    net.backward(np.ones_like(scores))            # returns after the first conv, without error
    assert np.abs(net.weighted[0].w.grad).sum() > 0


def first_max_pool_backward(x, dy):
    """2x2 max pooling's gradient by its definition: each window scanned in row-major order,
    dy to the first position holding the maximum, 0 elsewhere (and to floor-cut rows/columns)."""
    dx = np.zeros(x.shape)
    for b, c, i, j in np.ndindex(dy.shape):
        window = [(r, s) for r in range(2) for s in range(2)]
        values = [x[b, c, 2 * i + r, 2 * j + s] for r, s in window]
        r, s = window[values.index(max(values))]
        dx[b, c, 2 * i + r, 2 * j + s] = dy[b, c, i, j]
    return dx


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(2, 7), st.integers(2, 7), st.integers(0, 2**32 - 1))
def test_maxpool_routes_ties_to_the_first_maximum(b, c, h, w, seed):
    """Property: with values from {-1, 0, 1} ties are common; the forward pass is the window
    maximum and the gradient goes to the first maximum in row-major order, as defined, in
    either memory layout of x."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-1, 2, (b, c, h, w)).astype(np.float64)
    if seed % 2:
        x = channels_last(x)
    pool = MaxPool()
    y = pool.forward(x, True)
    assert np.array_equal(y, x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(b, c, h // 2, 2, w // 2, 2).max(axis=(3, 5)))
    dy = rng.normal(size=y.shape)
    assert np.array_equal(pool.backward(dy), first_max_pool_backward(x, dy))


def test_weight_gradients_pass_straight_through_the_sign():
    # Treat sign(W) as a free continuous tensor V: dL/dW (straight-through) must equal dL/dV.
    for module, x in [(BinaryLinear(3, 5, RNG, np.float64), RNG.normal(size=(4, 5))),
                      (BinaryConv2d(3, 2, 3, 1, RNG, np.float64), RNG.normal(size=(2, 2, 4, 4)))]:
        v = RNG.normal(size=module.w.value.shape)
        module.signs = lambda flip: v
        r = RNG.normal(size=module.forward(x, True).shape)
        module.w.grad[...] = 0
        module.backward(r)
        assert np.allclose(module.w.grad, numeric_grad(lambda: float((r * module.forward(x, True)).sum()), v))


def test_output_scale_and_cross_entropy_gradients():
    out = ScaledOutput(4, 3, RNG, np.float64)
    x = RNG.normal(size=(5, 3))
    y = np.array([0, 3, 1, 1, 2])

    def loss():
        return softmax_cross_entropy(out.forward(x, True), y)[0]

    _, grad = softmax_cross_entropy(out.forward(x, True), y)
    out.theta.grad[...] = 0
    dx = out.backward(grad)
    assert np.allclose(out.theta.grad, numeric_grad(loss, out.theta.value))
    assert np.allclose(dx, numeric_grad(loss, x))


def test_sign_activation_is_plus_one_iff_positive_with_hardtanh_gradient_mask():
    act = SignActivation()
    z = np.array([-1.5, -1.0, 0.0, 0.5, 1.0, 2.0])
    assert act.forward(z, True).tolist() == [-1, -1, -1, 1, 1, 1]        # sign(0) = -1
    assert act.backward(np.ones(6)).tolist() == [0, 1, 1, 1, 1, 0]        # |z| <= 1


def _doubled_in_pieces(n: int) -> list:
    out = np.zeros(n, dtype=np.int64)
    over_batch(lambda sl: out.__setitem__(sl, 2 * np.arange(n)[sl]), n, PIECE_BYTES // 16, 2)  # pieces of 16
    return out.tolist()


def test_pieces_cover_the_batch_in_a_forked_worker_too():
    """over_batch writes every piece (n not a multiple of the piece size), on threads, also
    in a process forked after the parent used its thread pool, as the experiment runner's
    workers are: the inherited pool has no threads, and waiting on it would never end."""
    import multiprocessing

    n = 3 * 16 + 5
    assert _doubled_in_pieces(n) == [2 * i for i in range(n)]
    with multiprocessing.get_context("fork").Pool(1) as workers:
        assert workers.apply_async(_doubled_in_pieces, (n,)).get(timeout=60) == [2 * i for i in range(n)]


def test_training_gives_the_same_bits_on_one_thread_and_on_three():
    """The element-wise pieces write disjoint parts of their outputs, so a CNN trained in
    pieces of one input on three threads (on whatever cores there are) has the same
    parameters, bit for bit, as one trained in whole batches on one thread."""
    from refbnn.training.datasets import DataSplit
    from refbnn.training.trainer import TrainConfig, Trainer

    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 256, (3 * 40, 1, 10, 10)), rng.integers(0, 4, 3 * 40)
    params = []
    for threads, piece_bytes in ((1, 2**30), (3, 1)):
        saved, pieces.PIECE_BYTES = pieces.PIECE_BYTES, piece_bytes
        try:
            trainer = Trainer(TrainConfig("cnn:4,mp,6;5", epochs=1, batch_size=40, train_ber=0.1, threads=threads),
                              DataSplit(x, y, x[:8], y[:8], 255, 4, "random"))
            trainer.train_epoch()
        finally:
            pieces.PIECE_BYTES = saved
        params.append([p.value.copy() for p in trainer.net.params()])
    assert all(np.array_equal(a, b) for a, b in zip(*params))


@pytest.mark.parametrize("wide", [1, 10**6], ids=["fields-channels-last", "fields-by-tap"])
def test_work_buffers_carry_nothing_from_one_step_to_the_next(wide, monkeypatch):
    """Property: training with the layers' work buffers kept from step to step (and the
    batch size changing at the end of each epoch) gives bit for bit the parameters of
    training where every buffer is fresh and poisoned (NaN, random booleans) unless made
    zeroed: no step depends on what an earlier one left in a buffer, and none reads an
    entry before writing it. (Mutation-checked: without the zeroing of the convolution's
    input gradient, of the pooling gradient's floor-cut row, or of a padding border, this
    fails.)"""
    from refbnn.training import nn
    from refbnn.training.datasets import DataSplit
    from refbnn.training.trainer import TrainConfig, Trainer

    poison_rng = np.random.default_rng(7)

    def poisoned(make):
        a = make()
        if a.dtype == bool:
            a[...] = poison_rng.random(a.shape) < 0.5
        else:
            a.fill(np.nan)
        return a

    def fresh_buffer(owner, name, shape, dtype, zeros=False):
        return np.zeros(shape, dtype) if zeros else poisoned(lambda: np.empty(shape, dtype))

    def fresh_buffer_like(owner, name, x, dtype=None):
        return poisoned(lambda: np.empty_like(x, dtype=x.dtype if dtype is None else dtype))

    rng = np.random.default_rng(4)
    x, y = rng.integers(0, 256, (70, 1, 9, 9)), rng.integers(0, 4, 70)
    monkeypatch.setattr(nn, "WIDE", wide)
    params = []
    for fresh in (False, True):
        if fresh:
            monkeypatch.setattr(pieces, "buffer", fresh_buffer)
            monkeypatch.setattr(pieces, "buffer_like", fresh_buffer_like)
        trainer = Trainer(TrainConfig("cnn:3,mp,5,mp;6", epochs=2, batch_size=32, train_ber=0.1),
                          DataSplit(x, y, x[:8], y[:8], 255, 4, "random"))
        trainer.train_epoch()
        trainer.train_epoch()
        params.append([p.value.copy() for p in trainer.net.params()])
    assert all(np.array_equal(a, b) for a, b in zip(*params))
