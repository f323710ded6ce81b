"""Protection: chosen units kept free of bit errors (docs/semantics.md §6.1; beyond the paper).

A protected unit is one output channel n of a weight layer L (for a hidden layer, the
neuron of the threshold layer after it; for the output layer, a class score). Protecting
it means that the bits of its weights (row n of W^L) never flip and, when activations
are targeted, neither do its outputs where the next weight layer reads them (channel n
of that layer's input, or its entries after a flatten).

Restriction is a mask AND: the keyed masks of `refbnn.biterrors.masks` are drawn exactly
as without protection and then cleared at the protected bits. So every other bit flips
in the same repetitions and batches as before, bit for bit, and a comparison of
protected against unprotected accuracy is *paired*: the same flips, less the protected
ones.

SPEC (the `--protect` option), one of:
- `L:n,n,...` (groups joined by `;`): output channels n of weight layer L (`refbnn inspect`
  numbers the layers);
- `layer:L`: every channel of weight layer L; `all`: every weight layer;
- `top-importance:K` or `top-importance:P%`: the K hidden neurons with the largest Pi
  (Algorithm 1), or P% of them (rounded, at least 1); ties by neuron number;
- `random:K` or `random:P%`: as many hidden neurons chosen uniformly at random (the
  control for top-importance), from the seed;
- a path to a JSON file {"protect": [{"layer": L, "channels": [n, ...]}, ...]}.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from math import prod
from typing import Optional, Sequence

import numpy as np

from ..formats.files import InputError, read_json
from ..semantics.model import Flatten, Model


@dataclass(frozen=True)
class Protection:
    """The protected output channels per weight layer ({layer: sorted channels}). The masks
    are built once per layer and kept (`_memo`): a sweep asks for them at every batch."""

    channels: dict[int, tuple[int, ...]]
    _memo: dict = field(default_factory=dict, compare=False, repr=False)

    def _once(self, key: tuple, build):
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    @property
    def units(self) -> int:
        return sum(len(c) for c in self.channels.values())

    def weight_bits(self, model: Model) -> int:
        """How many weight bits are kept free of errors."""
        return sum(len(c) * prod(model.layers[i].weight.shape[1:]) for i, c in self.channels.items())

    def weight_mask(self, model: Model, i: int) -> Optional[np.ndarray]:
        """Bool [weight shape] of weight layer i: True where a bit is protected (None: none)."""
        rows = self.channels.get(i)
        if not rows:
            return None

        def build() -> np.ndarray:
            mask = np.zeros(model.layers[i].weight.shape, dtype=bool)
            mask[list(rows)] = True
            return mask
        return self._once(("w", id(model), i), build)

    def input_mask(self, model: Model, i: int) -> Optional[np.ndarray]:
        """Bool [input shape of weight layer i]: True at the outputs of protected neurons
        of the weight layer before it (None: none)."""
        before = [w for w in model.weight_indices if w < i]
        rows = self.channels.get(before[-1]) if before else None
        if not rows:
            return None

        def build() -> np.ndarray:
            shape = model.shapes[i - 1]
            flat_from = next((model.shapes[k - 1] for k in range(before[-1] + 1, i)
                              if isinstance(model.layers[k], Flatten)), None)
            mask = np.zeros(flat_from if flat_from is not None else shape, dtype=bool)
            mask[list(rows)] = True                  # channel n: everything it outputs
            return mask.reshape(shape)
        return self._once(("a", id(model), i), build)

    def protected_rows(self, model: Model, i: int) -> np.ndarray:
        """Bool [output channels] of weight layer i: True where protected."""
        def build() -> np.ndarray:
            rows = np.zeros(model.layers[i].weight.shape[0], dtype=bool)
            rows[list(self.channels.get(i, ()))] = True
            return rows
        return self._once(("rows", id(model), i), build)


def restrict(model: Model, protection: Optional[Protection], weights: list, acts: dict) -> tuple[list, dict]:
    """A flip pattern (weight masks per weight layer, activation masks {layer: [B, ...]})
    with the protected bits cleared; every other bit as it was."""
    if protection is None:
        return weights, acts
    out_w = []
    for i, w in zip(model.weight_indices, weights):
        keep = protection.weight_mask(model, i)
        out_w.append(w if w is None or keep is None else w & ~keep)
    out_a = {}
    for i, a in acts.items():
        keep = protection.input_mask(model, i)
        out_a[i] = a if keep is None else a & ~keep[None]
    return out_w, out_a


def unprotected_indices(model: Model, protection: Optional[Protection], i: int, idx: np.ndarray) -> np.ndarray:
    """The flat weight indices of layer i in `idx` that are not protected."""
    if protection is None or not protection.channels.get(i):
        return idx
    row_size = prod(model.layers[i].weight.shape[1:])
    return idx[~protection.protected_rows(model, i)[idx // row_size]]


def hidden_units(model: Model) -> list[tuple[int, int]]:
    """(weight layer, channel) of every neuron, in neuron order (docs/semantics.md §2)."""
    return [(nl.weight_index, c) for nl in model.neuron_layers for c in range(nl.channels)]


_COUNT = re.compile(r"([0-9]{1,9})(%?)")


def _count(text: str, total: int, spec: str) -> int:
    m = _COUNT.fullmatch(text.strip())
    if not m:
        raise InputError(f"--protect: {spec!r}: expected a count K or a share P% after the colon")
    k = round(int(m.group(1)) * total / 100) if m.group(2) else int(m.group(1))
    if m.group(2):
        if int(m.group(1)) > 100:
            raise InputError(f"--protect: {spec!r}: a share above 100%")
        k = max(1, k) if int(m.group(1)) > 0 else 0
    if not 1 <= k <= total:
        raise InputError(f"--protect: {spec!r}: {k} neurons, but the model has {total} (1..{total})")
    return k


def _group(model: Model, groups: dict, layer: int, channels: Sequence[int], where: str) -> None:
    if layer not in model.weight_indices:
        raise InputError(f"{where}: layer {layer} is not a weight layer (weight layers: "
                         f"{', '.join(map(str, model.weight_indices))}; see refbnn inspect)")
    n = model.layers[layer].weight.shape[0]
    bad = [c for c in channels if not 0 <= c < n]
    if bad:
        raise InputError(f"{where}: layer {layer} has channels 0..{n - 1}, not {bad[0]}")
    groups.setdefault(layer, set()).update(channels)


def _ints(text: str, where: str) -> list[int]:
    parts = [t.strip() for t in text.split(",")]
    if not parts or any(not (p.isascii() and p.isdigit()) or len(p) > 9 for p in parts):
        raise InputError(f"{where}: expected comma-separated channel numbers, got {text[:40]!r}")
    return [int(p) for p in parts]


def parse_protect(spec: str, model: Model, importance: Optional[Sequence[Fraction]] = None,
                  seed: int = 0) -> Protection:
    """The Protection a SPEC names (module docstring). `importance` (Pi per neuron) is needed
    for top-importance; `seed` chooses the random units."""
    spec = spec.strip()
    kind, colon, arg = spec.partition(":")
    groups: dict[int, set] = {}
    units = hidden_units(model)
    if spec == "all":
        for i in model.weight_indices:
            groups[i] = set(range(model.layers[i].weight.shape[0]))
    elif kind == "layer" and colon:
        if not (arg.isascii() and arg.isdigit()):
            raise InputError(f"--protect: {spec!r}: expected layer:L with L a weight layer index")
        i = int(arg)
        _group(model, groups, i, range(model.layers[i].weight.shape[0]) if i in model.weight_indices else [],
               f"--protect: {spec!r}")
    elif kind in ("top-importance", "random") and colon:
        if not units:
            raise InputError(f"--protect: {spec!r}: the model has no neurons")
        k = _count(arg, len(units), spec)
        if kind == "top-importance":
            if importance is None:
                raise InputError(f"--protect: {spec!r} needs Pi (Algorithm 1), which was not computed")
            chosen = sorted(range(len(units)), key=lambda n: (-importance[n], n))[:k]
        else:
            chosen = np.random.default_rng([seed, 0x50524f54]).permutation(len(units))[:k].tolist()
        for n in chosen:
            _group(model, groups, units[n][0], [units[n][1]], f"--protect: {spec!r}")
    elif re.fullmatch(r"[0-9]{1,4}:[0-9, ]+(;[0-9]{1,4}:[0-9, ]+)*", spec):
        for part in spec.split(";"):
            layer, _, chans = part.partition(":")
            _group(model, groups, int(layer), _ints(chans, f"--protect: {part!r}"), f"--protect: {part!r}")
    elif os.path.isfile(spec):
        doc = read_json(spec, 2**24)
        entries = doc.get("protect") if isinstance(doc, dict) else None
        if not isinstance(entries, list) or not entries:
            raise InputError(f"{spec}: protect: expected a non-empty list of {{\"layer\": L, \"channels\": [...]}}")
        for k, e in enumerate(entries):
            where = f"{spec}: protect[{k}]"
            if not isinstance(e, dict) or set(e) != {"layer", "channels"} or not isinstance(e["layer"], int) \
                    or not isinstance(e["channels"], list) or not all(isinstance(c, int) and not isinstance(c, bool)
                                                                      for c in e["channels"]):
                raise InputError(f"{where}: expected {{\"layer\": L, \"channels\": [n, ...]}} with integers")
            _group(model, groups, e["layer"], e["channels"], where)
    else:
        raise InputError(f"--protect: {spec[:60]!r}: expected L:n,n,..., layer:L, all, top-importance:K, "
                         "top-importance:P%, random:K, random:P% or a JSON file")
    return Protection({i: tuple(sorted(c)) for i, c in sorted(groups.items()) if c})


def describe(model: Model, protection: Protection) -> str:
    """One line: how many units and weight bits are protected, per layer."""
    parts = [f"weight layer {i}: {len(c)} of {model.layers[i].weight.shape[0]}" for i, c in protection.channels.items()]
    total = sum(len(model.layers[i].weight.bits) for i in model.weight_indices)
    return (f"{protection.units} units, {protection.weight_bits(model)} of {total} weight bits "
            f"({', '.join(parts) or 'none'})")
