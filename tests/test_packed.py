"""The packed delta product (refbnn.engines.packed): two output units per float32
column, exact while a row has at most MAX_ROW_WEIGHT non-zero entries."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import model_cases

import refbnn.engines.incremental as inc
import refbnn.engines.packed as packed
from refbnn.engines.fast import FastEngine
from refbnn.engines.interpreter import Interpreter
from refbnn.engines.packed import BASE, MAX_ROW_WEIGHT, pack_pairs, packed_product
from refbnn.semantics.importance import neuron_importance


@given(st.integers(0, 2**32 - 1), st.integers(1, 9), st.integers(1, 50), st.integers(0, 7))
def test_packed_product_equals_the_plain_product(seed, n, k, rows):
    """Property: for +-1 weights (odd or even unit count) and x in {-1, 0, 1}, the
    packed product equals x @ W.T entry for entry."""
    rng = np.random.default_rng(seed)
    w = rng.choice([-1.0, 1.0], (n, k)).astype(np.float32)
    x = rng.integers(-1, 2, (rows, k)).astype(np.int8)
    got = packed_product(x, pack_pairs(w), n)
    assert got.shape == (rows, n)
    assert np.array_equal(got, x.astype(np.float32) @ w.T)


def test_the_heaviest_packable_row_is_exact_and_one_more_is_refused():
    """At the bound: x has MAX_ROW_WEIGHT = 2047 entries +1 where both units' weights are
    +1 (the rest of W is -1 against zeros of x), so lo = hi = 2047 and the packed column
    holds v = 2047 + 4096 * 2047 = 8,386,559 < 2**24 = 16,777,216: exact, and
    |lo| = 2047 < BASE / 2 = 2048 decodes uniquely. Negated, lo = hi = -2047. One more
    non-zero entry (2048) is refused: the caller must fall back."""
    k = MAX_ROW_WEIGHT + 5
    w = -np.ones((2, k), dtype=np.float32)
    w[:, :MAX_ROW_WEIGHT] = 1
    x = np.zeros((2, k), dtype=np.int8)
    x[0, :MAX_ROW_WEIGHT] = 1
    x[1, :MAX_ROW_WEIGHT] = -1
    p = pack_pairs(w)
    assert float(x[0].astype(np.float32) @ p[0]) == 2047 + BASE * 2047 == 8_386_559 < 2**24
    assert packed_product(x, p, 2).tolist() == [[2047, 2047], [-2047, -2047]]
    x[0, MAX_ROW_WEIGHT] = 1      # 2048 non-zero entries in row 0
    assert packed_product(x, p, 2) is None


@pytest.mark.parametrize("max_weight", [MAX_ROW_WEIGHT, 0], ids=["packed", "fallback"])
@given(case=model_cases(max_inputs=12, wide=True))
def test_algorithm_1_with_every_linear_layer_packed_equals_the_definition(max_weight, case):
    """Property: Algorithm 1 gives the definition's Pi when every linear layer's delta
    product goes through the packing (PACKED_UNITS = 1), and when every row with a change
    is refused by it (MAX_ROW_WEIGHT = 0) and takes the plain product instead."""
    ref = Interpreter(case.model)
    y = case.y.copy()
    y[0] = ref.run(case.x[0]).prediction
    saved = inc.PACKED_UNITS, packed.MAX_ROW_WEIGHT
    inc.PACKED_UNITS, packed.MAX_ROW_WEIGHT = 1, max_weight
    try:
        assert FastEngine(case.model).importance(case.x, y) == neuron_importance(ref, case.x, y)
    finally:
        inc.PACKED_UNITS, packed.MAX_ROW_WEIGHT = saved


@pytest.mark.parametrize("wide", [1, 10**6], ids=["fields-channels-last", "fields-by-tap"])
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(1, 5), st.integers(1, 4),
       st.integers(1, 7), st.integers(1, 7), st.sampled_from([1, 2, 3]), st.integers(0, 1), st.booleans())
def test_conv2d_in_pieces_equals_im2col_times_w(wide, seed, b, c, n, h, w, k, p, channels_last):
    """Property: the engine's convolution (refbnn.engines.ops.conv2d: fields gathered
    channels last or tap by tap, multiplied piece by piece, here pieces of one input)
    equals im2col(x) @ W.T entry for entry, on integer inputs in either memory layout."""
    import refbnn.engines.ops as ops

    if min(h, w) + 2 * p < k:
        return
    rng = np.random.default_rng(seed)
    x = rng.integers(-255, 256, (b, c, h, w)).astype(np.float32)
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    wt = rng.choice([-1.0, 1.0], (n, c * k * k)).astype(np.float32)
    saved = ops.WIDE, ops.PIECE_BYTES
    ops.WIDE, ops.PIECE_BYTES = wide, 1
    try:
        got = ops.conv2d(x, wt, k, p)
    finally:
        ops.WIDE, ops.PIECE_BYTES = saved
    cols = ops.im2col(x, k, p)
    want = (cols.reshape(-1, cols.shape[-1]) @ wt.T).reshape(cols.shape[:3] + (n,)).transpose(0, 3, 1, 2)
    assert got.shape == want.shape and np.array_equal(got, want)
