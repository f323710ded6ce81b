"""
The margin of one neuron by hand
================================

A neuron's output flips when enough weight flips push its pre-activation h across
s + 1/2. The margin ``T = |h - s - 1/2|`` (eq. 1; eq. 2 divides it by Z in the first
layer) measures how far it is, and Theorem 1 says floor(T/2) flips are always
survived. In integers: the odd margin ``m = |2(h - s) - 1| = 2T``, `tolerated_flips(m)`
= floor(m/4) flips can never change the output, while `flips_to_change(m)` flips of
summands that agree with the output do.

Here we build one neuron, compute its margin by hand, then flip agreeing weights one
at a time and watch the output. Run it with ``python examples/margin_by_hand.py``.
"""
from fractions import Fraction

import numpy as np

from refbnn.engines.interpreter import Interpreter
from refbnn.semantics.margin import margin
from refbnn.semantics.model import Linear, Model, Threshold, Weight
from refbnn.semantics.theorem1 import flips_to_change, odd_margin, tolerated_flips

# %%
# One neuron
# ----------
# Six inputs of +-1 into a hidden-style neuron (Z = 1), all weights +1, threshold
# s = -3, then two class scores (+a, -a): class 0 while the neuron outputs +1.
model = Model.build((6,), 1, [Linear(Weight.from_array(np.ones((1, 6)))), Threshold((-3,)),
                              Linear(Weight.from_array([[1], [-1]]))])
x = [1, 1, 1, 1, 1, -1]                      # h = 5 - 1 = 4
clean = Interpreter(model)
h = clean.run(x).h[0][0]
t, m = margin(h, -3), odd_margin(h, -3)      # T = |4 + 3 - 1/2| = 13/2, m = 13
print(f"h = {h}, T = {t}, m = {m}: Theorem 1 promises {tolerated_flips(m)} flips are survived, "
      f"and {flips_to_change(m)} agreeing flips change the output")
assert t == Fraction(13, 2) and tolerated_flips(m) == 3 and flips_to_change(m) == 4

# %%
# Flip the weights one by one
# ---------------------------
# Each flip of a weight whose summand is +1 lowers h by 2. The output (class 0) holds
# while h > s = -3: for 3 flips (h = -2), and the 4th (h = -4) changes it.
mask = np.zeros((1, 6), dtype=bool)
hs = [h]
for flips in range(1, 6):
    mask[0, flips - 1] = True                # flip one more weight whose summand is +1
    run = clean.with_flips([mask, None]).run(x)
    hs.append(run.h[0][0])
    print(f"{flips} flips: h = {run.h[0][0]:3d}, class {run.prediction}")
    assert (run.prediction == 0) == (flips <= tolerated_flips(m))

# %%
# The picture
# -----------
# h after k flips, the threshold s + 1/2 it must stay above, and Theorem 1's bound.
import matplotlib.pyplot as plt  # noqa: E402

fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(range(len(hs)), hs, marker="o", label="h after k agreeing flips")
ax.axhline(-3 + 0.5, color="k", linestyle="--", label="s + 1/2: the output flips below")
ax.axvspan(-0.2, tolerated_flips(m) + 0.2, color="tab:green", alpha=0.15,
           label=f"Theorem 1: floor(T/2) = {tolerated_flips(m)} flips survived")
ax.set_xlabel("weight flips k")
ax.set_ylabel("pre-activation h")
ax.legend(loc="lower left", fontsize=8)
fig.tight_layout()
