"""
Protection against its random control
=====================================

If a few neurons can be kept free of bit errors (reliable memory, an error-correcting
code), which ones? Algorithm 1's importance Pi suggests the most important. But
protecting *any* units removes flips, so the fair question is whether the important
ones help more than as many units chosen at random from the same layers. ``profile``
answers it: the same flips in every run (the keyed masks, cleared at the protected
bits), five random choices averaged per repetition as the control, and an exact
one-sided sign-flip test of the paired differences. Run it with
``python examples/protection.py`` (needs the `data` extra for the digits).
"""
import refbnn
from refbnn.engines.fast import one_blas_thread

# %%
# A small network, and its profile with protection
# ------------------------------------------------
digits = refbnn.load_dataset("digits")
x, y = digits.x_test, digits.y_test
with one_blas_thread():
    model = refbnn.train("fc-32", digits.x_train, digits.y_train, x, y, z=digits.Z, epochs=60, seed=0, threads=1)
BERS = [0, 0.02, 0.05, 0.1, 0.2]
doc = refbnn.profile(model, x, y, ber=BERS, reps=16, protect="top-importance:10%", controls=5)
protection = doc["profile"]["protection"]
print("protected:", protection["described"])
for row in protection["results"]:
    print(f"BER {row['ber']:>4}: unprotected {row['unprotected_mean']['value']:.3f}, "
          f"top-importance {row['protected_mean']['value']:.3f}, random {row['control_mean']['value']:.3f}; "
          f"p = {row['p_beats_random']['value']:.3g} that importance beats random")

# %%
# Reading the test
# ----------------
# With 16 repetitions the smallest attainable p is 2^-16. A p at or below 0.05 says that,
# repetition by repetition under the same flips, the important units protected better
# than random ones more often than chance allows.
significant = [row["ber"] for row in protection["results"] if row["beats_random"]]
print("importance beats random at BER", ", ".join(significant) if significant else "none")

# %%
# The picture
# -----------
import matplotlib.pyplot as plt  # noqa: E402

rows = protection["results"]
fig, ax = plt.subplots(figsize=(6, 3.4))
for key, label in (("unprotected_mean", "unprotected"), ("control_mean", "random units (control)"),
                   ("protected_mean", "top-importance units")):
    ax.plot(BERS, [r[key]["value"] for r in rows], marker="o", label=label)
ax.set_xlabel("bit error rate")
ax.set_ylabel("accuracy")
ax.legend()
fig.tight_layout()
