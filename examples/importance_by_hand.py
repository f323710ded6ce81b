"""
Algorithm 1 by hand
===================

Neuron importance Pi[n] (Algorithm 1) is the relative accuracy drop when neuron n's
output is negated everywhere: Pi[n] = (A - A*_n) / A. A network that leans on a few
neurons has a large VAR(Pi) (eq. 6); one that spreads its computation has a small one
(the paper's Hypothesis 1). We compute it on the built-in bars model twice, with the
fast engine's incremental Algorithm 1 and with the definition itself (flip one neuron,
re-run the whole network), and get the same fractions. Run it with
``python examples/importance_by_hand.py``.
"""
from refbnn.demo.bars import example_data, example_model
from refbnn.engines.fast import FastEngine
from refbnn.engines.interpreter import Interpreter
from refbnn.semantics.accuracy import accuracy
from refbnn.semantics.importance import importance_variance, neuron_importance

# %%
# The accuracy A, then one flip per neuron
# ----------------------------------------
model = example_model()
x, y = example_data(100)
fast = FastEngine(model)
print("accuracy A =", accuracy(fast.predictions(x), y))
pi = fast.importance(x, y)                       # incremental Algorithm 1
assert pi == neuron_importance(Interpreter(model), x, y)   # = the definition, flip and re-run
for n, p in enumerate(pi):
    layer, channel = model.neuron(n)
    print(f"neuron {n} (layer {layer.threshold_index}, channel {channel}): Pi = {p} = {float(p):.3f}")

# %%
# VAR(Pi), eq. 6
# --------------
# The population variance of the Pi over all neurons of the network, exactly.
mean = sum(pi) / len(pi)
by_hand = sum((p - mean) ** 2 for p in pi) / len(pi)
assert by_hand == importance_variance(pi)
print("VAR(Pi) =", importance_variance(pi), "=", float(importance_variance(pi)))

# %%
# The picture
# -----------
# Pi per neuron: the bars model's line detectors in layer 1 carry everything; negating
# one of the four hidden units never changes a prediction on these images (Pi = 0).
import matplotlib.pyplot as plt  # noqa: E402

fig, ax = plt.subplots(figsize=(6, 3))
colours = ["tab:blue" if model.neuron(n)[0].first else "tab:orange" for n in range(len(pi))]
ax.bar(range(len(pi)), [float(p) for p in pi], color=colours)
for n, p in enumerate(pi):
    if p == 0:
        ax.text(n, 0.01, "0", ha="center", color="tab:orange")
ax.set_xticks(range(len(pi)))
ax.set_xlabel("neuron (blue: layer 1, the detectors; orange: the hidden units)")
ax.set_ylabel("Pi: relative accuracy drop")
fig.tight_layout()
