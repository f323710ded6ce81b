"""refbnn: the reference implementation of the bit error tolerance metrics for binarized
neural networks (Buschjäger et al., 2021). docs/semantics.md is the contract; a
disagreement between it and the code is a bug in the code.

Every capability is a function here (`refbnn.api`), named as its command:

>>> import refbnn
>>> model = refbnn.example_model(); x, y = refbnn.example_data(40)
>>> refbnn.metrics(model, x, y, b=[1]).T_bar
Fraction(9639, 10240)

`refbnn.testing` (Hypothesis strategies and `assert_claims`, the `fuzz` extra) is
imported on first use.
"""
from importlib import import_module

from . import api
from .api import *  # noqa: F401,F403  (the API: api.__all__)
from .reports.provenance import refbnn_version

__version__ = refbnn_version()

__all__ = [*api.__all__, "testing", "__version__"]  # noqa: F405 (testing: __getattr__ below)


def __getattr__(name: str):
    if name == "testing":      # needs Hypothesis; imported only when asked for
        return import_module(".testing", __name__)
    raise AttributeError(f"module 'refbnn' has no attribute {name!r}")
