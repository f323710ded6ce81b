"""`--input`: how the imported graph's float input u is made from refbnn's integer data x
(docs/semantics.md §10.2). Every form is an affine map u = A x + B per input channel."""
from __future__ import annotations

import re

import numpy as np

_NUM = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?"
_VALUES = rf"(?:{_NUM}|\[{_NUM}(?:,{_NUM})*\])"
_NORMALISED = re.compile(rf"\((x|x/Z)-({_VALUES})\)/({_VALUES})")

FORMS = ("x", "x/Z", "2x/Z-1", "(x/Z-M)/S", "(x-M)/S")


def _values(text: str, channels: int, option: str) -> np.ndarray:
    vals = np.array([float(t) for t in text.strip("[]").split(",")], dtype=np.float64)
    if len(vals) not in (1, channels):
        raise ValueError(f"{option}: {len(vals)} values for {channels} input channels")
    if not np.all(np.isfinite(vals)):
        raise ValueError(f"{option}: values must be finite")
    return np.float64(vals[0]) if len(vals) == 1 else vals


def parse_input_map(text: str, z: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) of u = A x + B for one of FORMS; M and S are numbers or per-channel lists [m0,m1,m2].
    For example "2x/Z-1" with Z = 255 is A = 2/255, B = -1."""
    t = text.replace(" ", "")
    if t == "x":
        return np.float64(1.0), np.float64(0.0)
    if t == "x/Z":
        return np.float64(1.0 / z), np.float64(0.0)
    if t == "2x/Z-1":
        return np.float64(2.0 / z), np.float64(-1.0)
    m = _NORMALISED.fullmatch(t)
    if m:
        mean = _values(m.group(2), channels, "--input")
        std = _values(m.group(3), channels, "--input")
        if np.any(std == 0):
            raise ValueError("--input: S must not be 0")
        base = 1.0 / z if m.group(1) == "x/Z" else 1.0
        return base / std, -mean / std
    raise ValueError(f"--input: {text[:60]!r} is not one of {', '.join(FORMS)} "
                     "(M and S: numbers, or one per channel as [m0,m1,m2])")
