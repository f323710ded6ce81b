"""Theorem 1 in integers: the odd margin and the flips a neuron tolerates.

proofs/theorem1.md states and proves both functions; `python -m proofs.theorem1`
checks these very functions by enumeration. Everything that reasons about how far
a pre-activation is from its threshold (eq. 1 and 2, the fast T counting,
Algorithm 1's sparse shortcut, `certify`, the exact flip probability) goes
through here, so the theorem has one home.

Both functions accept Python ints or integer NumPy arrays (the operations are
the same), so the reference and the fast engine share them.
"""
from __future__ import annotations


def signed_margin(h, s):
    """g = 2(h - s) - 1: odd, positive iff h > s (the output of polarity +1 is +1).

    The decision boundary of the threshold lies at h = s + 1/2 (docs/semantics.md §2.3),
    and g = 2(h - s - 1/2) is twice the signed distance to it."""
    return 2 * (h - s) - 1


def odd_margin(h, s):
    """m = |2(h - s) - 1| = 2 |h - s - 1/2|: twice the margin T of eq. 1 (an odd integer).

    In the first weight layer T of eq. 2 is m / (2Z)."""
    return abs(signed_margin(h, s))


def tolerated_flips(m, Z: int = 1):
    """floor(T/2) = floor(m / 4Z): the weight flips that can never change the output.

    Hidden layer (Z = 1): each flip moves h by at most 2, so g by at most 4; m is odd, so
    floor(m/4) = floor((m - 1)/4), and that many flips move g by at most m - 1 < m: the
    sign of g survives (proofs/theorem1.md, "Exact form"). First layer: each flip moves h
    by at most 2Z, so g by at most 4Z, and floor(m/4Z) flips move it by at most m - 1.
    Tight in hidden layers when enough summands agree with the output (proofs/)."""
    return m // (4 * Z)


def flips_to_change(m):
    """f* + 1 = floor((m - 1)/4) + 1: the fewest flips of a hidden neuron's weights (or
    binary inputs) that can change its output, when that many summands agree with it."""
    return tolerated_flips(m) + 1
