"""The bit kernel (refbnn.engines.bitkernel, the `fast` extra): packed XNOR-popcount
products equal the plain integer products, and the fast engine falls back to its float
GEMMs where numba is missing. The engine-level equalities run in test_engines_agree.py
and through every `engine_cls` test, once per kernel."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from strategies import model_cases

from refbnn.engines import bitkernel
from refbnn.engines.fast import FastEngine

needs_numba = pytest.mark.skipif(not bitkernel.available(), reason="the bit kernel needs numba ('.[fast]')")


@st.composite
def sign_matrices(draw, max_k=200):
    """Two +-1 matrices [R, K] and [N, K], K across word boundaries (1..max_k)."""
    k = draw(st.integers(1, max_k))
    r, n = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    a = draw(arrays(np.int8, (r, k), elements=st.sampled_from([-1, 1])))
    w = draw(arrays(np.int8, (n, k), elements=st.sampled_from([-1, 1])))
    return a, w


@needs_numba
@settings(max_examples=60, deadline=None)
@given(sign_matrices())
def test_xor_popcount_equals_the_product(aw):
    """Property: K - 2 popcount(a XOR w) = sum_j a_j w_j for every row pair, any K."""
    a, w = aw
    assert np.array_equal(bitkernel.signs_product(a, w), a.astype(np.int64) @ w.T.astype(np.int64))


@needs_numba
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 130), st.integers(1, 4), st.integers(1, 7), st.integers(1, 7), st.sampled_from([1, 3]),
       st.integers(0, 1), st.data())
def test_the_packed_convolution_leaves_padded_taps_out(c, n, h, w, k, padding, data):
    """Property: the direct convolution on packed channels (padded taps absent: their words
    and mask are 0) equals the plain convolution with zero padding, channels across word
    boundaries (C up to 130)."""
    from refbnn.engines.ops import conv2d

    if min(h, w) + 2 * padding < k:
        return
    x = data.draw(arrays(np.int8, (2, c, h, w), elements=st.sampled_from([-1, 1])))
    wt = data.draw(arrays(np.int8, (n, c * k * k), elements=st.sampled_from([-1, 1])))
    expected = conv2d(x.astype(np.float64), wt.astype(np.float64), k, padding)
    assert np.array_equal(bitkernel.conv_product(x, wt, k, padding), expected)


@needs_numba
@settings(max_examples=60, deadline=None)
@given(st.sampled_from([1, 2, 3, 7, 16, 255, 1000]), st.booleans(), st.data())
def test_bit_planes_give_the_integer_product(z, signed, data):
    """Property: the first layer's product by bit planes (of x + Z where x < 0 occurs)
    equals x @ w.T for integers |x| <= Z, with and without negative values."""
    k, r, n = data.draw(st.integers(1, 130)), data.draw(st.integers(1, 6)), data.draw(st.integers(1, 4))
    x = data.draw(arrays(np.int64, (r, k), elements=st.integers(-z if signed else 0, z)))
    w = data.draw(arrays(np.int8, (n, k), elements=st.sampled_from([-1, 1]))).astype(np.int64)
    assert np.array_equal(bitkernel.integer_product(x, w, z), x @ w.T)



@needs_numba
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 7), st.integers(1, 7),
       st.sampled_from([np.float32, np.float64, np.int64]), st.booleans(), st.data())
def test_pooling_and_margin_counts_read_either_layout(b, c, h, w, dtype, channels_last, data):
    """Property: 2x2 max pooling, the threshold's +-1 outputs (polarity -1 negating them) and
    the counts of margins m = |2(h - s) - 1| >= need equal NumPy's (refbnn.engines.ops.maxpool,
    a comparison, refbnn.semantics.theorem1.odd_margin) on maps stored
    channels first and on maps stored channels last (the packed convolution's layout), and
    the pooled maps keep the layout they came in."""
    from refbnn.engines.ops import maxpool
    from refbnn.semantics.theorem1 import odd_margin

    x = data.draw(arrays(np.int64, (b, c, h, w), elements=st.integers(-50, 50))).astype(dtype)
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    pooled = bitkernel.maxpool(x)
    assert np.array_equal(pooled, maxpool(x)) and pooled.dtype == x.dtype
    if channels_last and min(h, w) >= 2:
        assert pooled.transpose(0, 2, 3, 1).flags.c_contiguous
    s = np.array(data.draw(st.lists(st.integers(-60, 60), min_size=c, max_size=c)), dtype=np.int64)
    needs = sorted(data.draw(st.lists(st.integers(0, 250), min_size=1, max_size=6)))
    m = odd_margin(x.astype(np.int64), s.reshape(1, -1, 1, 1))
    # any bound of m will do; these pick float32, float64 and int64 for m (the needs reach past 221)
    bound = data.draw(st.sampled_from([2 * (50 + 60) + 1, 2**24, 2**53]))
    assert bitkernel.margins_at_least(x, s, needs, bound) == [int((m >= k).sum()) for k in needs]
    negative = np.array(data.draw(st.lists(st.booleans(), min_size=c, max_size=c)))
    want = np.where((x > s.reshape(1, -1, 1, 1)) != negative.reshape(1, -1, 1, 1), 1, -1)
    signs = bitkernel.threshold_signs(x, s.astype(x.dtype), negative)
    assert signs is not None or not channels_last             # channels first: left to NumPy
    assert signs is None or (np.array_equal(signs, want) and signs.dtype == np.int8)
    flat = np.ascontiguousarray(x.reshape(b, -1)[:, :c])          # a dense layer's h [B, C]
    assert np.array_equal(bitkernel.threshold_signs(flat, s.astype(x.dtype), negative),
                          np.where((flat > s) != negative, 1, -1))
    assert bitkernel.margins_at_least(flat, s, needs, bound) == [
        int((odd_margin(flat.astype(np.int64), s.reshape(1, -1)) >= k).sum()) for k in needs]


@needs_numba
def test_the_field_tables_sum_the_real_taps_only():
    """By hand: a 3x3 kernel with padding 1 on 2x2 maps; every output position is a corner,
    so each has its own mask of real taps: at (0, 0) the taps (1, 1), (1, 2), (2, 1), (2, 2),
    bits 4, 5, 7 and 8 of the pattern. With weights alternating +1, -1 (+1 at the
    even taps 0, 2, 4, 6, 8) and every input +1 (pattern 511) the sum at (0, 0) is
    w4 + w5 + w7 + w8 = 1 - 1 - 1 + 1 = 0; with inputs +1 only at tap 4 (pattern 16) it is
    w4 - w5 - w7 - w8 = 1 + 1 + 1 - 1 = 2."""
    w = np.array([[1, -1, 1, -1, 1, -1, 1, -1, 1]])
    table, mask_id = bitkernel.field_tables(w, 3, 2, 2, 1)
    assert mask_id.shape == (2, 2) and len(set(mask_id.ravel().tolist())) == 4
    assert table[mask_id[0, 0], 511, 0] == 0 and table[mask_id[0, 0], 16, 0] == 2
    assert table[mask_id[1, 1], 511, 0] == 1 - 1 - 1 + 1      # taps 0, 1, 3, 4


@needs_numba
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(2, 7), st.integers(2, 7), st.integers(1, 5), st.sampled_from([1, 2, 3]),
       st.integers(0, 1), st.booleans(), st.data())
def test_a_negated_channel_through_conv_pool_threshold(r, h, w, n, k, padding, pooled, data):
    """Property: the table step of Algorithm 1 (one input channel negated everywhere) gives
    the fires, changed rows and changed channels that the plain computation gives: the
    change dh = conv(-2 x the clean signs) (refbnn.engines.ops.conv2d), an entry firing iff
    dh exceeds the excess, a pooled one iff one of its window's does."""
    from refbnn.engines.ops import conv2d

    if min(h, w) + 2 * padding < k:
        return
    ho, wo = h + 2 * padding - k + 1, w + 2 * padding - k + 1
    pooled = pooled and min(ho, wo) >= 2
    signs = data.draw(arrays(np.bool_, (r, h, w)))
    wt = data.draw(arrays(np.int8, (n, k * k), elements=st.sampled_from([-1, 1])))
    b = r + 2                                             # the batch: rows r..1 of it, reversed
    rows = np.arange(r)[::-1] + 1
    excess = data.draw(arrays(np.float32, (b, ho, wo, n), elements=st.integers(-2 * k * k - 1, 2 * k * k + 1)))
    shape = (b, ho // 2, wo // 2, n) if pooled else (b, ho, wo, n)
    clean = data.draw(arrays(np.bool_, shape))
    dh = conv2d(np.where(signs, -2.0, 2.0)[:, None], wt.astype(np.float64), k, padding).transpose(0, 2, 3, 1)
    above = dh > excess[rows]
    if pooled:
        hh, ww = ho // 2 * 2, wo // 2 * 2
        above = above[:, :hh, :ww].reshape(r, ho // 2, 2, wo // 2, 2, n).any(axis=(2, 4))
    diff = above != clean[rows]
    table, mask_id = bitkernel.field_tables(wt, k, h, w, padding)
    fires, row_changed, channel_changed = bitkernel.negated_channel_fires(signs, -2 * table, mask_id, padding, rows,
                                                                          pooled, excess, clean)
    assert np.array_equal(fires, above)
    assert np.array_equal(row_changed, diff.any(axis=(1, 2, 3)))
    assert np.array_equal(channel_changed, diff.any(axis=(0, 1, 2)))


@needs_numba
@settings(max_examples=60, deadline=None)
@given(st.sampled_from([1, 3, 255, 2**22]), st.integers(1, 3), st.integers(1, 4), st.sampled_from([1, 2, 3]),
       st.integers(0, 1), st.data())
def test_the_first_convolution_on_integers(z, c, n, k, padding, data):
    """Property: the direct convolution of integer maps |x| <= z (float32 sums where
    fan-in * z <= 2^24, int64 past it: z = 2^22 with 9 taps) equals the plain product of
    the fields, padded taps absent (refbnn.engines.ops.conv2d in exact float64)."""
    from refbnn.engines.ops import conv2d

    h, w = data.draw(st.integers(k, 6)), data.draw(st.integers(k, 6))
    x = data.draw(arrays(np.int64, (2, c, h, w), elements=st.integers(-z, z)))
    wt = data.draw(arrays(np.int8, (n, c * k * k), elements=st.sampled_from([-1, 1])))
    expected = conv2d(x.astype(np.float64), wt.astype(np.float64), k, padding)
    assert np.array_equal(bitkernel.integer_conv(x, wt, k, padding, z), expected)


@needs_numba
@settings(max_examples=60, deadline=None)
@given(sign_matrices(max_k=300), st.floats(0, 1), st.data())
def test_a_change_product_by_masked_popcounts(aw, share, data):
    """Property: for a change delta in {-2, 0, 2} of +-1 inputs (about `share` of them
    non-zero, whole 64-column words of zeros included), the masked XOR-popcount product
    equals delta @ w.T, with the weights packed by it or given packed; and the step through
    the threshold fires where that change exceeds the excess, as a comparison does."""
    a, w = aw
    keep = data.draw(arrays(np.bool_, a.shape)) & (np.random.default_rng(len(a)).random(a.shape) < share)
    delta = np.where(keep, 2 * a, 0).astype(np.int8)
    expected = delta.astype(np.int64) @ w.T.astype(np.int64)
    assert np.array_equal(bitkernel.change_product(delta, w), expected)
    assert np.array_equal(bitkernel.change_product(delta, w, bitkernel.pack_weights(w), np.float32), expected)
    # and through the threshold at once: rows of a larger batch, out of order
    rows = np.arange(len(a))[::-1] + 1
    excess = data.draw(arrays(np.float32, (len(a) + 2, len(w)), elements=st.integers(-2 * a.shape[1], 2 * a.shape[1])))
    clean = data.draw(arrays(np.bool_, excess.shape))
    negative = data.draw(arrays(np.bool_, len(w)))
    new, row_changed, unit_changed = bitkernel.change_fires(delta, w, None, rows, excess, clean, negative)
    fires = expected > excess[rows]
    assert np.array_equal(new, np.where(fires != negative, 1, -1)) and new.dtype == np.int8
    assert np.array_equal(row_changed, (fires != clean[rows]).any(axis=1))
    assert np.array_equal(unit_changed, (fires != clean[rows]).any(axis=0))

def test_pack_bits_places_bit_j_in_word_j_over_64():
    """By hand: bits 0, 63 and 64 set in a row of 70 -> words [2^0 + 2^63, 2^0]."""
    bits = np.zeros((1, 70), dtype=bool)
    bits[0, [0, 63, 64]] = True
    if not bitkernel.available():
        pytest.skip("packing runs in numba")
    assert bitkernel.pack_bits(bits).tolist() == [[1 + 2**63, 1]]


def test_without_numba_the_engine_falls_back_silently(monkeypatch):
    """Without the extra the default kernel is the float GEMMs, with no message; asking
    for the bit kernel by name is a one-line error that names the extra."""
    from refbnn.formats.files import InputError

    monkeypatch.setattr(bitkernel, "numba", None)
    model = __import__("refbnn").example_model()
    assert FastEngine(model).kernel == "numpy"
    with pytest.raises(InputError, match=r"needs numba: pip install 'refbnn\[fast\]'"):
        FastEngine(model, kernel="bits")


@needs_numba
def test_the_engine_option_forces_either_kernel(tmp_path):
    """`--engine numpy` and `--engine bits` give the same numbers as the default ("auto": the
    kernel for the layers large enough to gain)."""
    import json

    from conftest import run_cli

    import refbnn
    refbnn.save_model(refbnn.example_model(), tmp_path / "m.json")
    refbnn.save_data(tmp_path / "d.npz", *refbnn.example_data(40))
    docs = []
    for engine in ("fast", "numpy", "bits"):
        r = run_cli("metrics", tmp_path / "m.json", tmp_path / "d.npz", "--importance", "--engine", engine,
                    "--json", tmp_path / f"{engine}.json")
        assert r.exit_code == 0, r.output
        docs.append({k: v for k, v in json.loads((tmp_path / f"{engine}.json").read_text()).items() if k != "engine"})
    assert docs[0] == docs[1] == docs[2]
    assert FastEngine(refbnn.example_model()).kernel == "auto"


@needs_numba
@settings(max_examples=40, deadline=None)
@given(model_cases(), st.integers(0, 2**32 - 1), st.floats(0.01, 0.5))
def test_bit_errors_give_the_same_accuracies_on_both_kernels(case, seed, p):
    """Property: the keyed flips (§6) are the same bits whatever the kernel, so a sweep
    gives identical accuracies on the bit kernel and on the float GEMMs."""
    from refbnn.biterrors.masks import ErrorModel
    from refbnn.biterrors.sweep import accuracy_sweep

    em = ErrorModel(p, seed, 3)
    sweeps = [accuracy_sweep(FastEngine(case.model, kernel=k), case.x, case.y, [("p", p)], 3, em)[0].accuracies
              for k in ("numpy", "bits")]
    assert sweeps[0] == sweeps[1]


@needs_numba
def test_the_integers_do_not_depend_on_the_thread_count(tmp_path):
    """The kernel's loops run over inputs; every output is summed by one thread, so one
    thread and two give the same integers (in a child process, as the thread count is
    fixed when numba starts)."""
    import subprocess
    import sys

    code = ("import numpy as np, sys, refbnn; from refbnn.engines.fast import FastEngine; "
            "m = refbnn.example_model(); x, y = refbnn.example_data(300); e = FastEngine(m, kernel='bits', threads=2); "
            "np.save(sys.argv[1], np.concatenate([o.reshape(len(x), -1).astype(np.int64) for o in e.outputs(x)], 1))")
    for threads in ("1", "2"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{threads}.npy")], check=True,
                       env={**__import__("os").environ, "NUMBA_NUM_THREADS": threads})
    assert np.array_equal(np.load(tmp_path / "1.npy"), np.load(tmp_path / "2.npy"))
