"""Neuron importance (Algorithm 1) and VAR(Pi) on the built-in bars model.

    python examples/importance_by_hand.py

Pi[n] is the relative accuracy drop when neuron n's output is negated everywhere.
A network that leans on a few neurons has a large VAR(Pi); one that spreads its
computation has a small one (the paper's Hypothesis 1).
"""
from refbnn.demo.bars import example_data, example_model
from refbnn.engines.fast import FastEngine
from refbnn.engines.interpreter import Interpreter
from refbnn.semantics.accuracy import accuracy
from refbnn.semantics.importance import importance_variance, neuron_importance

model = example_model()
x, y = example_data(100)
fast = FastEngine(model)
print("accuracy A =", accuracy(fast.predictions(x), y))
pi = fast.importance(x, y)                       # incremental Algorithm 1
assert pi == neuron_importance(Interpreter(model), x, y)   # = the definition, flip and re-run
for n, p in enumerate(pi):
    layer, channel = model.neuron(n)
    print(f"neuron {n} (layer {layer.threshold_index}, channel {channel}): Pi = {p} = {float(p):.3f}")
print("VAR(Pi) =", importance_variance(pi), "=", float(importance_variance(pi)))
