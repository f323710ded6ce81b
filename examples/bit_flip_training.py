"""
What bit flip training does to margins and to Pi
================================================

Training with injected bit flips (each weight bit read flipped with probability p in
every forward pass) makes a BNN tolerate errors. The paper's two metrics say how: the
margins grow (T^b is larger at every b: more neurons sit far from their threshold, so
Theorem 1 covers more flips), and in small networks the importance spreads out (VAR(Pi)
falls: no neuron is indispensable, Hypothesis 1). We train a regular and a flip-trained
fc-32 on scikit-learn's digits with the same seed, on one BLAS thread as `refbnn demo`
does, and measure both exactly. `refbnn experiment table3` does this at scale. Run it
with ``python examples/bit_flip_training.py`` (needs the `data` extra for the digits).
"""
from fractions import Fraction

import refbnn
from refbnn.engines.fast import one_blas_thread

BS = [1, 2, 4, 8, 16, 32]

# %%
# Two networks, one seed
# ----------------------
digits = refbnn.load_dataset("digits")
x, y = digits.x_test, digits.y_test
results = {}
for name, ber in (("regular", 0.0), ("flips 5%", 0.05)):
    with one_blas_thread():
        model = refbnn.train("fc-32", digits.x_train, digits.y_train, x, y, z=digits.Z, epochs=60,
                             train_ber=ber, seed=0, threads=1)
    m = refbnn.metrics(model, x, y, b=BS, importance=True)
    under = refbnn.accuracy_under_bit_errors(model, x, y, ber=[0.05], reps=5)[0]
    results[name] = m
    print(f"{name:<10} accuracy {float(m.accuracy):.4f}, at BER 5% {float(under.mean):.4f}; "
          f"T-bar {float(m.T_bar):.4f}; VAR(Pi) {float(m.var_importance):.3g}")

# %%
# Larger margins
# --------------
# T^b is the share of neuron outputs whose margin is at least b; flip training pushes
# the whole curve up.
regular, flips = results["regular"], results["flips 5%"]
for b in BS:
    print(f"T^{b:<2}  regular {float(regular.T[Fraction(b)]):.4f}   flips {float(flips.T[Fraction(b)]):.4f}")

# %%
# The picture
# -----------
# Left: T^b over b. Right: every neuron's Pi, largest first: the flip-trained network's
# importance is flatter.
import matplotlib.pyplot as plt  # noqa: E402

fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
for name, m in results.items():
    a.plot(BS, [float(m.T[Fraction(v)]) for v in BS], marker="o", label=name)
    b.plot(sorted((float(p) for p in m.importance), reverse=True), marker=".", label=name)
a.set_xscale("log", base=2)
a.set_xlabel("margin b (log scale)")
a.set_ylabel("$T^b$")
a.legend()
b.set_xlabel("neurons, most important first")
b.set_ylabel("$\\Pi$")
b.legend()
fig.tight_layout()
