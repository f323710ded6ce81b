"""The margin metric T on a two-neuron network you can check by hand.

    python examples/margin_by_hand.py

A neuron's output flips when enough weight flips push h across s + 1/2.
T = |h - s - 1/2| measures how far it is; Theorem 1 says floor(T/2) flips are
always survived. Here we flip weights one at a time and watch the output.
"""
from fractions import Fraction

import numpy as np

from refbnn.engines.interpreter import Interpreter
from refbnn.semantics.margin import margin
from refbnn.semantics.model import Linear, Model, Threshold, Weight

# 6 inputs of +-1 in a hidden-style neuron (Z = 1), all weights +1, threshold s = -3.
model = Model.build((6,), 1, [Linear(Weight.from_array(np.ones((1, 6)))), Threshold((-3,)),
                              Linear(Weight.from_array([[1], [-1]]))])
x = [1, 1, 1, 1, 1, -1]                      # h = 4, margin |4 + 3 - 1/2| = 13/2
h = Interpreter(model).run(x).h[0][0]
t = margin(h, -3)
print(f"h = {h}, T = {t} -> Theorem 1 promises {int(t // 2)} flips are survived")

weights = np.ones((1, 6))
for flips in range(1, 6):
    weights[0, flips - 1] = -1               # flip one more weight that agrees with the output
    flipped = Model.build((6,), 1, [Linear(Weight.from_array(weights)), Threshold((-3,)),
                                    Linear(Weight.from_array([[1], [-1]]))])
    run = Interpreter(flipped).run(x)
    print(f"{flips} flips: h = {run.h[0][0]:3d}, class {run.prediction}")
assert t == Fraction(13, 2)
