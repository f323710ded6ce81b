"""The batch norm -> integer threshold rule (refbnn.semantics.batchnorm, docs/semantics.md
§8 and §10.3): written once, used by the trainer's export and the importer's fold alike.
None of this needs onnx: `fold()` reads plain steps."""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refbnn.importers.fold import fold
from refbnn.importers.steps import BatchNormStep, SignStep, WeightStep
from refbnn.semantics.batchnorm import THRESHOLD_LIMIT, sign_threshold
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
