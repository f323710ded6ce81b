"""
A buggy implementation found and named
======================================

Implementations of BNN metrics disagree for reasons that are rarely in the paper: how a
threshold tie is decided, what a padded tap adds, whether the first layer's margin is
divided by Z. ``refbnn.verify`` checks another implementation's numbers and, when they
differ, recomputes them under every convention that implementations get wrong, naming the
one that reproduces them exactly. Here the careful float implementation of
``examples/independent_metrics.py`` pads its convolutions with -1 instead of leaving the
padded taps out (a popcount over the full window does this), and verify finds and names
it. Run it with ``python examples/find_a_bug.py``.
"""
import sys
from pathlib import Path


import refbnn
from refbnn.engines.fast import FastEngine
from refbnn.formats.modelfile import model_to_dict

# the folder of examples: this file's, or where sphinx-gallery runs it (without __file__)
sys.path.insert(0, str(Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()))
from independent_metrics import Conventions, FloatBNN  # noqa: E402

# %%
# The implementation's claims
# ---------------------------
# The bars model has a 3x3 convolution with padding 1 on 8x8 images. The buggy
# implementation reads each padded tap as -1.
model = refbnn.example_model()
x, y = refbnn.example_data(60)
buggy = FloatBNN(model_to_dict(model), Conventions(pad=-1.0))
claims = buggy.metrics(x, y)
print("claimed accuracy", claims["accuracy"], "and T at b = 2:", claims["T"]["2"])

# %%
# What verify says
# ----------------
# Every claim is checked against the exact numbers; on a failure the diagnosis names
# the convention.
report = refbnn.verify(model, x, y, claims)
print("\n".join(line for line in report.lines if not line.startswith("  ...")))
assert report.failed and any("padded taps count as -1" in line for line in report.lines)

# %%
# Where the numbers part
# ----------------------
# The pre-activations of the first layer, refbnn's against the buggy ones: they differ
# only where a 3x3 window reaches over the border, which is what the padding touches.
hs, _, _ = buggy.forward(x)
exact_h = FastEngine(model).outputs(x)[0]                     # h entering threshold layer 1
differ = (hs[1] != exact_h).mean(axis=(0, 1))                  # share per position
print("positions where h differs:", int((differ > 0).sum()), "of", differ.size,
      "- all on the border:", bool((differ[1:-1, 1:-1] == 0).all()))

import matplotlib.pyplot as plt  # noqa: E402

fig, ax = plt.subplots(figsize=(4, 3.4))
im = ax.imshow(differ, cmap="Reds", vmin=0, vmax=1)
ax.set_title("share of (input, channel) where h differs")
ax.set_xlabel("column")
ax.set_ylabel("row")
fig.colorbar(im)
fig.tight_layout()
