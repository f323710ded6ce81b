"""The margin metric T and Theorem 1 on one neuron you can check by hand.

    python examples/margin_by_hand.py

A neuron's output flips when enough weight flips push h across s + 1/2.
T = |h - s - 1/2| measures how far it is; Theorem 1 says floor(T/2) flips are
always survived. In integers: the odd margin m = |2(h - s) - 1| = 2T, and
`tolerated_flips(m)` = floor(m/4) flips can never change the output, while
`flips_to_change(m)` flips of summands that agree with the output do.
Here we flip agreeing weights one at a time and watch the output.
"""
from fractions import Fraction

import numpy as np

from refbnn.engines.interpreter import Interpreter
from refbnn.semantics.margin import margin
from refbnn.semantics.model import Linear, Model, Threshold, Weight
from refbnn.semantics.theorem1 import flips_to_change, odd_margin, tolerated_flips

# 6 inputs of +-1 in a hidden-style neuron (Z = 1), all weights +1, threshold s = -3,
# then two class scores (+a, -a): class 0 while the neuron outputs +1.
model = Model.build((6,), 1, [Linear(Weight.from_array(np.ones((1, 6)))), Threshold((-3,)),
                              Linear(Weight.from_array([[1], [-1]]))])
x = [1, 1, 1, 1, 1, -1]                      # h = 5 - 1 = 4
clean = Interpreter(model)
h = clean.run(x).h[0][0]
t, m = margin(h, -3), odd_margin(h, -3)      # T = |4 + 3 - 1/2| = 13/2, m = 13
print(f"h = {h}, T = {t}, m = {m}: Theorem 1 promises {tolerated_flips(m)} flips are survived, "
      f"and {flips_to_change(m)} agreeing flips change the output")

mask = np.zeros((1, 6), dtype=bool)
for flips in range(1, 6):
    mask[0, flips - 1] = True                # flip one more weight whose summand is +1
    run = clean.with_flips([mask, None]).run(x)
    print(f"{flips} flips: h = {run.h[0][0]:3d}, class {run.prediction}")
    # each flip lowers h by 2: the output (class 0) holds while h > -3, i.e. for 3 flips
    assert (run.prediction == 0) == (flips <= tolerated_flips(m))
assert t == Fraction(13, 2) and tolerated_flips(m) == 3 and flips_to_change(m) == 4
