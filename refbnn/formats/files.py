"""Atomic file writing and the error type for bad input files.

Every file refbnn writes goes to a temporary file in the target directory first
and is renamed into place, so a reader never sees half a file and a failed run
leaves nothing behind.
"""
from __future__ import annotations

import glob
import json
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


class InputError(ValueError):
    """A bad input file or option. The message reads `FILE: FIELD: what is wrong`."""


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; rename it onto `path` only on success.

    The temporary file is `.NAME.PID.XXXX.tmp`. A run killed while writing leaves one
    behind; the next write of the same NAME removes those whose process is gone. The
    file gets the permissions of the user's umask, as a plain open() would."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    _remove_stale_temporaries(directory, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_stale_temporaries(directory: Path, name: str) -> None:
    """Remove `.NAME.PID.*.tmp` files whose writing process no longer exists."""
    for tmp in directory.glob(f".{glob.escape(name)}.*.tmp"):
        pid = tmp.name[len(name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                tmp.unlink()
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def check_writable(path: str | os.PathLike, option: str) -> None:
    """Fail early, before any work, if `path` cannot be written: its directory must exist
    and be writable, and `path` must not be a directory."""
    p = Path(path)
    directory = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise InputError(f"{option}: {os.fspath(path)[:200]} is a directory")
    if not directory.is_dir():
        raise InputError(f"{option}: the directory {os.fspath(directory)[:200]} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(f"{option}: the directory {os.fspath(directory)[:200]} is not writable")


MAX_JSON_BYTES = 2**28   # any JSON refbnn reads, unless the caller gives a limit


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is out of the float range")
    return value


def _no_constant(text: str):
    raise ValueError(f"{text} is not valid JSON")


def parse_json_bytes(raw: bytes, where: str) -> Any:
    """Parse JSON text; anything malformed (bad UTF-8, syntax, NaN/Infinity, numbers past the
    float range or of more than 4,300 digits, nesting too deep) is an InputError at `where`."""
    try:
        return json.loads(raw.decode("utf-8"), parse_float=_finite_float, parse_constant=_no_constant)
    except RecursionError:
        raise InputError(f"{where}: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:   # JSONDecodeError is a ValueError
        text = str(e).replace("\n", " ")
        raise InputError(f"{where}: not valid JSON ({text[:120]})") from None


JSON_SNIFF_BYTES = 2**16
_JSON_STARTS = frozenset(b'{["-0123456789tfn')


def _sniff_json(head: bytes, name: str) -> None:
    """Refuse from the first bytes what cannot be JSON text: NUL bytes (binary data, a
    file of zeros) or a first character that starts no JSON value."""
    nul = head.find(b"\0")
    if nul >= 0:
        raise InputError(f"{name}: not valid JSON (a NUL byte at offset {nul}: binary data?)")
    stripped = head.lstrip(b" \t\r\n")
    if stripped and stripped[0] not in _JSON_STARTS and not stripped.startswith(b"\xef\xbb\xbf"):
        raise InputError(f"{name}: not valid JSON (starts with {stripped[:8]!r})")


def read_json(path: str | os.PathLike, max_bytes: int | None = None) -> Any:
    """Parse a JSON file; an unreadable, oversized, special or invalid file is an InputError
    naming it. Only regular files are read (a FIFO would block), and at most the limit."""
    name = os.fspath(path)
    limit = MAX_JSON_BYTES if max_bytes is None else max_bytes
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{name}: not a regular file")
        if st.st_size > limit:
            raise InputError(f"{name}: file of {st.st_size} bytes exceeds the limit {limit}")
        with open(path, "rb") as f:
            head = f.read(JSON_SNIFF_BYTES)
            _sniff_json(head, name)      # a file of zeros or binary junk is refused before it is read whole
            raw = head + f.read(limit + 1 - len(head))
    except OSError as e:
        raise InputError(f"{name}: cannot read ({e.strerror})") from None
    if len(raw) > limit:
        raise InputError(f"{name}: file exceeds the limit {limit} bytes")
    return parse_json_bytes(raw, name)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as JSON atomically."""
    text = json.dumps(obj, indent=1) + "\n"
    with atomic_open(path, "w") as f:
        f.write(text)
