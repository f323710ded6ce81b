"""Differential tests: the fast engine equals the reference interpreter exactly.

The interpreter is the definition (docs/semantics.md §1-5); the fast engine must give
identical predictions, T tuples and Pi, compared as exact Fractions. The allowed
differences between the two are: none.
"""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import model_cases

from refbnn.engines import bitkernel
from refbnn.engines.fast import FastEngine
from refbnn.engines.interpreter import Interpreter
from refbnn.semantics.importance import neuron_importance
from refbnn.semantics.margin import tolerance

# Every property runs on both kernels of the fast engine: the float GEMMs and, where the
# `fast` extra (numba) is installed, the bit kernel.
KERNELS = ["numpy"] + (["bits"] if bitkernel.available() else [])

B_VALUES = [Fraction(0), Fraction(1, 2), Fraction(1), Fraction(3, 2), Fraction(2), Fraction(1, 255),
            Fraction(7, 3), Fraction(64)]


def _labels_with_a_hit(case, reference):
    """Labels where at least input 0 is classified correctly, so A > 0."""
    y = case.y.copy()
    y[0] = reference.run(case.x[0]).prediction
    return y


@pytest.mark.parametrize("kernel", KERNELS)
@given(model_cases(), st.fractions(min_value=0, max_value=40, max_denominator=20))
def test_engines_give_identical_predictions_and_T(kernel, case, extra_b):
    """Property: for every model and input, both engines agree exactly on the
    predictions, on every threshold layer's T^b and on the whole T tuple."""
    ref, fast = Interpreter(case.model), FastEngine(case.model, kernel=kernel)
    assert list(fast.predictions(case.x)) == ref.predictions(case.x)
    bs = B_VALUES + [extra_b]
    assert fast.tolerance(case.x, bs) == tolerance(case.model, [ref.run(x) for x in case.x], bs)


@pytest.mark.parametrize("kernel", KERNELS)
@given(model_cases())
def test_incremental_algorithm_1_equals_flip_and_rerun(kernel, case):
    """Property: the fast engine's incremental Algorithm 1 gives the same Pi as the
    definition (flip the neuron, re-run everything) in either engine."""
    ref, fast = Interpreter(case.model), FastEngine(case.model, kernel=kernel)
    y = _labels_with_a_hit(case, ref)
    naive_ref = neuron_importance(ref, case.x, y)
    assert fast.importance(case.x, y) == naive_ref
    assert neuron_importance(fast, case.x, y) == naive_ref


@pytest.mark.parametrize("kernel", KERNELS)
@given(model_cases(max_inputs=30, wide=True))
def test_engines_agree_with_small_batches(kernel, case):
    """Property: splitting the data into batches of one or two inputs changes nothing
    (the batch loop and the per-batch Algorithm 1 state are correct)."""
    fast = FastEngine(case.model, kernel=kernel)
    tiny = FastEngine(case.model, kernel=kernel)
    tiny.batch_size = 2
    y = _labels_with_a_hit(case, Interpreter(case.model))
    assert list(tiny.predictions(case.x)) == list(fast.predictions(case.x))
    assert tiny.tolerance(case.x, B_VALUES) == fast.tolerance(case.x, B_VALUES)
    assert tiny.importance(case.x, y) == fast.importance(case.x, y)


@pytest.mark.parametrize("kernel", KERNELS)
@given(model_cases(), st.integers(0, 2**32 - 1), st.floats(0, 1))
def test_engines_agree_under_the_same_weight_masks(kernel, case, seed, p):
    """Property: XORing the same bit masks into the weights gives identical predictions."""
    rng = np.random.default_rng(seed)
    masks = [rng.random(case.model.layers[i].weight.shape) < p for i in case.model.weight_indices]
    ref, fast = Interpreter(case.model, masks), FastEngine(case.model, masks, kernel=kernel)
    assert list(fast.predictions(case.x)) == ref.predictions(case.x)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("fraction", [0.0, 1.0], ids=["dense-only", "sparse-always"])
