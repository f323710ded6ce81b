"""The fast exact engine: the reference interpreter's numbers at data-set scale.

Same interface as `refbnn.engines.interpreter.Interpreter` (`predictions`,
`with_flips`, `tolerance`, `importance`; see `refbnn.engines.protocol`) and the
very same results: the tests demand exact equality.

Beyond the protocol, the engine offers an analysis surface for the commands that
reason about exact integers in bulk (`refbnn.measure.certify`, the exact flip
probability in `refbnn.biterrors`): `memory_slices`, `outputs` (every layer's output),
`weight_matrix`, `thresholds`, `odd_margins`, `signed_margins` and `predicted`; and
`flipped`, which negates weights in place for a block (bit error sweeps).
`refbnn.engines.incremental` is a friend: it also uses `_weight_layer` and
`_threshold` to recompute parts of a layer.

Why float GEMM is exact here: every weight is +-1 and every input of a weight
layer is an integer with |x| <= M (M = Z for the first weight layer, 1 after a
threshold, 2 for a delta in Algorithm 1). Each product is then an integer of
magnitude <= M, and every partial sum, in whatever order or blocking BLAS uses
(FMA included), is an integer of magnitude <= fan_in * M. A binary float with a
p-bit significand represents every integer up to 2**p exactly, so if
fan_in * M <= 2**24 (float32) or 2**53 (float64) no rounding ever happens.
`_exact_dtype` picks the narrowest such type and refuses a layer past 2**53
(the model file limits keep real models far below it).
"""
from __future__ import annotations

import copy
import os
import resource
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from fractions import Fraction
from math import prod
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from ..formats.files import InputError
from ..semantics.importance import relative_drop, require_accuracy
from ..semantics.margin import DEFAULT_B, Tolerance, min_odd_margin
from ..semantics.model import Conv2d, Linear, MaxPool2d, Model, NoNeuronsError, Threshold, check_masks
from ..semantics.theorem1 import odd_margin, signed_margin
from .incremental import BatchFlips
from .ops import conv2d, first_layer_input, im2col, input_slices, maxpool

DEFAULT_MEMORY = 2 * 2**30   # bytes of working memory per batch (docs/engine.md)
COUNT_CHUNK = 2**20           # values per pass of the T counting: small enough to stay in cache


def available_memory() -> int:
    """Bytes this process may still allocate: the smaller of the system's MemAvailable and
    what the address-space limit (ulimit -v) leaves; unbounded where neither is known."""
    avail = 2**62
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/status") as f:
                used = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
            avail = min(avail, soft - used)
    except (OSError, StopIteration, ValueError):
        pass
    return avail


def weight_bytes(model: Model) -> int:
    """Bytes the fast engine holds for the weights: each +-1 in its exact float type
    (float32, or float64 past 2**24), plus two bytes per weight while it is unpacked."""
    first = model.weight_indices[0]
    total = 0
    for i in model.weight_indices:
        shape = model.layers[i].weight.shape
        dt = exact_float(prod(shape[1:]) * (model.first_input_bound if i == first else 2)) or np.float64
        total += prod(shape) * np.dtype(dt).itemsize
    biggest = max(prod(model.layers[i].weight.shape) for i in model.weight_indices)
    return total + 2 * biggest


def exact_float(bound: int) -> Optional[type]:
    """The narrowest float type that holds every integer of magnitude <= bound exactly
    (a p-bit significand holds every integer up to 2**p), or None past 2**53."""
    if bound <= 2**24:
        return np.float32
    if bound <= 2**53:
        return np.float64
    return None


def _exact_dtype(fan_in: int, magnitude: int) -> type:
    """The narrowest float type in which a +-1 dot product of length fan_in over integers
    of magnitude <= `magnitude` is exact (see the module docstring)."""
    dt = exact_float(fan_in * magnitude)
    if dt is None:
        raise ValueError(f"fan-in {fan_in} x input magnitude {magnitude} exceeds 2**53: "
                         f"no exact float type")
    return dt


