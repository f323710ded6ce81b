"""The trainer's float layers: backward passes against central finite differences.

Binarisation and the sign's straight-through estimator have no derivative to
check; everything else (batch norm, max pooling, the output scale with softmax
cross-entropy, and the linear and conv maps for fixed signs) is checked in float64.
"""
import numpy as np
import pytest

from refbnn.training.nn import (
    BatchNorm,
    BinaryConv2d,
    BinaryLinear,
    MaxPool,
    ScaledOutput,
    SignActivation,
    softmax_cross_entropy,
)

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


@pytest.mark.parametrize("shape", [(6, 3), (4, 2, 3, 3)])
def test_batchnorm_backward_in_training(shape):
    bn = BatchNorm(shape[1], dtype=np.float64)
    bn.gamma.value[:] = RNG.normal(size=shape[1])
    bn.beta.value[:] = RNG.normal(size=shape[1])
    check_module(bn, RNG.normal(size=shape), params=[bn.gamma, bn.beta])


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
