"""The importer's fold on hand-built steps (docs/semantics.md §10.3), and the batch norm ->
integer threshold rule (refbnn.semantics.batchnorm, §8): written once, used by the
trainer's export and the importer's fold alike. None of this needs onnx: `fold()` reads
plain steps, so these tests run wherever refbnn does."""
import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refbnn.engines.fast import FastEngine
from refbnn.importers.fold import RefusedError, fold
from refbnn.importers.steps import AffineStep, BatchNormStep, ClipStep, FlattenStep, PoolStep, SignStep, WeightStep
from refbnn.semantics.batchnorm import THRESHOLD_LIMIT, sign_threshold
from refbnn.semantics.model import Conv2d, Flatten, Linear, MaxPool2d, Threshold
from refbnn.training.export import fold_batchnorm
from refbnn.training.nn import BatchNorm


@pytest.mark.parametrize("a,c,strict,want", [
    # tau = -c/a = 2.5. a > 0, v > 0: h > 2.5 <=> h > 2 (floor); v >= 0: h >= 2.5 <=> h > 2 (ceil - 1)
    (2.0, -5.0, True, (2, 1, Fraction(5, 2))),
    (2.0, -5.0, False, (2, 1, Fraction(5, 2))),
    # tau = 3 exactly: v > 0: h > 3 -> s = 3; v >= 0: h >= 3 <=> h > 2 -> s = 2
    (1.0, -3.0, True, (3, 1, Fraction(3))),
    (1.0, -3.0, False, (2, 1, Fraction(3))),
    # a < 0, tau = 3: v > 0: h < 3 <=> h <= 2 (ceil - 1), polarity -1; v >= 0: h <= 3 (floor)
    (-1.0, 3.0, True, (2, -1, Fraction(3))),
    (-1.0, 3.0, False, (3, -1, Fraction(3))),
    # a = 0: constant +1 iff c > 0 (c >= 0 when not strict): s below or at the top of |h| <= 10
    (0.0, 1.0, True, (-11, 1, None)),
    (0.0, 0.0, True, (10, 1, None)),
    (0.0, 0.0, False, (-11, 1, None)),
    # tau = 1000.5 far beyond reach 10: kept, so eq. 1 measures the real margin
    (1.0, -1000.5, True, (1000, 1, Fraction(2001, 2))),
])
def test_sign_threshold_follows_the_table(a, c, strict, want):
    assert sign_threshold(a, c, strict, reach=10) == want


def test_sign_threshold_is_clamped_only_at_the_model_file_limit():
    # tau = 1 / 2^-1000 = 2^1000 > 2^53: s is clamped to the limit (h > 2^53 is as impossible)
    s, polarity, tau = sign_threshold(2.0 ** -1000, -1.0, True, reach=10)
    assert (s, polarity, tau) == (THRESHOLD_LIMIT, 1, Fraction(2) ** 1000)
    s, polarity, _ = sign_threshold(2.0 ** -1000, 1.0, True, reach=10)
    assert (s, polarity) == (-THRESHOLD_LIMIT, 1)


def _bn(gamma, beta, mean, var, eps):
    bn = BatchNorm(len(gamma), dtype=np.float64)
    bn.gamma.value[:] = gamma
    bn.beta.value[:] = beta
    bn.running_mean[:] = mean
    bn.running_var[:] = var
    bn.eps = eps
    return bn


finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False)


@pytest.mark.filterwarnings("ignore:threshold tau")    # the generated tau near integers are the point
@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6).flatmap(lambda n: st.tuples(
    st.lists(st.one_of(finite, st.just(0.0)), min_size=n, max_size=n),
    st.lists(finite, min_size=n, max_size=n), st.lists(finite, min_size=n, max_size=n),
    st.lists(st.floats(0, 20), min_size=n, max_size=n))),
    st.sampled_from([1e-5, 0.0, 1e-3]), st.sampled_from([1, 7, 255]), st.integers(1, 9))
def test_export_and_import_fold_batch_norm_to_the_same_thresholds(params, eps, z, fan_in):
    """Property: the trainer's export and the importer's fold give the same thresholds and
    polarities for the same batch norm parameters, in the first layer (the float network
    reads x / Z) and in a hidden one (Z = 1)."""
    gamma, beta, mean, var = params
    if eps == 0.0:
        var = [v + 0.5 for v in var]
    n = len(gamma)
    exported = fold_batchnorm(_bn(gamma, beta, mean, var, eps), 1.0 / z, reach=fan_in * z)
    w = np.where(np.arange(n * fan_in).reshape(n, fan_in) % 3 == 0, -1.0, 1.0)
    steps = [WeightStep("w1", "linear", w), BatchNormStep("bn", np.array(gamma), np.array(beta), np.array(mean),
                                                          np.array(var), eps),
             SignStep("sign", strict=True), WeightStep("out", "linear", np.ones((2, n)))]
    imported = fold(steps, (fan_in,), z, input_a=1.0 / z).model.layers[1]
    assert (imported.thresholds, imported.polarity) == (exported.thresholds, exported.polarity)


