"""The `refbnn` command line (docs/semantics.md §9): parse options, call one library
function, print. The computation lives in `refbnn.measure`, `refbnn.oracle`,
`refbnn.experiments`, `refbnn.biterrors`, `refbnn.importers` and `refbnn.training`.

Every command prints a readable table, writes JSON with `--json PATH` (atomically:
nothing is written unless the command succeeds), and exits 0 on success, 1 when a
check fails, 2 on bad input with a one-line message that names the file and the field.
"""
from . import evaluate, experiment, exporting, fuzzing, importing, measure, models, profiling, training, verifying  # noqa: F401  (each registers its commands)
from .group import main

__all__ = ["main"]
