"""A cell function for tests/test_experiments.py whose worker dies (os._exit) on its first
attempt at one cell: the runner must retry that cell and store every cell exactly once.
(A module of its own, so that spawned worker processes can import it.)"""
import os
from pathlib import Path

from refbnn.experiments.cells import run_cell


def dies_once(cell):
    marker = Path(os.environ["REFBNN_TEST_MARKER"])
    if cell.rep == 1 and not marker.exists():
        marker.write_text("died")
        os._exit(9)          # the worker dies mid-cell
    return run_cell(cell)