def weight_signs(model: Model, layer_index: int, bitorder: str = "big") -> np.ndarray:
    """The weight tensor of a layer as an int8 array of +-1 (bit 1 = +1). The contract packs
    big-endian (§3.1); `bitorder="little"` reads the bytes the other way, as a mistaken
    reader would (refbnn.oracle's `bits-little-endian`)."""
    w = model.layers[layer_index].weight
    bits = np.unpackbits(np.frombuffer(w.bits.tobytes(), dtype=np.uint8), count=len(w.bits), bitorder=bitorder)
    return np.where(bits.reshape(w.shape), np.int8(1), np.int8(-1))


KERNELS = ("numpy", "bits", "auto")
BITS_MIN_WORK = 2**16   # "auto": the bit kernel for a model with a layer of at least this many
                        # +-1 products per input; below it a call's fixed cost (threads,
                        # packing) outweighs the products (measured: the digits models ran
                        # slower on it end to end). All layers or none: BLAS's spinning threads
                        # beside the kernel's made a mixed sweep slower than either


def _kernel(kernel: Optional[str]) -> str:
    """The products' kernel: "auto" (the `fast` extra's numba kernel for the layers large
    enough to gain, where numba is installed), else "numpy" (exact float GEMMs); "bits" or
    "numpy" forces one for every layer."""
    from . import bitkernel
    if kernel is None:
        return "auto" if bitkernel.available() else "numpy"
    if kernel not in KERNELS:
        raise ValueError(f"kernel: {kernel!r} is not one of {', '.join(KERNELS)}")
    if kernel != "numpy" and not bitkernel.available():
        raise InputError("--engine bits needs numba: pip install 'refbnn[fast]'")
    return kernel


@contextmanager
def one_blas_thread(wanted: bool = True) -> Iterator[bool]:
    """BLAS held to one thread for the block, if `wanted` and threadpoolctl is installed
    (scikit-learn brings it); yields whether it is. Without it nothing changes."""
    if wanted:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            wanted = False
    if not wanted:
        yield False
        return
    with threadpool_limits(1):
        yield True