@given(case=model_cases(max_inputs=12, wide=True))
def test_incremental_paths_each_equal_the_definition(kernel, fraction, case):
    """Property: Algorithm 1 gives the definition's Pi whether the linear->threshold
    candidate shortcut is never taken or always taken (its bound m2 < 4d is sound)."""
    import refbnn.engines.incremental as inc

    ref = Interpreter(case.model)
    y = _labels_with_a_hit(case, ref)
    saved = inc.SPARSE_FRACTION
    inc.SPARSE_FRACTION = fraction
    try:
        assert FastEngine(case.model, kernel=kernel).importance(case.x, y) == neuron_importance(ref, case.x, y)
    finally:
        inc.SPARSE_FRACTION = saved


@pytest.mark.parametrize("kernel", KERNELS)
@given(case=model_cases(max_inputs=12))
def test_conv_steps_in_pieces_of_one_row_equal_the_definition(kernel, case):
    """Property: Algorithm 1's conv -> (pool ->) threshold step, run in pieces of rows,
    gives the definition's Pi when every piece is a single row."""
    import refbnn.engines.incremental as inc

    ref = Interpreter(case.model)
    y = _labels_with_a_hit(case, ref)
    saved = inc.PIECE_BYTES
    inc.PIECE_BYTES = 1
    try:
        assert FastEngine(case.model, kernel=kernel).importance(case.x, y) == neuron_importance(ref, case.x, y)
    finally:
        inc.PIECE_BYTES = saved


@pytest.mark.parametrize("kernel", KERNELS)
@given(case=model_cases(max_inputs=12))
def test_conv_neurons_on_threads_give_the_same_pi_and_leave_blas_as_found(kernel, case):
    """Property: Algorithm 1 with conv-layer neurons on two threads (BLAS held to one thread
    meanwhile) gives the same Pi as on one thread, and afterwards every BLAS library has
    the thread count it had before."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    y = _labels_with_a_hit(case, Interpreter(case.model))
    before = [lib["num_threads"] for lib in threadpoolctl.threadpool_info()]
    threaded = FastEngine(case.model, threads=2, kernel=kernel).importance(case.x, y)
    assert [lib["num_threads"] for lib in threadpoolctl.threadpool_info()] == before
    assert threaded == FastEngine(case.model, threads=1, kernel=kernel).importance(case.x, y)


@pytest.mark.parametrize("kernel", KERNELS)
@given(model_cases(), st.integers(0, 2**32 - 1), st.booleans())
def test_nested_flips_are_the_masks_and_leave_no_trace(kernel, case, seed, read_inside):
    """Property: inside two nested `flipped` blocks (index sets A, then B disjoint from it)
    the engine predicts as the interpreter under the mask A | B and reports those weights
    (whether or not they are read while inside: on the bit kernel a layer's float matrix
    catches up only when read); after leaving both, predictions and weights are clean again,
    and a second round gives the same."""
    rng = np.random.default_rng(seed)
    model = case.model
    fast = FastEngine(model, kernel=kernel)
    clean = {i: fast.weight_matrix(i).copy() for i in model.weight_indices}
    sizes = [clean[i].size for i in model.weight_indices]
    perm = [rng.permutation(n) for n in sizes]
    a = [p[:len(p) // 3] for p in perm]
    b = [p[len(p) // 3:2 * len(p) // 3] for p in perm]
    both = [np.isin(np.arange(n), np.concatenate([ia, ib])).reshape(model.layers[i].weight.shape)
            for n, ia, ib, i in zip(sizes, a, b, model.weight_indices)]
    expected = Interpreter(model, both).predictions(case.x)
    for _ in range(2):
        fast.predictions(case.x)                    # (the packed words exist from here on)
        with fast.flipped(a):
            if read_inside:
                fast.weight_matrix(model.weight_indices[-1])
            with fast.flipped(b):
                assert list(fast.predictions(case.x)) == expected
                for i, m in zip(model.weight_indices, both):
                    assert np.array_equal(fast.weight_matrix(i), np.where(m.reshape(len(clean[i]), -1),
                                                                          -clean[i], clean[i]))
        assert list(fast.predictions(case.x)) == Interpreter(model).predictions(case.x)
        assert all(np.array_equal(fast.weight_matrix(i), clean[i]) for i in model.weight_indices)
