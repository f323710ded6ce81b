"""The paper's Table III (a) and (b), transcribed once: Buschjäger et al., "Bit Error
Tolerance Metrics for Binarized Neural Networks" (2021), Table III, Fashion-MNIST, ten
repetitions per cell, training BERs 0, 1, 5, 10, 20 and 30%.

Each entry is the printed text "mean (a,b)" exactly as the paper prints it, bold marks
dropped, so that `tests/test_paper_table3.py` can compare it with the paper character for
character; `paper_value` parses it. Two things about the printed table, kept as printed:

- The caption says the brackets hold (VAR(Pi)_max, VAR(Pi)_min) and (T_min, T_max), but
  every T-bar bracket is printed larger first as well. refbnn reads each bracket as the
  range [min(a, b), max(a, b)].
- Some entries are inconsistent: fc-8 at 30% prints VAR(Pi) 0.0203 with range
  (0.00370, 0.000796), a mean outside its own range (likely 0.00203). `PaperValue.consistent`
  says so, and the report shows such cells as printed, marked.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

SOURCE = ("Buschjäger, Chen, Chen, Günzel, Morik, Novkin, Pfahler, Yayla: Bit Error Tolerance Metrics for "
          "Binarized Neural Networks (2021), Table III (a) FC and (b) CNN, Fashion-MNIST")
BERS = (0.0, 0.01, 0.05, 0.1, 0.2, 0.3)
METRICS = ("var_importance", "T_bar")      # the paper's Pi-bar (mean VAR(Pi)) and T-bar

TABLE3: dict[str, dict[int, dict[str, tuple[str, ...]]]] = {
    "fc": {
        8: {
            "var_importance": (
                "0.0128 (0.0222,0.00795)",
                "0.00983 (0.0148,0.00473)",
                "0.00402 (0.00631,0.00153)",
                "0.00239 (0.00409,0.00146)",
                "0.00149 (0.00265,0.000627)",
                "0.0203 (0.00370,0.000796)",
            ),
            "T_bar": (
                "0.228 (0.245,0.210)",
                "0.216 (0.261,0.183)",
                "0.226 (0.240,0.205)",
                "0.259 (0.284,0.217)",
                "0.325 (0.369,0.260)",
                "0.395 (0.493,0.342)",
            ),
        },
        16: {
            "var_importance": (
                "0.000670 (0.00107,0.000332)",
                "0.000700 (0.00162,0.000351)",
                "0.000488 (0.000714,0.000323)",
                "0.000601 (0.000918,0.000393)",
                "0.000866 (0.00113,0.000502)",
                "0.00103 (0.00152,0.000694)",
            ),
            "T_bar": (
                "0.274 (0.295,0.238)",
                "0.270 (0.301,0.241)",
                "0.300 (0.325,0.262)",
                "0.314 (0.336,0.292)",
                "0.372 (0.398,0.328)",
                "0.446 (0.525,0.401)",
            ),
        },
        32: {
            "var_importance": (
                "5.32e-5 (0.000174,1.97e-05)",
                "3.66e-5 (5.31e-05,2.43e-05)",
                "3.76e-5 (4.980e-05,2.36e-05)",
                "5.40e-5 (9.0198e-05,3.35e-05)",
                "2.50e-4 (0.000305,0.000176)",
                "6.50e-4 (0.000770,0.000464)",
            ),
            "T_bar": (
                "0.338 (0.372,0.308)",
                "0.342 (0.353,0.311)",
                "0.347 (0.373,0.325)",
                "0.376 (0.388,0.364)",
                "0.434 (0.448,0.413)",
                "0.511 (0.531,0.487)",
            ),
        },
        64: {
            "var_importance": (
                "8.60e-06 (1.37e-05,4.46e-06)",
                "1.16e-05 (1.82e-05,8.47e-06)",
                "1.25e-05 (1.57e-05,9.75e-06)",
                "1.52e-05 (1.99e-05,1.24e-05)",
                "4.59e-05 (5.40e-05,3.64e-05)",
                "0.000339 (0.000419,0.000252)",
            ),
            "T_bar": (
                "0.413 (0.423,0.405)",
                "0.419 (0.429,0.407)",
                "0.433 (0.446,0.418)",
                "0.444 (0.455,0.428)",
                "0.490 (0.506,0.480)",
                "0.596 (0.605,0.587)",
            ),
        },
        128: {
            "var_importance": (
                "3.27e-06 (5.07e-06,2.23e-06)",
                "5.35e-06 (6.32e-06,4.50e-06)",
                "6.98e-06 (8.00e-06,5.82e-06)",
                "8.25e-06 (9.90e-06,7.04e-06)",
                "1.59e-05 (1.79e-05,1.36e-05)",
                "9.22e-05 (0.000111,8.16e-05)",
            ),
            "T_bar": (
                "0.502 (0.509,0.491)",
                "0.508 (0.523,0.498)",
                "0.519 (0.528,0.510)",
                "0.532 (0.539,0.525)",
                "0.558 (0.566,0.550)",
                "0.647 (0.658,0.638)",
            ),
        },
    },
    "cnn": {
        8: {
            "var_importance": (
                "0.000991 (0.00272,0.000474)",
                "0.000924 (0.00162,0.000510)",
                "0.000662 (0.00114,0.000406)",
                "0.000827 (0.00126,0.000547)",
                "0.000867 (0.00154,0.000531)",
                "0.00107 (0.00175,0.000727)",
            ),
            "T_bar": (
                "0.341 (0.352,0.333)",
                "0.344 (0.352,0.329)",
                "0.359 (0.370,0.351)",
                "0.379 (0.390,0.369)",
                "0.439 (0.451,0.423)",
                "0.540 (0.548,0.519)",
            ),
        },
        16: {
            "var_importance": (
                "7.15e-05 (0.000119,4.50e-05)",
                "6.03e-05 (7.90e-05,4.89e-05)",
                "6.16e-05 (8.71e-05,5.03e-05)",
                "6.49e-05 (8.53e-05,5.05e-05)",
                "0.000151 (0.000232,0.000116)",
                "0.00048 (0.000650,0.000404)",
            ),
            "T_bar": (
                "0.414 (0.418,0.411)",
                "0.418 (0.424,0.411)",
                "0.434 (0.440,0.429)",
                "0.450 (0.457,0.446)",
                "0.492 (0.502,0.481)",
                "0.574 (0.591,0.554)",
            ),
        },
        32: {
            "var_importance": (
                "1.32e-05 (2.26e-05,7.60e-06)",
                "1.26e-05 (1.76e-05,1.04e-05)",
                "1.19e-05 (1.42e-05,1.06e-05)",
                "1.40e-05 (1.77e-05,1.03e-05)",
                "3.0e-05 (3.62e-05,2.27e-05)",
                "0.000184 (0.000259,0.000135)",
            ),
            "T_bar": (
                "0.485 (0.489,0.479)",
                "0.489 (0.494,0.484)",
                "0.507 (0.510,0.500)",
                "0.523 (0.526,0.520)",
                "0.550 (0.555,0.541)",
                "0.603 (0.611,0.593)",
            ),
        },
        64: {
            "var_importance": (
                "4.02e-06 (5.71e-06,2.85e-06)",
                "5.19e-06 (5.98e-06,4.45e-06)",
                "5.71e-06 (6.92e-06,4.96e-06)",
                "6.24e-06 (6.70e-06,5.78e-06)",
                "1.06e-05 (1.22e-05,9.47e-06)",
                "4.29e-05 (5.63e-05,3.64e-05)",
            ),
            "T_bar": (
                "0.546 (0.549,0.545)",
                "0.552 (0.555,0.549)",
                "0.569 (0.571,0.566)",
                "0.589 (0.590,0.586)",
                "0.608 (0.611,0.600)",
                "0.644 (0.647,0.640)",
            ),
        },
    },
}


@dataclass(frozen=True)
class PaperValue:
    """One printed cell: the mean over ten repetitions and the range of the ten values."""

    mean: float
    low: float
    high: float
    printed: str

    @property
    def consistent(self) -> bool:
        """The printed mean lies within the printed range."""
        return self.low <= self.mean <= self.high

    def contains(self, v: float) -> bool:
        return self.low <= v <= self.high


_CELL = re.compile(r"^([0-9.e+-]+) \(([0-9.e+-]+),([0-9.e+-]+)\)$")


def paper_value(family: str, size: int, ber: float, metric: str) -> PaperValue | None:
    """The paper's cell for the family ("fc", "cnn"), first-layer size, training BER and
    metric ("var_importance" or "T_bar"); None where the paper has no such cell."""
    rows = TABLE3.get(family, {}).get(size)
    if rows is None or metric not in rows or not any(abs(ber - b) < 1e-12 for b in BERS):
        return None
    printed = rows[metric][[abs(ber - b) < 1e-12 for b in BERS].index(True)]
    m = _CELL.match(printed)
    if m is None:
        raise ValueError(f"Table III {family}-{size} {metric} at {ber:g}: cannot read {printed!r}")
    mean, a, b = (float(g) for g in m.groups())
    return PaperValue(mean, min(a, b), max(a, b), printed)