class FastEngine:
    """Batched NumPy inference with exact float GEMMs; see the module docstring."""

    name = "fast"

    def __init__(self, model: Model, weight_masks: Optional[Sequence] = None,
                 memory: int = DEFAULT_MEMORY, threads: Optional[int] = None, kernel: Optional[str] = None):
        self.model = model
        self.kernel = _kernel(kernel)
        need, free = weight_bytes(model), available_memory()
        if need > free:       # refuse before allocating, rather than die of it
            raise InputError(f"the fast engine needs {need / 2**30:.1f} GiB to hold this model's weights; this process "
                             f"may allocate {max(free, 0) / 2**30:.1f} GiB (--engine reference needs far less, "
                             "or use a machine with more memory)")
        self.memory = min(memory, max((free - need) // 2, 2**20))   # leave room for the batch's copies
        self.threads = threads or min(4, len(os.sched_getaffinity(0)))
        self._w: dict[int, np.ndarray] = {}       # layer -> [N, fan_in] +-1 in its exact dtype
        self._dtype: dict[int, type] = {}         # layer -> dtype of its input and output
        first = model.weight_indices[0]
        for i in model.weight_indices:
            signs = weight_signs(model, i)
            fan_in = prod(signs.shape[1:])
            # Inputs: |x| <= M in the first layer (Z, or 1 for a binarised input, §2.6);
            # deltas in Algorithm 1 are up to 2.
            dt = _exact_dtype(fan_in, model.first_input_bound if i == first else 2)
            self._dtype[i] = dt
            self._w[i] = signs.reshape(signs.shape[0], fan_in).astype(dt)
        self._clean = self._w                     # the stored weights, before any flips
        self._pw: dict[int, np.ndarray] = {}      # layer -> its weights packed for the bit kernel
        # layer -> flips (flat index arrays) made on its packed words but not yet on its float
        # matrix: `flipped` leaves the float matrix of a layer computed from packed words alone
        # and `_float` catches up where it is read (each flip is its own inverse)
        self._pending: dict[int, list[np.ndarray]] = {}
        self._auto_bits: Optional[bool] = None    # "auto": decided on the first product
        self._thr: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._cmp: dict[int, np.ndarray] = {}     # thresholds for comparing, see _threshold
        for nl in model.neuron_layers:
            layer: Threshold = model.layers[nl.threshold_index]
            s = np.array(layer.thresholds, dtype=np.float64)
            self._thr[nl.threshold_index] = (s, np.array(layer.polarity) < 0)
            # Every h entering this threshold has |h| <= B = fan-in * M (M = Z in the first
            # layer, else 1; a max of such h too). Clipping s to [-B-1, B] changes no h > s,
            # and then s and h are integers of magnitude <= B+1, exact in exact_float(B+1):
            # float32 for most layers, so the comparison runs in h's own type.
            bound = prod(model.layers[nl.weight_index].weight.shape[1:]) * (model.Z if nl.first else 1)
            cmp_type = exact_float(bound + 1) or np.float64
            self._cmp[nl.threshold_index] = np.clip(s, -bound - 1, bound).astype(cmp_type)
        self.batch_size = self._batch_size()
        if weight_masks is not None:
            self._w = self._negated_weights(weight_masks)

    def with_flips(self, weight_masks: Optional[Sequence]) -> "FastEngine":
        """The same engine reading its weights through `weight_masks` (one per weight layer,
        None for a clean one): each masked +-1 is negated in the exact-dtype matrices the
        engine already holds, so nothing is unpacked or converted again. A flip is
        transient: the masks apply to the stored weights, not to earlier flips."""
        engine = copy.copy(self)
        engine._w = self._negated_weights(weight_masks)
        engine._pw, engine._pending = {}, {}
        return engine

    @contextmanager
    def flipped(self, indices: Sequence[Optional[np.ndarray]]) -> Iterator["FastEngine"]:
        """This engine with the weights at the given distinct flat indices (one int array or
        None per weight layer) negated for the duration of the block: in place, on a private
        copy of the weights made once, and undone on exit. No copy per pattern, so a sweep
        pays only for the flips it makes. Blocks nest: inside another `flipped` block the
        flips add to the outer ones. Not for use from several threads at once."""
        if self._w is self._clean or any(self._w[i] is self._clean[i] for i in self._clean):
            self._w = {i: w.copy() for i, w in self._w.items()}
        touched = [(i, idx) for i, idx in zip(self.model.weight_indices, indices) if idx is not None and len(idx)]
        for i, idx in touched:
            self._flip(i, idx)
        try:
            yield self
        finally:
            for i, idx in reversed(touched):
                self._flip(i, idx)

    def _flip(self, i: int, idx: np.ndarray) -> None:
        """Negate weight layer i at the flat indices idx (or undo that): in its packed words,
        and in its float matrix unless the forward pass reads only the packed words, in which
        case the flip waits in `_pending` (a flip undone right after it cancels out there)."""
        if i in self._pw and self._reads_packed(i):
            pending = self._pending.setdefault(i, [])
            if pending and pending[-1] is idx:
                pending.pop()
            else:
                pending.append(idx)
        else:
            self._float(i).reshape(-1)[idx] *= -1
        self._flip_packed(i, idx)

    def _float(self, i: int) -> np.ndarray:
        """Weight layer i's float matrix with every flip applied (the pending ones now)."""
        for idx in self._pending.pop(i, ()):
            self._w[i].reshape(-1)[idx] *= -1
        return self._w[i]

    def _reads_packed(self, i: int) -> bool:
        """Whether the forward pass computes weight layer i from its packed words alone (a
        first convolution on integers reads the float matrix)."""
        first_conv = isinstance(self.model.layers[i], Conv2d) and i == self.model.weight_indices[0] \
            and self.model.input_threshold is None
        return self._on_bits(i) and not first_conv

    def _negated_weights(self, weight_masks: Optional[Sequence]) -> dict[int, np.ndarray]:
        """A new layer -> matrix dict: the clean weights with each masked entry negated
        (what `with_flips` installs; `flipped` instead negates in place and undoes)."""
        out = dict(self._clean)
        for i, mask in zip(self.model.weight_indices, check_masks(weight_masks, self.model)):
            if mask is not None:
                # A copy with the flipped entries negated; indexing only the flips is about
                # 4x faster than np.where over the whole matrix at realistic BERs.
                w = out[i] = self._clean[i].copy()
                w.reshape(-1)[np.flatnonzero(mask)] *= -1
        return out

    # -- sizing ---------------------------------------------------------------------------

    def _batch_size(self) -> int:
        """Inputs per batch so that one batch's tensors (all layer outputs kept, plus the
        largest im2col buffer, plus Algorithm 1's copies) stay within `self.memory`."""
        model = self.model
        per_input = 8 * prod(model.input_shape)
        for i, layer in enumerate(model.layers):
            per_input += 8 * prod(model.shapes[i]) * 3
            if isinstance(layer, Conv2d):
                per_input += 8 * prod(model.shapes[i][1:]) * prod(layer.weight.shape[1:])
        return max(1, int(self.memory // per_input))

    def layer_dtype(self, i: int) -> type:
        """The exact float type in which weight layer i multiplies (see `exact_float`)."""
        return self._dtype[i]

    def memory_slices(self, n: int) -> Iterator[slice]:
        """Slices of at most `batch_size` inputs covering 0..n-1 in order."""
        return input_slices(n, self.batch_size)

    # -- layers ---------------------------------------------------------------------------

    def _weight_layer(self, i: int, x: np.ndarray, channels: Optional[np.ndarray] = None) -> np.ndarray:
        """h = W x for layer i. With `channels`, x holds only those input channels (or
        columns) and only the matching part of W is used."""
        if channels is None and self._on_bits(i):
            return self._bits_layer(i, x)
        layer = self.model.layers[i]
        w = self._float(i)
        dt = self._dtype[i]
        x = x.astype(dt, copy=False)
        if isinstance(layer, Linear):
            return x @ (w if channels is None else w[:, channels]).T
        n, c, k, _ = layer.weight.shape
        if channels is None:
            return conv2d(x, w, k, layer.padding)
        w = w.reshape(n, c, k * k)[:, channels].reshape(n, -1)
        cols = im2col(x, k, layer.padding)
        b, ho, wo, f = cols.shape
        h = cols.reshape(-1, f) @ w.T
        return h.reshape(b, ho, wo, n).transpose(0, 3, 1, 2)

    def _on_bits(self, i: int) -> bool:
        """Whether weight layer i multiplies on the bit kernel (see BITS_MIN_WORK)."""
        if self.kernel != "auto":
            return self.kernel == "bits"
        if self._auto_bits is None:
            model = self.model

            def work(j: int) -> int:
                layer = model.layers[j]
                return prod(layer.weight.shape) * (prod(model.shapes[j][1:]) if isinstance(layer, Conv2d) else 1)
            self._auto_bits = max(work(j) for j in model.weight_indices) >= BITS_MIN_WORK
        return self._auto_bits

    def _bits_layer(self, i: int, x: np.ndarray) -> np.ndarray:
        """h = W x for layer i by the bit kernel (refbnn.engines.bitkernel): XOR and popcount
        on packed +-1 inputs (a convolution directly on packed channels, padded taps absent),
        bit planes on the integer input of a dense first layer; the same integers as the
        float GEMM, in the layer's exact dtype, so everything after it is unchanged. A first
        convolution on integers keeps the float product (exact, and faster there: a field
        holds a few numbers per channel)."""
        from . import bitkernel
        bitkernel.set_threads(self.threads)
        model, layer, dt = self.model, self.model.layers[i], self._dtype[i]
        integers = i == model.weight_indices[0] and model.input_threshold is None
        if isinstance(layer, Linear):
            flat = x.reshape(len(x), -1)
            if integers:
                return bitkernel.integer_product(flat, self._w[i], model.Z, self._packed(i), dt)
            return bitkernel.signs_product(flat, self._w[i], self._packed(i), dt)
        n, c, k, _ = layer.weight.shape
        if integers:
            # A field holds a few numbers per channel: direct sums, not bit planes. On one
            # thread BLAS's product was a little faster (Fashion CNN forward + T: 0.26x against
            # 0.30x the float floor); on more, BLAS's threads spinning beside the kernel's
            # doubled the time (0.49x against 0.23x), so there the kernel's own loop.
            if self.threads == 1:
                return conv2d(x.astype(dt, copy=False), self._float(i), k, layer.padding)
            return bitkernel.integer_conv(x, self._float(i), k, layer.padding, model.first_input_bound, dt)
        return bitkernel.conv_product(x, self._w[i], k, layer.padding, self._packed(i), dt)

    def _packed(self, i: int) -> np.ndarray:
        """Weight layer i packed for the bit kernel, made once per engine and kept equal to
        the weights through `flipped` (which XORs the flipped bits into it)."""
        if i not in self._pw:
            from . import bitkernel
            layer = self.model.layers[i]
            if isinstance(layer, Linear):
                self._pw[i] = bitkernel.pack_weights(self._float(i))
            else:
                n, c, k, _ = layer.weight.shape
                self._pw[i] = bitkernel.pack_conv_weights(self._float(i), c, k)
        return self._pw[i]

    def _flip_packed(self, i: int, idx: np.ndarray) -> None:
        """XOR the bits of the flat weight indices idx (into [N, fan-in], fan-in in the
        [C, k, k] order) into layer i's packed weights, if they are made."""
        packed = self._pw.get(i)
        if packed is None:
            return
        from . import bitkernel
        shape = self.model.layers[i].weight.shape
        bitkernel.flip_weight_bits(packed, idx, prod(shape[1:]), prod(shape[2:]))

    def _threshold(self, i: int, h: np.ndarray, channels: Optional[np.ndarray] = None) -> np.ndarray:
        """+-1 outputs of threshold layer i; with `channels`, h holds only those channels."""
        s, negative = self._cmp[i], self._thr[i][1]
        if channels is None and self._on_bits(self.model.weight_indices[0]) and s.dtype == h.dtype:
            from . import bitkernel       # one compiled pass, on every core
            out = bitkernel.threshold_signs(h, s, negative)
            if out is not None:
                return out
        if channels is not None:
            s, negative = s[channels], negative[channels]
        shape = (1, -1) + (1,) * (h.ndim - 2)
        fires = h > s.reshape(shape)
        if negative.any():
            fires ^= negative.reshape(shape)   # polarity -1: +1 iff h <= s
        return fires.view(np.int8) * np.int8(2) - np.int8(1)   # True -> +1, False -> -1

    def _layer(self, i: int, x: np.ndarray) -> np.ndarray:
        layer = self.model.layers[i]
        if isinstance(layer, (Linear, Conv2d)):
            return self._weight_layer(i, x)
        if isinstance(layer, Threshold):
            return self._threshold(i, x)
        if isinstance(layer, MaxPool2d):
            # one pass in the kernel, with the rest of the model
            if self._on_bits(self.model.weight_indices[0]):
                from . import bitkernel
                bitkernel.set_threads(self.threads)
                return bitkernel.maxpool(x)
            return maxpool(x)
        return x.reshape(len(x), -1)   # flatten, C order

    def outputs(self, x: np.ndarray, flip: Optional[int] = None,
                act_masks: Optional[dict] = None) -> list[np.ndarray]:
        """The output of every layer for a batch x [B, *input_shape]; `flip` and
        `act_masks` (masks [B, ...] per hidden weight layer) as in `Interpreter.run`.
        outputs[-1] holds the class scores."""
        at = self.model.neuron(flip) if flip is not None else None
        outs = []
        x = first_layer_input(self.model, x)
        for i in range(len(self.model.layers)):
            if act_masks and i in act_masks:
                x = np.where(act_masks[i].reshape(x.shape), -x, x)
            x = self._layer(i, x)
            if at is not None and at[0].threshold_index == i:
                x = x.copy()
                x[:, at[1]] *= -1
            outs.append(x)
        return outs

    @staticmethod
    def predicted(scores: np.ndarray) -> np.ndarray:
        """The predicted class per row of class scores; ties go to the smallest index
        (np.argmax returns the first maximum)."""
        return np.argmax(scores.reshape(len(scores), -1), axis=1)

    # -- the analysis surface (exact integers, for certify and the flip probability) -------

    def weight_matrix(self, i: int) -> np.ndarray:
        """Weight layer i as [N, fan-in] +-1 values (in the layer's exact float type), with
        any flips of this engine applied. Read only."""
        return self._float(i)

    def thresholds(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Threshold layer t: (s as float64, polarity == -1 as bool), one entry per channel."""
        return self._thr[t]

    def signed_margins(self, t: int, h: np.ndarray) -> np.ndarray:
        """g = 2(h - s) - 1 (Theorem 1) for h [B, C, ...] entering threshold layer t, int64."""
        s, _ = self._thr[t]
        shape = (1, -1) + (1,) * (h.ndim - 2)
        return signed_margin(h.astype(np.int64), s.astype(np.int64).reshape(shape))

    def odd_margins(self, t: int, h: np.ndarray) -> np.ndarray:
        """m = |2(h - s) - 1| = 2T (times Z in the first layer), exact int64."""
        s, _ = self._thr[t]
        shape = (1, -1) + (1,) * (h.ndim - 2)
        return odd_margin(h.astype(np.int64), s.astype(np.int64).reshape(shape))

    # -- the common engine interface ------------------------------------------------------

    def predictions(self, xs: np.ndarray, flip: Optional[int] = None,
                    act_masks: Optional[dict] = None) -> np.ndarray:
        """The predicted class of every input; `act_masks[i]` holds one mask per input."""
        xs = np.asarray(xs)
        out = np.empty(len(xs), dtype=np.int64)
        for sl in self.memory_slices(len(xs)):
            masks = {i: m[sl] for i, m in act_masks.items()} if act_masks else None
            out[sl] = self.predicted(self.outputs(xs[sl], flip, masks)[-1])
        return out

    def tolerance(self, xs: np.ndarray, bs: Sequence[Fraction] = DEFAULT_B) -> Tolerance:
        """The T tuple (eqs. 1-5), equal to `refbnn.semantics.margin.tolerance`.

        T_{i,n,u,v} >= b  <=>  m / (2 Z_l) >= b with m = |2(h - s) - 1| an odd integer,
        <=>  m >= ceil(2 b Z_l), an integer comparison. Summing eqs. 3-5:
        T^b = (1/(I N)) * sum_l (1/P_l) * C_l(b), with C_l(b) the count of (i, n, u, v) in
        layer l that pass; the layer breakdown is C_l(b) / (I N_l P_l)."""
        model = self.model
        xs = np.asarray(xs)
        bs = list(dict.fromkeys(bs))   # each distinct b once
        if model.neurons == 0:
            raise NoNeuronsError("T")
        counts = [{b: 0 for b in bs} for _ in model.neuron_layers]
        for sl in self.memory_slices(len(xs)):
            self.add_tolerance_counts(counts, self.outputs(xs[sl]), bs)
        return self.tolerance_of_counts(counts, len(xs), bs)

    def add_tolerance_counts(self, counts: list[dict], outs: list[np.ndarray], bs: Sequence[Fraction]) -> None:
        """Add to counts[l][b] the C_l(b) of one slice's clean outputs (see `tolerance`)."""
        for l, nl in enumerate(self.model.neuron_layers):
            needs = [min_odd_margin(b, self.model.Z if nl.first else 1) for b in bs]
            for b, c in zip(bs, self._count_at_least(nl, outs[nl.threshold_index - 1], needs)):
                counts[l][b] += c

    def tolerance_of_counts(self, counts: list[dict], n_inputs: int, bs: Sequence[Fraction]) -> Tolerance:
        """The T tuple and its layer breakdown from the counts C_l(b) of n_inputs inputs."""
        model = self.model
        layers = [{b: Fraction(c[b], n_inputs * nl.channels * nl.positions) for b in bs}
                  for c, nl in zip(counts, model.neuron_layers)]
        overall = {b: sum((Fraction(c[b], nl.positions) for c, nl in zip(counts, model.neuron_layers)),
                          Fraction(0)) / (n_inputs * model.neurons) for b in bs}
        return Tolerance(overall, layers)

    def _count_at_least(self, nl, h: np.ndarray, needs: list[int]) -> list[int]:
        """For each need: how many entries of h have m = |2(h - s) - 1| >= need.

        m is computed in the narrowest exact type: |m| <= 2 (|h|max + |s|max) + 1, and
        |h| <= fan-in * M; float32 holds every integer up to 2**24, float64 up to 2**53.
        Rows are taken in chunks of about 2**20 values so that the passes stay in cache."""
        s, _ = self._thr[nl.threshold_index]
        w = self.model.layers[nl.weight_index].weight
        h_max = prod(w.shape[1:]) * (self.model.Z if nl.first else 1)
        bound = 2 * (h_max + int(np.abs(s).max())) + 1
        if self._on_bits(self.model.weight_indices[0]):       # one pass, compiled
            from . import bitkernel
            bitkernel.set_threads(self.threads)
            return bitkernel.margins_at_least(h, s.astype(np.int64), needs, bound)
        dt = exact_float(bound) or np.int64
        h = h.reshape(len(h), nl.channels, -1)
        shift = s.astype(dt)[None, :, None]
        counts = [0] * len(needs)
        chunk = max(1, COUNT_CHUNK // (nl.channels * nl.positions))
        for start in range(0, len(h), chunk):
            # m = odd_margin(h, s) (refbnn.semantics.theorem1), in place and in dt.
            m = h[start:start + chunk].astype(dt)
            m -= shift
            m *= 2
            m -= 1
            np.abs(m, out=m)
            for k, need in enumerate(needs):
                if need <= bound:
                    counts[k] += int(np.count_nonzero(m >= need))
        return counts

    def importance(self, xs: np.ndarray, ys: Sequence[int],
                   progress: Optional[Callable[[int, int], None]] = None) -> list[Fraction]:
        """Algorithm 1, equal to `refbnn.semantics.importance.neuron_importance` (flip, full re-run),
        but incremental: see `refbnn.engines.incremental`."""
        model = self.model
        xs = np.asarray(xs)
        ys = np.asarray(ys)
        correct = np.zeros(model.neurons, dtype=np.int64)
        clean_correct = 0
        batches = list(self.memory_slices(len(xs)))
        tables: dict = {}             # Algorithm 1's field tables, made once for every batch
        from . import bitkernel       # (its threadsafe() is asked only where the kernel runs)
        for k, sl in enumerate(batches):
            outs = self.outputs(xs[sl])
            clean_correct += int((self.predicted(outs[-1]) == ys[sl]).sum())
            flips = BatchFlips(self, outs, ys[sl], tables)
            # Neurons are independent, so they run on threads (NumPy releases the GIL in its
            # loops). A conv neuron's flip holds large products too, which BLAS spreads over
            # the cores itself: its neurons run on threads only where BLAS can be held to one
            # thread meanwhile, else the two compete (on the Fashion CNN, 2 threads: 1.1-1.2x
            # slower with BLAS on every core, 1.3-1.6x faster with BLAS on one).
            last = flips.correct_with_each_last_flip()
            with ThreadPoolExecutor(self.threads) as pool:
                for nl in model.neuron_layers:
                    neurons = range(nl.offset, nl.offset + nl.channels)
                    if last is not None and nl is model.neuron_layers[-1]:
                        for n, c in zip(neurons, last):
                            correct[n] += int(c)
                            if progress is not None:
                                progress(k * model.neurons + n + 1, len(batches) * model.neurons)
                        continue
                    # On the bit kernel, neurons run on threads only where numba's threading
                    # layer takes launches from several threads at once (OpenMP, TBB; not its
                    # own "workqueue"): measured, threads beat one neuron after another
                    # with each kernel on every core (Fashion CNN, 2 cores: 5.1x against 6.7x
                    # a bare forward)
                    on_threads = self.threads > 1 and (not self._on_bits(model.weight_indices[0])
                                                       or bitkernel.threadsafe())
                    with one_blas_thread(nl.positions > 1 and on_threads) as threaded:
                        run = pool.map if on_threads and (threaded or nl.positions == 1) else map
                        for n, c in zip(neurons, run(flips.correct_with_flip, neurons)):
                            correct[n] += c
                            if progress is not None:
                                progress(k * model.neurons + n + 1, len(batches) * model.neurons)
        a = Fraction(clean_correct, len(xs))
        require_accuracy(a)
        return [relative_drop(a, Fraction(int(c), len(xs))) for c in correct]
