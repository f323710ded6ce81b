"""Where a report came from: the software versions and the command, written so that a
committed report names no directory of the machine it ran on."""
from __future__ import annotations

import os
import platform
import shlex
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np


def refbnn_version() -> str:
    """refbnn's version from its package metadata (`refbnn.__version__`)."""
    try:
        return version("refbnn")
    except PackageNotFoundError:   # run from a source tree that was never installed
        return "0+unknown"


def versions() -> str:
    """The software a report was made with: refbnn's version from its package metadata."""
    return (f"refbnn {refbnn_version()}, Python {sys.version.split()[0]}, NumPy {np.__version__}, "
            f"{platform.platform()}")


def relative_to(path: str, out: Path) -> str:
    """`path` as seen from the directory `out`."""
    return os.path.relpath(os.path.abspath(path), os.path.abspath(out))


def portable_command(argv: list[str], out: Path, path_options: tuple[str, ...] = ("--out",),
                     paths: tuple[str, ...] = ()) -> str:
    """`refbnn ARGV` as it would be typed in `out`, the report's own directory: the value
    of each option in `path_options`, and each argument equal to one of `paths`, is
    rewritten relative to `out`, so a committed report names no directory of the machine
    it ran on."""
    def rel(value: str) -> str:
        return relative_to(value, out)

    words, k = [], 0
    while k < len(argv):
        a = argv[k]
        name, eq, value = a.partition("=")
        if name in path_options and eq:
            words.append(f"{name}={rel(value)}")
        elif a in path_options and k + 1 < len(argv):
            words += [a, rel(argv[k + 1])]
            k += 1
        else:
            words.append(rel(a) if a in paths else a)
        k += 1
    return "refbnn " + shlex.join(words)
