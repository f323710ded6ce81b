"""The model: an input spec plus an ordered list of layers (docs/semantics.md §2).

This module holds the data, its structural rules and the record of one forward
pass (`Run`). Reading and writing files is `refbnn.formats.modelfile`; running a
model is `refbnn.engines.interpreter` (the reference) or `refbnn.engines.fast`.

Weights are kept as one big-endian `bitarray` per weight tensor, row-major, bit 1 = +1.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Optional, Sequence, Union

from bitarray import bitarray


# The parts of §2 a model may use, as `refbnn fuzz --features` names them (docs/semantics.md §12.2):
# hidden linear layers, conv layers, padding, conv -> maxpool -> threshold, conv -> threshold -> maxpool,
# polarity -1, an input the network binarises itself (§2.6).
FEATURES = ("fc", "conv", "padding", "pool-first", "threshold-first", "polarity", "binarized-input")


class ModelError(ValueError):
    """A model that breaks a rule of docs/semantics.md §2; the message names the field."""


class NoNeuronsError(ValueError):
    """A quantity over neurons (T, Pi, VAR(Pi)) asked of a model without threshold layers."""

    def __init__(self, quantity: str):
        super().__init__(f"the model has no threshold layer, so it has no neurons and {quantity} is undefined")


@dataclass(frozen=True)
class Weight:
    """A binary weight tensor: `shape` and its bits in row-major order (1 = +1)."""

    shape: tuple[int, ...]
    bits: bitarray

    def __post_init__(self) -> None:
        if len(self.bits) != prod(self.shape):
            raise ModelError(f"weight: {len(self.bits)} bits for shape {list(self.shape)}")
        endian = self.bits.endian   # a method before bitarray 3, a property since
        if (endian() if callable(endian) else endian) != "big":
            # The file format packs bits big-endian (§3.1); every engine reads them so.
            raise ModelError("weight: bits must be a big-endian bitarray")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Weight) and self.shape == other.shape and self.bits == other.bits

    @classmethod
    def from_array(cls, values) -> "Weight":
        """Build from an array-like of signs or bits (> 0 means +1), any shape."""
        import numpy as np

        a = np.asarray(values)
        bits = bitarray(endian="big")
        bits.pack((a.ravel() > 0).astype(np.uint8).tobytes())
        return cls(tuple(int(d) for d in a.shape), bits)


@dataclass(frozen=True)
class Linear:
    """`linear`: W[N, K]; vector of K -> integer vector of N, h_n = sum_j W[n, j] x_j."""

    weight: Weight
    type = "linear"


@dataclass(frozen=True)
class Conv2d:
    """`conv2d`: W[N, C, k, k], stride 1, zero padding `padding` (padded taps are absent)."""

    weight: Weight
    padding: int = 0
    type = "conv2d"


@dataclass(frozen=True)
class Threshold:
    """`threshold`: per channel n, +1 iff h > s_n (polarity +1) or h <= s_n (polarity -1)."""

    thresholds: tuple[int, ...]
    polarity: tuple[int, ...] = ()

    type = "threshold"

    def __post_init__(self) -> None:
        if not self.polarity:
            object.__setattr__(self, "polarity", (1,) * len(self.thresholds))
        if len(self.polarity) != len(self.thresholds):
            raise ModelError("threshold: polarity and thresholds differ in length")


@dataclass(frozen=True)
class MaxPool2d:
    """`maxpool2d`: 2x2 windows, stride 2, floor; max of integers, or OR of bits on +-1."""

    type = "maxpool2d"


@dataclass(frozen=True)
class Flatten:
    """`flatten`: [C, H, W] -> vector in C order (channel slowest)."""

    type = "flatten"


def check_mask(mask, shape: tuple[int, ...]):
    """A bit mask for a weight of `shape` as a bool array; a wrong shape is a ValueError.

    Both engines accept weight masks (one per weight layer) and check them here."""
    import numpy as np

    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise ValueError(f"mask of shape {list(m.shape)} for a weight of shape {list(shape)}")
    return m.astype(bool, copy=False)


def check_masks(masks, model: "Model") -> list:
    """One entry (a mask or None) per weight layer, in layer order."""
    masks = list(masks) if masks is not None else [None] * len(model.weight_indices)
    if len(masks) != len(model.weight_indices):
        raise ValueError(f"weight_masks: {len(masks)} entries for {len(model.weight_indices)} weight layers")
    return [None if m is None else check_mask(m, model.layers[i].weight.shape)
            for i, m in zip(model.weight_indices, masks)]


Layer = Union[Linear, Conv2d, Threshold, MaxPool2d, Flatten]
WEIGHT_LAYERS = (Linear, Conv2d)


@dataclass(frozen=True)
class NeuronLayer:
    """Where a threshold layer sits: the facts the metrics need about its neurons."""

    threshold_index: int   # index of the `threshold` layer in Model.layers
    weight_index: int      # index of the weight layer whose h it thresholds
    first: bool            # True if that weight layer reads the integer input (eq. 2 applies)
    channels: int          # N_l, neurons in this layer
    positions: int         # U * V of the h entering the threshold (1 after linear)
    offset: int            # global number of this layer's channel 0 (section 2 order)


@dataclass(frozen=True)
class Run:
    """One forward pass of one input.

    `h[l]` is the flat (C-order) integer tensor entering the l-th threshold layer,
    `scores` the class scores (the last layer's h, flattened)."""

    h: list[list[int]]
    scores: list[int]

    @property
    def prediction(self) -> int:
        """Index of the largest score; ties go to the smallest index (docs/semantics.md §2.5)."""
        return self.scores.index(max(self.scores))


@dataclass(frozen=True)
class Model:
    """An input spec (shape, Z, an optional input binarisation) and layers. Construct
    through `Model.build` to validate.

    `input_threshold`: the network binarises its own input (docs/semantics.md §2.6): per
    input channel c, the first weight layer reads +1 iff x > s_c (polarity +1) or
    x <= s_c (polarity -1), else -1, by the rule of a threshold layer. Its channels are
    not neurons, and the first weight layer then reads +-1 like any other (eq. 1)."""

    input_shape: tuple[int, ...]
    Z: int
    layers: tuple[Layer, ...]
    shapes: tuple[tuple[int, ...], ...] = field(compare=False, repr=False, default=())
    neuron_layers: tuple[NeuronLayer, ...] = field(compare=False, repr=False, default=())
    input_threshold: Optional[Threshold] = None

    @classmethod
    def build(cls, input_shape: Sequence[int], Z: int, layers: Sequence[Layer],
              input_threshold: Optional[Threshold] = None) -> "Model":
        """Validate the structure (shapes and layer order) and return the model."""
        input_shape = tuple(input_shape)
        layers = tuple(layers)
        check_order(layers)
        shapes = infer_shapes(input_shape, layers)
        if input_threshold is not None:
            if len(input_threshold.thresholds) != input_shape[0]:
                raise ModelError(f"input.binarize.thresholds: {len(input_threshold.thresholds)} values for "
                                 f"{input_shape[0]} input channels")
            if any(p not in (1, -1) for p in input_threshold.polarity):
                raise ModelError("input.binarize.polarity: every entry must be 1 or -1")
        neurons = describe_neurons(layers, shapes, reads_integers=input_threshold is None)
        return cls(input_shape, Z, layers, shapes, neurons, input_threshold)

    @property
    def first_input_bound(self) -> int:
        """M of the first weight layer: its inputs have |x| <= M. Z for integer input, 1 when
        the model binarises its input (docs/semantics.md §2.6)."""
        return self.Z if self.input_threshold is None else 1

    @property
    def multiply_adds(self) -> int:
        """Multiply-adds of one forward pass: per weight layer, fan-in x outputs x positions."""
        return sum(prod(self.layers[i].weight.shape) * prod(self.shapes[i][1:]) for i in self.weight_indices)

    @property
    def neurons(self) -> int:
        """N: the number of neurons (channels of all threshold layers)."""
        return sum(nl.channels for nl in self.neuron_layers)

    @property
    def classes(self) -> int:
        """Number of class scores: the size of the last layer's output."""
        return prod(self.shapes[-1])

    @property
    def weight_indices(self) -> list[int]:
        """Indices in `layers` of the weight layers, in order."""
        return [i for i, layer in enumerate(self.layers) if isinstance(layer, WEIGHT_LAYERS)]

    def neuron(self, n: int) -> tuple[NeuronLayer, int]:
        """Global neuron number n -> (its threshold layer, its channel)."""
        for nl in self.neuron_layers:
            if nl.offset <= n < nl.offset + nl.channels:
                return nl, n - nl.offset
        raise IndexError(f"neuron {n} out of range 0..{self.neurons - 1}")


def _layer_output_shape(i: int, layer: Layer, shape: tuple[int, ...]) -> tuple[int, ...]:
    where = f"layers[{i}]"
    if isinstance(layer, Linear):
        n, k = _weight_dims(where, layer.weight, 2)
        if len(shape) != 1:
            raise ModelError(f"{where}: linear needs a vector input, got shape {list(shape)} (add a flatten)")
        if shape[0] != k:
            raise ModelError(f"{where}.weight.shape: K = {k} but the input has {shape[0]} values")
        return (n,)
    if isinstance(layer, Conv2d):
        n, c, kh, kw = _weight_dims(where, layer.weight, 4)
        if kh != kw:
            raise ModelError(f"{where}.weight.shape: kernel must be square, got {kh}x{kw}")
        if len(shape) != 3:
            raise ModelError(f"{where}: conv2d needs a [C, H, W] input, got shape {list(shape)}")
        if shape[0] != c:
            raise ModelError(f"{where}.weight.shape: C = {c} but the input has {shape[0]} channels")
        if layer.padding < 0:
            raise ModelError(f"{where}.padding: must be >= 0, got {layer.padding}")
        h = shape[1] + 2 * layer.padding - kw + 1
        w = shape[2] + 2 * layer.padding - kw + 1
        if h < 1 or w < 1:
            raise ModelError(f"{where}.weight.shape: kernel {kw} too large for input {list(shape)}")
        return (n, h, w)
    if isinstance(layer, Threshold):
        if len(layer.thresholds) != shape[0]:
            raise ModelError(f"{where}.thresholds: {len(layer.thresholds)} values for {shape[0]} channels")
        if any(p not in (1, -1) for p in layer.polarity):
            raise ModelError(f"{where}.polarity: every entry must be 1 or -1")
        return shape
    if isinstance(layer, MaxPool2d):
        if len(shape) != 3 or shape[1] < 2 or shape[2] < 2:
            raise ModelError(f"{where}: maxpool2d needs a [C, H, W] input with H, W >= 2, got {list(shape)}")
        return (shape[0], shape[1] // 2, shape[2] // 2)
    if isinstance(layer, Flatten):
        if len(shape) != 3:
            raise ModelError(f"{where}: flatten needs a [C, H, W] input, got shape {list(shape)}")
        return (prod(shape),)
    raise ModelError(f"{where}: unknown layer")


def _weight_dims(where: str, weight: Weight, rank: int) -> tuple[int, ...]:
    if len(weight.shape) != rank or any(d < 1 for d in weight.shape):
        raise ModelError(f"{where}.weight.shape: expected {rank} positive sizes, got {list(weight.shape)}")
    return weight.shape


def infer_shapes(input_shape: tuple[int, ...], layers: tuple[Layer, ...]) -> tuple[tuple[int, ...], ...]:
    """The shape after each layer, checking that each layer accepts its input."""
    if len(input_shape) not in (1, 3) or any(d < 1 for d in input_shape):
        raise ModelError(f"input.shape: expected [K] or [C, H, W] of positive sizes, got {list(input_shape)}")
    shapes = []
    shape = input_shape
    for i, layer in enumerate(layers):
        shape = _layer_output_shape(i, layer, shape)
        shapes.append(shape)
    return tuple(shapes)


def check_order(layers: tuple[Layer, ...]) -> None:
    """docs/semantics.md §2.4: every weight layer but the last is followed (directly or after one
    maxpool2d) by a threshold; thresholds follow weight layers only; the model ends with
    a weight layer."""
    if not layers or not isinstance(layers[-1], WEIGHT_LAYERS):
        raise ModelError("layers: the model must end with a linear or conv2d layer (the class scores)")
    for i, layer in enumerate(layers[:-1]):
        if isinstance(layer, WEIGHT_LAYERS):
            nxt = layers[i + 1]
            after_pool = isinstance(nxt, MaxPool2d) and isinstance(layers[i + 2], Threshold)
            if not (isinstance(nxt, Threshold) or after_pool):
                raise ModelError(f"layers[{i}] ({layer.type}): must be followed by a threshold "
                                 f"(directly or after one maxpool2d)")
        if isinstance(layer, Threshold):
            prev = layers[i - 1] if i >= 1 else None
            prev2 = layers[i - 2] if i >= 2 else None
            ok = isinstance(prev, WEIGHT_LAYERS) or (
                isinstance(prev, MaxPool2d) and isinstance(prev2, WEIGHT_LAYERS))
            if not ok:
                raise ModelError(f"layers[{i}] (threshold): must follow a weight layer "
                                 f"(directly or after one maxpool2d)")


def describe_neurons(layers: tuple[Layer, ...], shapes: tuple[tuple[int, ...], ...],
                     reads_integers: bool = True) -> tuple[NeuronLayer, ...]:
    """The threshold layers in order, with their weight layer and positions per channel.
    `reads_integers`: the first weight layer reads the integer input (not a binarised one)."""
    first_weight = next(i for i, layer in enumerate(layers) if isinstance(layer, WEIGHT_LAYERS))
    out, offset = [], 0
    for i, layer in enumerate(layers):
        if not isinstance(layer, Threshold):
            continue
        weight_index = i - 1 if isinstance(layers[i - 1], WEIGHT_LAYERS) else i - 2
        shape = shapes[i]
        positions = prod(shape[1:]) if len(shape) == 3 else 1
        out.append(NeuronLayer(i, weight_index, reads_integers and weight_index == first_weight,
                               shape[0], positions, offset))
        offset += shape[0]
    return tuple(out)
