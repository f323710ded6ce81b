"""refbnn: the reference implementation of the bit error tolerance metrics for binarized
neural networks (Buschjäger et al., 2021). docs/semantics.md is the contract; a
disagreement between it and the code is a bug in the code."""
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("refbnn")
except PackageNotFoundError:   # run from a source tree that was never installed
    __version__ = "0+unknown"
