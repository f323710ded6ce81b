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

from .api import (
    BitErrorResult,
    ClaimsReport,
    LayerMetrics,
    Metrics,
    Model,
    TrainConfig,
    accuracy_under_bit_errors,
    certify,
    example_data,
    example_model,
    export_model,
    import_model,
    load_data,
    load_model,
    metrics,
    profile,
    save_data,
    save_model,
    to_torch,
    train,
    verify,
)
from .reports.provenance import refbnn_version

__version__ = refbnn_version()

__all__ = ["Model", "load_model", "save_model", "load_data", "save_data", "example_model", "example_data",
           "metrics", "Metrics", "LayerMetrics", "accuracy_under_bit_errors", "BitErrorResult", "certify",
           "profile", "train", "TrainConfig", "verify", "ClaimsReport", "import_model", "export_model", "to_torch",
           "testing", "__version__"]


def __getattr__(name: str):
    if name == "testing":      # needs Hypothesis; imported only when asked for
        return import_module(".testing", __name__)
    raise AttributeError(f"module 'refbnn' has no attribute {name!r}")
