"""Atomic file writing and the error type for bad input files.

Every file refbnn writes goes to a temporary file in the target directory first
and is renamed into place, so a reader never sees half a file and a failed run
leaves nothing behind.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


class InputError(ValueError):
    """A bad input file or option. The message reads `FILE: FIELD: what is wrong`."""


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; rename it onto `path` only on success."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_json(path: str | os.PathLike, max_bytes: int | None = None) -> Any:
    """Parse a JSON file; an unreadable or invalid file is an InputError naming it."""
    name = os.fspath(path)
    try:
        if max_bytes is not None and os.path.getsize(path) > max_bytes:
            raise InputError(f"{name}: file of {os.path.getsize(path)} bytes exceeds the limit {max_bytes}")
        with open(path, "rb") as f:
            return json.loads(f.read())
    except OSError as e:
        raise InputError(f"{name}: cannot read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{name}: not valid JSON ({e})") from None


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as JSON atomically."""
    text = json.dumps(obj, indent=1) + "\n"
    with atomic_open(path, "w") as f:
        f.write(text)
