"""
Theorem 1 by hand
=================

Theorem 1: a neuron whose margin is at least b survives any floor(b/2) weight flips.
The proof is two lines (each flip moves g = 2(h - s) - 1 by at most 4, and g is odd,
so floor(m/4) flips cannot reach its sign; docs/paper-to-code.md points to the whole
proof). Here we check it the slow way, on every case of a small neuron: every weight
vector and input of fan-in 6, every threshold, every set of flips, and count, for each
odd margin m, the fewest flips that change the output. In the first layer the inputs
are integers up to Z and one flip moves g by up to 4Z, so the bound becomes
floor(m / 4Z) (eq. 2's division by Z). Run it with ``python examples/theorem1_by_hand.py``.
"""
from itertools import combinations, product

import numpy as np

from refbnn.semantics.theorem1 import odd_margin, tolerated_flips

# %%
# Hidden layer: inputs of +-1
# ---------------------------
# Only the products w_j x_j matter, so a summand vector of +-1 stands for every (w, x).
# Flipping weight j negates summand j. For each summand vector and threshold s, we
# look for the smallest set of flips that changes the sign of g.
K = 6
fewest: dict[int, int] = {}                  # odd margin m -> fewest flips that change the output
for summands in product((1, -1), repeat=K):
    h = sum(summands)
    for s in range(-K - 1, K + 1):
        m = odd_margin(h, s)
        fires = h > s
        need = next((f for f in range(K + 1)
                     for flipped in combinations(range(K), f)
                     if (h - 2 * sum(summands[j] for j in flipped) > s) != fires), None)
        if need is not None:
            fewest[m] = min(fewest.get(m, K + 1), need)
for m in sorted(fewest):
    print(f"m = {m:2d}: Theorem 1 promises {tolerated_flips(m)} flips are survived; "
          f"the fewest that change the output: {fewest[m]}")
    assert fewest[m] == tolerated_flips(m) + 1    # the bound holds, and it is tight

# %%
# First layer: integer inputs up to Z
# -----------------------------------
# A flip of weight j moves h by 2|x_j| <= 2Z, so the promise is floor(m / 4Z) flips.
# Fan-in 3, Z = 3: every input in -3..3, every weight vector, every threshold.
K1, Z = 3, 3
violations, checked, fewest_first = 0, 0, {}
for w in product((1, -1), repeat=K1):
    for x in product(range(-Z, Z + 1), repeat=K1):
        h = int(np.dot(w, x))
        for s in range(-K1 * Z - 1, K1 * Z + 1):
            m = odd_margin(h, s)
            fires = h > s
            for f in range(K1 + 1):
                for flipped in combinations(range(K1), f):
                    h_f = h - 2 * sum(w[j] * x[j] for j in flipped)
                    checked += 1
                    if (h_f > s) != fires:
                        violations += f <= tolerated_flips(m, Z)
                        fewest_first[m] = min(fewest_first.get(m, K1 + 1), f)
print(f"first layer, fan-in {K1}, Z = {Z}: {checked} (input, threshold, flip set) cases, "
      f"{violations} violate floor(m / 4Z)")
assert violations == 0
assert all(fewest_first[m] == tolerated_flips(m, Z) + 1 for m in fewest_first)   # tight here too

# %%
# The picture
# -----------
# The promise floor(m/4) against the fewest flips found by enumeration, hidden layer;
# and floor(m/4Z) in the first layer. Both bounds are tight: one more flip changes the
# output of some neuron with that margin (in the first layer, one whose flipped taps
# read Z).
import matplotlib.pyplot as plt  # noqa: E402

ms = sorted(fewest)
ms1 = sorted(fewest_first)
fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
a.step(ms, [tolerated_flips(m) for m in ms], where="mid", label="floor(m/4): survived")
a.plot(ms, [fewest[m] for m in ms], "o", label="fewest flips that change it")
a.set_xlabel("odd margin m = 2T")
a.set_ylabel("flips")
a.set_title(f"hidden layer, fan-in {K}")
a.legend(fontsize=8)
b.step(ms1, [tolerated_flips(m, Z) for m in ms1], where="mid", label=f"floor(m/4Z), Z = {Z}")
b.plot(ms1, [fewest_first[m] for m in ms1], "o", label="fewest flips that change it")
b.set_xlabel("odd margin m")
b.set_title(f"first layer, fan-in {K1}")
b.legend(fontsize=8)
fig.tight_layout()
