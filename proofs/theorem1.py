"""Exhaustive checks of Theorem 1 and its exact form (proofs/theorem1.md).

Run on its own:  python -m proofs.theorem1 [--max-fan-in 8]
Each check enumerates *every* weight vector, input vector, threshold in the
reachable range, both polarities and every flip set, vectorised with NumPy, and
returns the counterexamples it found (none, for the true bounds). Each takes the
claimed bound as a parameter, so a test can show that a wrong bound is refuted.

The neuron's output is computed directly from its definition ((h > s) xor
polarity -1) before and after the flips; nothing here assumes the lemma it checks.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Bound = Callable[[np.ndarray], np.ndarray]


def hidden_bound(m: np.ndarray) -> np.ndarray:
    """Exact hidden-layer tolerance: floor((m - 1) / 4) flips, m = |2(h - s) - 1|."""
    return (m - 1) // 4


def first_layer_bound(z: int) -> Bound:
    """Theorem 1 with eq. 2: floor(T/2) = floor(m / (4Z)) flips."""
    return lambda m: m // (4 * z)


@dataclass
class Result:
    name: str
    cases: int = 0
    counterexamples: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return not self.counterexamples

    def add(self, text: str) -> None:
        if len(self.counterexamples) < 5:
            self.counterexamples.append(text)
        else:
            self.counterexamples[-1] = "... and more"


def sign_vectors(k: int) -> np.ndarray:
    """All 2^k vectors in {+1, -1}^k, as int64 [2^k, k]."""
    return np.array(list(itertools.product([1, -1], repeat=k)), dtype=np.int64).reshape(-1, k)


def flip_sets(k: int) -> tuple[np.ndarray, np.ndarray]:
    """All subsets of k positions as 0/1 rows [2^k, k], and their sizes."""
    s = np.array(list(itertools.product([0, 1], repeat=k)), dtype=np.int64).reshape(-1, k)
    return s, s.sum(axis=1)


def _outputs(h: np.ndarray, s: int, negative: bool) -> np.ndarray:
    return (h > s) ^ negative


def _changed(res: Result, h: np.ndarray, h_flip: np.ndarray, s: int, negative: bool) -> np.ndarray:
    """[cases, flip sets]: does the flip set change the output? Counts the cases checked."""
    changed = _outputs(h_flip, s, negative) != _outputs(h, s, negative)[:, None]
    res.cases += changed.size
    return changed


def _violation(changed: np.ndarray, sizes: np.ndarray, bound: np.ndarray):
    """The first (case, flip set) whose set is within the claimed bound yet changes the
    output, or None."""
    bad = changed & (sizes[None, :] <= bound[:, None])
    return tuple(np.argwhere(bad)[0]) if bad.any() else None


def check_hidden(k: int, bound: Bound = hidden_bound) -> Result:
    """Hidden neuron, fan-in k: every w, x in {+-1}^k, s in [-k-1, k], both polarities,
    every weight flip set. Claims: (1) no flip set of size <= bound(m) changes the
    output; (2) tightness: some set of size bound(m) + 1 changes it iff at least
    bound(m) + 1 summands agree with sign(g)."""
    res = Result(f"hidden, fan-in {k}")
    vecs = sign_vectors(k)
    w = np.repeat(vecs, len(vecs), axis=0)
    x = np.tile(vecs, (len(vecs), 1))
    sets, sizes = flip_sets(k)
    h = (w * x).sum(axis=1)
    # h after flipping the weights in each set: w'_j = -w_j on the set
    h_flip = (w * x) @ (1 - 2 * sets).T                         # [pairs, sets]
    for s in range(-k - 1, k + 1):
        g = 2 * (h - s) - 1
        m = np.abs(g)
        b = bound(m)
        agree = ((w * x) == np.sign(g)[:, None]).sum(axis=1)
        for negative in (False, True):
            changed = _changed(res, h, h_flip, s, negative)
            if (v := _violation(changed, sizes, b)) is not None:
                p, f = v
                res.add(f"w={w[p].tolist()} x={x[p].tolist()} s={s} polarity={-1 if negative else 1}: "
                        f"flips {np.flatnonzero(sets[f]).tolist()} change the output, bound {b[p]}")
            tight = (changed & (sizes[None, :] == b[:, None] + 1)).any(axis=1)
            wrong = tight != (agree >= b + 1)
            if wrong.any():
                p = np.flatnonzero(wrong)[0]
                res.add(f"w={w[p].tolist()} x={x[p].tolist()} s={s}: a flip set of size {b[p] + 1} "
                        f"{'does' if tight[p] else 'does not'} change the output, but {agree[p]} summands agree")
    return res


def check_input_flips(k: int, bound: Bound = hidden_bound) -> Result:
    """Hidden neuron, fan-in k: flips of weights *and* input bits together. No pair of
    sets (F_w, F_x) with |F_w| + |F_x| <= bound(m) changes the output (xnor symmetry)."""
    res = Result(f"weight + input flips, fan-in {k}")
    vecs = sign_vectors(k)
    w = np.repeat(vecs, len(vecs), axis=0)
    x = np.tile(vecs, (len(vecs), 1))
    sets, sizes = flip_sets(k)
    fw, fx = np.repeat(sets, len(sets), axis=0), np.tile(sets, (len(sets), 1))
    total = fw.sum(axis=1) + fx.sum(axis=1)
    h = (w * x).sum(axis=1)
    # w' x' = (w (1 - 2 fw)) (x (1 - 2 fx)), summed: both flipped explicitly
    h_flip = (w * x) @ ((1 - 2 * fw) * (1 - 2 * fx)).T
    for s in range(-k - 1, k + 1):
        b = bound(np.abs(2 * (h - s) - 1))
        changed = _changed(res, h, h_flip, s, False)
        if (v := _violation(changed, total, b)) is not None:
            p, f = v
            res.add(f"w={w[p].tolist()} x={x[p].tolist()} s={s}: weight flips {np.flatnonzero(fw[f]).tolist()} "
                    f"and input flips {np.flatnonzero(fx[f]).tolist()} change the output, bound {b[p]}")
    return res


def check_first_layer(k: int, z: int, signed: bool, bound: Bound | None = None) -> Result:
    """First-layer neuron, fan-in k, every x in {0..Z}^k (or {-Z..Z}^k), every w, every
    s in [-kZ-1, kZ], both polarities, every flip set. Claims: (1) no set of size
    <= floor(m/(4Z)) (Theorem 1 with eq. 2) changes the output; (2) exact: the smallest
    changing set has the least f with 4 S_f > m (S_f: sum of the f largest positive
    sign(g) w_j x_j), and there is none if no f qualifies."""
    bound = bound or first_layer_bound(z)
    res = Result(f"first layer, fan-in {k}, Z={z}, {'signed' if signed else 'unsigned'} inputs")
    values = range(-z, z + 1) if signed else range(0, z + 1)
    xs = np.array(list(itertools.product(values, repeat=k)), dtype=np.int64).reshape(-1, k)
    ws = sign_vectors(k)
    w = np.repeat(ws, len(xs), axis=0)
    x = np.tile(xs, (len(ws), 1))
    sets, sizes = flip_sets(k)
    h = (w * x).sum(axis=1)
    h_flip = (w * x) @ (1 - 2 * sets).T
    for s in range(-k * z - 1, k * z + 1):
        g = 2 * (h - s) - 1
        m = np.abs(g)
        b = bound(m)
        push = np.sort(np.maximum(np.sign(g)[:, None] * w * x, 0), axis=1)[:, ::-1]
        s_f = np.concatenate([np.zeros((len(h), 1), dtype=np.int64), np.cumsum(push, axis=1)], axis=1)
        reach = 4 * s_f > m[:, None]                     # f flips can change the output
        least = np.where(reach.any(axis=1), reach.argmax(axis=1), -1)
        for negative in (False, True):
            changed = _changed(res, h, h_flip, s, negative)
            if (v := _violation(changed, sizes, b)) is not None:
                p, f = v
                res.add(f"w={w[p].tolist()} x={x[p].tolist()} s={s}: flips {np.flatnonzero(sets[f]).tolist()} "
                        f"change the output, bound {b[p]}")
            smallest = np.where(changed.any(axis=1),
                                np.where(changed, sizes[None, :], k + 1).min(axis=1), -1)
            wrong = smallest != least
            if wrong.any():
                p = np.flatnonzero(wrong)[0]
                res.add(f"w={w[p].tolist()} x={x[p].tolist()} s={s}: smallest changing set {smallest[p]}, "
                        f"S_f formula says {least[p]}")
    return res


def check_pooled(k: int, bound: Bound = hidden_bound) -> Result:
    """conv -> maxpool -> threshold: four +-1 input vectors share the weights, h is the max
    of the four sums. No weight flip set of size <= bound(m), m from the pooled h,
    changes the output."""
    res = Result(f"pooled hidden, fan-in {k}")
    vecs = sign_vectors(k)
    quads = np.array(list(itertools.product(range(len(vecs)), repeat=4)))
    xq = vecs[quads]                                       # [Q, 4, k]
    sets, sizes = flip_sets(k)
    for w in vecs:
        h = (xq * w).sum(axis=2).max(axis=1)               # [Q]
        h_flip = ((xq * w)[:, :, None, :] * (1 - 2 * sets)[None, None]).sum(axis=3).max(axis=1)  # [Q, sets]
        for s in range(-k - 1, k + 1):
            b = bound(np.abs(2 * (h - s) - 1))
            changed = _changed(res, h, h_flip, s, False)
            if (v := _violation(changed, sizes, b)) is not None:
                q, f = v
                res.add(f"w={w.tolist()} inputs={xq[q].tolist()} s={s}: flips "
                        f"{np.flatnonzero(sets[f]).tolist()} change the pooled output, bound {b[q]}")
    return res


def all_checks(max_fan_in: int = 8) -> list[Result]:
    """Every exhaustive check, fan-in up to max_fan_in for hidden neurons."""
    out = [check_hidden(k) for k in range(1, max_fan_in + 1)]
    out += [check_input_flips(k) for k in range(1, min(max_fan_in, 5) + 1)]
    out += [check_first_layer(k, z, signed) for z in (1, 2, 3) for k in range(1, 5)
            for signed in (False, True)]
    out += [check_pooled(k) for k in range(1, 4)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Exhaustive checks of Theorem 1 (proofs/theorem1.md).")
    ap.add_argument("--max-fan-in", type=int, default=8, help="largest hidden fan-in (default 8)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    ok = True
    for res in all_checks(args.max_fan_in):
        print(f"{'holds ' if res.holds else 'FAILS '} {res.name:50s} {res.cases:>12,} cases")
        for c in res.counterexamples:
            print("   ", c)
        ok &= res.holds
    print(f"{'all checks hold' if ok else 'COUNTEREXAMPLES FOUND'} ({time.perf_counter() - start:.1f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
