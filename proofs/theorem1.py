"""Exhaustive checks of Theorem 1, its exact form and the network corollary (proofs/theorem1.md).

Run on its own:  python -m proofs.theorem1 [--max-fan-in 12]

Each check enumerates every *distinct* case of one statement, vectorised with NumPy,
and returns the counterexamples it found (none, for the true bounds). The claimed
bound is a parameter, so a test can show that a wrong bound is refuted. The bounds
checked by default are refbnn's own functions, `refbnn.semantics.theorem1`
(`tolerated_flips`, `flips_to_change`, `odd_margin`): the very code that `certify`,
the fast engine and the flip probability use.

What is enumerated, and why it covers the statement (the reductions are proved in
proofs/theorem1.md, "What the checker enumerates"):
- hidden neuron: every product vector p = w*x in {+-1}^k (only the products enter h,
  and flipping weight j negates p_j whatever w_j and x_j are), every threshold s in
  [-k-1, k] (every position of s relative to the reachable h, both extremes
  included), every flip set;
- weight + input flips: every p, every pair of weight and input flip sets;
- first layer: every w in {+-1}^k and x in {0..Z}^k or {-Z..Z}^k (here the
  products are not all alike), every s in [-kZ-1, kZ], every flip set;
- pooled (conv -> maxpool -> threshold), hidden and first layer: four candidate
  input vectors sharing the weights;
- the network corollary: every 2-input, 2-neuron, 2-class network and every input,
  against every flip pattern of at most k flips per unit.

Polarity -1 is not enumerated: its output is the negation of polarity +1's, so a set
of flips changes one iff it changes the other. `polarity_is_vacuous` checks that
identity on every case the other checks build.

The neuron's output is computed directly from its definition ((h > s) xor polarity -1)
before and after the flips; nothing here assumes the lemma it checks.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from refbnn.semantics.theorem1 import odd_margin, signed_margin, tolerated_flips

Bound = Callable[[np.ndarray], np.ndarray]


def hidden_bound(m: np.ndarray) -> np.ndarray:
    """Exact hidden-layer tolerance (refbnn's `tolerated_flips`): floor(m / 4) = floor((m - 1)/4)."""
    return tolerated_flips(m)


def first_layer_bound(z: int) -> Bound:
    """Theorem 1 with eq. 2 (refbnn's `tolerated_flips(m, Z)`): floor(m / 4Z) flips."""
    return lambda m: tolerated_flips(m, z)


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


def fires(h: np.ndarray, s: int, negative: bool = False) -> np.ndarray:
    """The threshold's output as a bool (+1 = True), by definition: h > s, xor polarity -1."""
    return (h > s) ^ negative


def polarity_is_vacuous(h: np.ndarray, s: int) -> bool:
    """Polarity -1 outputs the negation of polarity +1 on every h: `changed` is the same."""
    return bool((fires(h, s, True) == ~fires(h, s, False)).all())


def _changed(res: Result, h: np.ndarray, h_flip: np.ndarray, s: int) -> np.ndarray:
    """[cases, flip sets]: does the flip set change the output? Counts the cases checked."""
    if not polarity_is_vacuous(h, s):
        res.add(f"s={s}: polarity -1 is not the negation of polarity +1")
    changed = fires(h_flip, s) != fires(h, s)[:, None]
    res.cases += changed.size
    return changed


def _violation(changed: np.ndarray, sizes: np.ndarray, bound: np.ndarray):
    """The first (case, flip set) whose set is within the claimed bound yet changes the
    output, or None."""
    bad = changed & (sizes[None, :] <= bound[:, None])
    return tuple(np.argwhere(bad)[0]) if bad.any() else None


def check_hidden(k: int, bound: Bound = hidden_bound) -> Result:
    """Hidden neuron, fan-in k: every product vector p in {+-1}^k, s in [-k-1, k], every
    weight flip set. Claims: (1) no flip set of size <= bound(m) changes the output;
    (2) tightness: some set of size bound(m) + 1 changes it iff at least bound(m) + 1
    summands agree with sign(g). Cases: 2^k * 2^k * (2k + 2)."""
    res = Result(f"hidden, fan-in {k}")
    p = sign_vectors(k)
    sets, sizes = flip_sets(k)
    h = p.sum(axis=1)
    h_flip = p @ (1 - 2 * sets).T                              # [products, sets]
    for s in range(-k - 1, k + 1):
        g = signed_margin(h, s)
        b = bound(odd_margin(h, s))
        agree = (p == np.sign(g)[:, None]).sum(axis=1)
        changed = _changed(res, h, h_flip, s)
        if (v := _violation(changed, sizes, b)) is not None:
            c, f = v
            res.add(f"p={p[c].tolist()} s={s}: flips {np.flatnonzero(sets[f]).tolist()} "
                    f"change the output, bound {b[c]}")
        tight = (changed & (sizes[None, :] == b[:, None] + 1)).any(axis=1)
        wrong = tight != (agree >= b + 1)
        if wrong.any():
            c = np.flatnonzero(wrong)[0]
            res.add(f"p={p[c].tolist()} s={s}: a flip set of size {b[c] + 1} "
                    f"{'does' if tight[c] else 'does not'} change the output, but {agree[c]} summands agree")
    return res


def check_input_flips(k: int, bound: Bound = hidden_bound) -> Result:
    """Hidden neuron, fan-in k: flips of weights *and* input bits together. No pair of
    sets (F_w, F_x) with |F_w| + |F_x| <= bound(m) changes the output (xnor symmetry).
    Cases: 2^k * 4^k * (2k + 2)."""
    res = Result(f"weight + input flips, fan-in {k}")
    p = sign_vectors(k)
    sets, _ = flip_sets(k)
    fw, fx = np.repeat(sets, len(sets), axis=0), np.tile(sets, (len(sets), 1))
    total = fw.sum(axis=1) + fx.sum(axis=1)
    h = p.sum(axis=1)
    # (w (1 - 2 fw)) (x (1 - 2 fx)) = p (1 - 2 fw)(1 - 2 fx): both flips applied explicitly
    h_flip = p @ ((1 - 2 * fw) * (1 - 2 * fx)).T
    _check_bound(res, h, h_flip, total, range(-k - 1, k + 1), bound,
                 lambda c, f, s, b: f"p={p[c].tolist()} s={s}: weight flips {np.flatnonzero(fw[f]).tolist()} "
                                    f"and input flips {np.flatnonzero(fx[f]).tolist()} change the output, bound {b}")
    return res


def _check_bound(res: Result, h: np.ndarray, h_flip: np.ndarray, sizes: np.ndarray, s_range: range,
                 bound: Bound, describe) -> None:
    """Claim (1) alone, at every threshold s: no flip set of size <= bound(m) changes the
    output. `describe(case, set, s, bound)` words a counterexample."""
    for s in s_range:
        b = bound(odd_margin(h, s))
        if (v := _violation(_changed(res, h, h_flip, s), sizes, b)) is not None:
            c, f = v
            res.add(describe(c, f, s, b[c]))


def _first_layer_inputs(k: int, z: int, signed: bool) -> np.ndarray:
    values = range(-z, z + 1) if signed else range(0, z + 1)
    return np.array(list(itertools.product(values, repeat=k)), dtype=np.int64).reshape(-1, k)


def check_first_layer(k: int, z: int, signed: bool, bound: Bound | None = None) -> Result:
    """First-layer neuron, fan-in k, every x in {0..Z}^k (or {-Z..Z}^k), every w, every
    s in [-kZ-1, kZ], every flip set. Claims: (1) no set of size <= floor(m/(4Z))
    (Theorem 1 with eq. 2) changes the output; (2) exact: the smallest changing set has
    the least f with 4 S_f > m (S_f: sum of the f largest positive sign(g) w_j x_j), and
    there is none if no f qualifies. Cases: 2^k * |x values|^k * 2^k * (2kZ + 2)."""
    bound = bound or first_layer_bound(z)
    res = Result(f"first layer, fan-in {k}, Z={z}, {'signed' if signed else 'unsigned'} inputs")
    xs = _first_layer_inputs(k, z, signed)
    ws = sign_vectors(k)
    w = np.repeat(ws, len(xs), axis=0)
    x = np.tile(xs, (len(ws), 1))
    sets, sizes = flip_sets(k)
    h = (w * x).sum(axis=1)
    h_flip = (w * x) @ (1 - 2 * sets).T
    for s in range(-k * z - 1, k * z + 1):
        g = signed_margin(h, s)
        m = odd_margin(h, s)
        b = bound(m)
        push = np.sort(np.maximum(np.sign(g)[:, None] * w * x, 0), axis=1)[:, ::-1]
        s_f = np.concatenate([np.zeros((len(h), 1), dtype=np.int64), np.cumsum(push, axis=1)], axis=1)
        reach = 4 * s_f > m[:, None]                     # at most f flips can change the output
        least = np.where(reach.any(axis=1), reach.argmax(axis=1), -1)
        changed = _changed(res, h, h_flip, s)
        if (v := _violation(changed, sizes, b)) is not None:
            c, f = v
            res.add(f"w={w[c].tolist()} x={x[c].tolist()} s={s}: flips {np.flatnonzero(sets[f]).tolist()} "
                    f"change the output, bound {b[c]}")
        smallest = np.where(changed.any(axis=1), np.where(changed, sizes[None, :], k + 1).min(axis=1), -1)
        wrong = smallest != least
        if wrong.any():
            c = np.flatnonzero(wrong)[0]
            res.add(f"w={w[c].tolist()} x={x[c].tolist()} s={s}: smallest changing set {smallest[c]}, "
                    f"S_f formula says {least[c]}")
    return res


def _check_pooled(res: Result, w: np.ndarray, xq: np.ndarray, s_range: range, bound: Bound) -> None:
    """Four candidates xq [Q, 4, k] share the weights w [k]; h is the max of the four sums."""
    k = len(w)
    sets, sizes = flip_sets(k)
    h = (xq * w).sum(axis=2).max(axis=1)                                            # [Q]
    h_flip = np.einsum("qck,sk->qsc", xq * w, 1 - 2 * sets).max(axis=2)            # [Q, sets]
    _check_bound(res, h, h_flip, sizes, s_range, bound,
                 lambda q, f, s, b: f"w={w.tolist()} inputs={xq[q].tolist()} s={s}: flips "
                                    f"{np.flatnonzero(sets[f]).tolist()} change the pooled output, bound {b}")


def check_pooled(k: int, bound: Bound = hidden_bound) -> Result:
    """conv -> maxpool -> threshold in a hidden layer: no weight flip set of size <=
    bound(m), m from the pooled h, changes the output. The weights are all +1 without
    loss of generality (x -> w*x is a bijection of the quads). Cases: 2^(4k) * 2^k * (2k + 2)."""
    res = Result(f"pooled hidden, fan-in {k}")
    vecs = sign_vectors(k)
    quads = np.array(list(itertools.product(range(len(vecs)), repeat=4)))
    _check_pooled(res, np.ones(k, dtype=np.int64), vecs[quads], range(-k - 1, k + 1), bound)
    return res


def check_first_layer_pooled(k: int, z: int, signed: bool, bound: Bound | None = None) -> Result:
    """conv -> maxpool -> threshold in the first layer: every w, every quad of integer
    input vectors, s in [-kZ-1, kZ]; no set of size <= floor(m/(4Z)) changes the output."""
    bound = bound or first_layer_bound(z)
    res = Result(f"pooled first layer, fan-in {k}, Z={z}, {'signed' if signed else 'unsigned'} inputs")
    xs = _first_layer_inputs(k, z, signed)
    quads = np.array(list(itertools.product(range(len(xs)), repeat=4)))
    for w in sign_vectors(k):
        _check_pooled(res, w, xs[quads], range(-k * z - 1, k * z + 1), bound)
    return res


def _predict(scores: np.ndarray) -> np.ndarray:
    """The class with the largest score, ties to the smallest index (np.argmax: first max)."""
    return np.argmax(scores, axis=-1)


def _per_unit_patterns(units: int, fan_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Every flip pattern over `units` units of `fan_in` weights: [P, units, fan_in] 0/1,
    and the largest number of flips in any one unit."""
    sets, _ = flip_sets(fan_in)
    idx = np.array(list(itertools.product(range(len(sets)), repeat=units)))
    pats = sets[idx]
    return pats, pats.sum(axis=2).max(axis=1)


def certified_k_of(w1, s1, w2, x, z: int) -> np.ndarray:
    """The corollary's certified k for 2-input, 2-neuron, 2-class networks, vectorised:
    min(tolerated_flips(m, Z) over the neurons (first layer), the score bound with the tie
    rule and M = 1), where any term reaching its unit's fan-in 2 becomes the cap 2."""
    cap = 2
    h1 = np.einsum("cnk,ck->cn", w1, x)
    neuron = tolerated_flips(odd_margin(h1, s1), z)
    neuron = np.where(neuron >= 2, cap, neuron).min(axis=1)
    a = np.where(h1 > s1, 1, -1)
    scores = np.einsum("cnk,ck->cn", w2, a)
    c = _predict(scores)
    top, other = scores[np.arange(len(c)), c], scores[np.arange(len(c)), 1 - c]
    gap = np.where(1 - c < c, top - other - 1, top - other)   # class 0 beats class 1 on a tie
    score = gap // 4
    score = np.where(score >= 2, cap, score)
    return np.minimum(np.minimum(neuron, score), cap)


def check_corollary(z: int, k_fn=certified_k_of) -> Result:
    """Every network 2 inputs (|x| <= Z) -> 2 neurons (s in [-2Z-1, 2Z]) -> 2 classes and
    every input, against every pattern of flips in the 4 units' weights: no pattern with at
    most k flips in each unit, k the certified k, changes the prediction."""
    res = Result(f"network corollary, 2-2-2, Z={z}")
    vecs = sign_vectors(4).reshape(-1, 2, 2)
    xs = _first_layer_inputs(2, z, signed=True)
    srange = range(-2 * z - 1, 2 * z + 1)
    ss = np.array(list(itertools.product(srange, repeat=2)), dtype=np.int64)
    grid = np.array(list(itertools.product(range(len(vecs)), range(len(ss)), range(len(vecs)),
                                           range(len(xs)))))
    w1, s1, w2, x = vecs[grid[:, 0]], ss[grid[:, 1]], vecs[grid[:, 2]], xs[grid[:, 3]]
    k = k_fn(w1, s1, w2, x, z)
    clean = _predict(np.einsum("cnk,ck->cn", w2, np.where(np.einsum("cnk,ck->cn", w1, x) > s1, 1, -1)))
    pats, most = _per_unit_patterns(4, 2)
    for pat, m in zip(pats, most):
        keep = k >= m                      # only configurations certified for this many flips
        if not keep.any():
            continue
        f1, f2 = 1 - 2 * pat[:2], 1 - 2 * pat[2:]
        a = np.where(np.einsum("cnk,ck->cn", w1[keep] * f1, x[keep]) > s1[keep], 1, -1)
        pred = _predict(np.einsum("cnk,ck->cn", w2[keep] * f2, a))
        res.cases += int(keep.sum())
        bad = np.flatnonzero(pred != clean[keep])
        if bad.size:
            c = np.flatnonzero(keep)[bad[0]]
            res.add(f"w1={w1[c].tolist()} s1={s1[c].tolist()} w2={w2[c].tolist()} x={x[c].tolist()}: "
                    f"certified k={k[c]}, flips {pat.tolist()} change the prediction")
    return res


def all_checks(max_fan_in: int = 12) -> list[Result]:
    """Every exhaustive check, fan-in up to max_fan_in for hidden neurons."""
    out = [check_hidden(k) for k in range(1, max_fan_in + 1)]
    out += [check_input_flips(k) for k in range(1, min(max_fan_in, 6) + 1)]
    out += [check_first_layer(k, z, signed) for z in (1, 2, 3) for k in range(1, 5)
            for signed in (False, True)]
    out += [check_pooled(k) for k in range(1, min(max_fan_in, 4) + 1)]
    out += [check_first_layer_pooled(k, z, signed) for z in (1, 2) for k in (1, 2)
            for signed in (False, True)]
    out += [check_corollary(z) for z in (1, 2)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Exhaustive checks of Theorem 1 (proofs/theorem1.md).")
    ap.add_argument("--max-fan-in", type=int, default=12, help="largest hidden fan-in (default 12)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    ok = True
    for res in all_checks(args.max_fan_in):
        print(f"{'holds ' if res.holds else 'FAILS '} {res.name:55s} {res.cases:>14,} cases")
        for c in res.counterexamples:
            print("   ", c)
        ok &= res.holds
    print(f"{'all checks hold' if ok else 'COUNTEREXAMPLES FOUND'} ({time.perf_counter() - start:.1f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