def test_fold_of_a_hand_built_mlp_gives_the_hand_computed_thresholds():
    # input x/Z with Z = 4 (a_in = 1/4); weights +-alpha with alpha 0.5 and 2, biases 0.25, -1
    # channel 0: v = 0.5 h / 4 + 0.25 = h/8 + 1/4 > 0  <=> h > -2          -> s = -2, polarity +1
    # channel 1: v = -(2 h / 4 - 1) = 1 - h/2 > 0      <=> h < 2 <=> h <= 1 -> s = 1, polarity -1
    steps = [WeightStep("fc1", "linear", np.array([[0.5, -0.5, 0.5], [-2.0, -2.0, 2.0]]), bias=np.array([0.25, -1.0])),
             AffineStep("neg1", mul=np.array([1.0, -1.0])), SignStep("sign", strict=True),
             WeightStep("out", "linear", 3.0 * np.array([[1.0, 1.0], [1.0, -1.0]]))]
    model = fold(steps, (3,), 4, input_a=0.25).model
    assert [type(layer) for layer in model.layers] == [Linear, Threshold, Linear]
    assert (model.layers[1].thresholds, model.layers[1].polarity) == ((-2, 1), (1, -1))
    assert model.layers[0].weight.bits.tolist() == [1, 0, 1, 0, 0, 1]


def test_fold_of_a_conv_block_equals_a_float_forward_on_every_input():
    """Property: conv (padding 1, weights +-0.5) -> bias -> sign (v >= 0) -> max pool ->
    flatten -> linear folds into a model whose predictions equal a float64 forward pass of
    the same steps on all 3^9 inputs in {-1, 0, 1}^(3x3)."""
    rng = np.random.default_rng(5)
    w = 0.5 * np.where(rng.random((2, 1, 3, 3)) < 0.5, -1.0, 1.0)
    bias = np.array([0.75, -0.25])
    out = np.where(rng.random((3, 2)) < 0.5, -1.0, 1.0)
    steps = [WeightStep("conv", "conv2d", w, 1, bias), SignStep("sign", strict=False), PoolStep("pool"),
             FlattenStep("flat"), WeightStep("out", "linear", out)]
    model = fold(steps, (1, 3, 3), 1).model
    assert [type(layer) for layer in model.layers] == [Conv2d, Threshold, MaxPool2d, Flatten, Linear]
    xs = np.array(list(itertools.product((-1, 0, 1), repeat=9))).reshape(-1, 1, 3, 3)
    padded = np.pad(xs.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    v = np.array([[[(padded[:, 0, r:r + 3, c:c + 3] * w[n, 0]).sum(axis=(1, 2)) + bias[n] for c in range(3)]
                   for r in range(3)] for n in range(2)]).transpose(3, 0, 1, 2)     # [I, 2, 3, 3]
    signs = np.where(v >= 0, 1.0, -1.0)
    pooled = signs[:, :, :2, :2].max(axis=(2, 3))                                     # [I, 2]
    scores = pooled @ out.T
    want = scores.argmax(axis=1)                                                      # ties -> smallest index
    assert (np.asarray(FastEngine(model).predictions(xs)) == want).all()


@pytest.mark.parametrize("steps,message", [
    ([WeightStep("c", "conv2d", np.ones((1, 1, 3, 3)), 1), SignStep("s", True), FlattenStep("f"),
      WeightStep("o", "linear", np.ones((2, 9)))], "padding 1 with an input offset"),
    ([WeightStep("fc", "linear", np.array([[1.0, 0.5]])), SignStep("s", True), WeightStep("o", "linear", np.ones((2, 1)))],
     "fc: binary weights expected: output channel 0 has 2 distinct values"),
    ([WeightStep("fc", "linear", np.ones((1, 2))), SignStep("s", True),
      WeightStep("o", "linear", np.ones((2, 1)), bias=np.array([1.0, 0.0]))], "o: a bias on the output layer"),
])
def test_fold_refuses_what_it_cannot_represent_naming_the_step(steps, message):
    shape = (1, 3, 3) if steps[0].kind == "conv2d" else (2,)
    offset = 1.0 if steps[0].kind == "conv2d" else 0.0
    with pytest.raises(RefusedError, match=message):
        fold(steps, shape, 1, input_a=1.0, input_c=offset)


def test_a_comparison_after_a_clip_folds_when_the_bounds_enclose_its_threshold():
    # BN then Clip(-1, 1) then Greater(., 0) (an affine add of -0): clip(v) > 0 <=> v > 0 since
    # -1 < 0 < 1, so the clip changes nothing: v = h - 2 > 0 <=> h > 2 -> s = 2. A comparison
    # with 2 after the same clip (2 outside [-1, 1]) would be constant: refused, naming it.
    w = np.ones((1, 4))
    base = [WeightStep("fc", "linear", w), AffineStep("bn", add=np.float64(-2.0)), ClipStep("hardtanh", -1.0, 1.0)]
    out = WeightStep("out", "linear", np.ones((2, 1)))
    model = fold(base + [AffineStep("gt", add=np.float64(-0.0)), SignStep("where", True), out], (4,), 1).model
    assert model.layers[1].thresholds == (2,) and model.layers[1].polarity == (1,)
    flipped = fold(base + [AffineStep("neg", mul=np.float64(-1.0)), SignStep("where", True), out], (4,), 1).model
    assert flipped.layers[1].polarity == (-1,)          # -clip(v) > 0 <=> v < 0 <=> h <= 1
    assert flipped.layers[1].thresholds == (1,)
    with pytest.raises(RefusedError, match="gt2: a sign after a clip whose bounds do not enclose its threshold"):
        fold(base + [AffineStep("gt2", add=np.float64(-2.0)), SignStep("gt2", True), out], (4,), 1)
