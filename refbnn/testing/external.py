"""Running another implementation as a command (docs/semantics.md §12.4).

The command line is a shell command with the placeholders {model}, {data}, {request} and
{claims} (and optionally {trace}), replaced by shell-quoted paths. It runs in its own
process group; on a timeout, and after it exits, the whole group is killed, so nothing
it started outlives the example.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..formats.files import InputError, read_json
from .compare import Finding

PLACEHOLDERS = ("model", "data", "request", "claims", "trace")
STDERR_TAIL = 600      # characters of the command's stderr kept in a finding


def check_command(cmd: str) -> None:
    """A command must name where to write its claims, and may use only the known placeholders."""
    try:
        cmd.format(**{p: "" for p in PLACEHOLDERS})
    except (KeyError, IndexError, ValueError) as e:
        raise InputError(f"--impl: {cmd[:60]!r}: unknown placeholder or stray brace ({e}); the placeholders are "
                         f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)} (write {{{{ for a literal brace)") from None
    if "{claims}" not in cmd:
        raise InputError("--impl: the command must contain {claims}, the file it writes its claims to")


def command_line(cmd: str, files: dict[str, Path]) -> str:
    return cmd.format(**{p: shlex.quote(str(files[p])) for p in PLACEHOLDERS})


@dataclass
class Outcome:
    """The claims the command wrote, or the fault that kept it from writing them."""

    claims: Optional[dict]
    fault: Optional[Finding]
    stderr: str = ""


def run_command(cmd: str, files: dict[str, Path], timeout: float) -> Outcome:
    """Run the implementation once on the files; read the claims file it wrote."""
    claims_path = files["claims"]
    claims_path.unlink(missing_ok=True)
    files["trace"].unlink(missing_ok=True)      # an earlier example's must not pass for this one's
    with open(files["claims"].parent / "stderr.txt", "w+b") as err:
        proc = subprocess.Popen(command_line(cmd, files), shell=True, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            code, timed_out = None, True
        finally:
            _kill_group(proc)
        err.seek(0)
        tail = err.read()[-4 * STDERR_TAIL:].decode("utf-8", "replace")[-STDERR_TAIL:]
    if timed_out:
        return Outcome(None, Finding("timeout", "", f"no exit within {timeout:g} s (its process group was killed)"),
                       tail)
    if code != 0:
        last = " | ".join(line.strip() for line in tail.strip().splitlines()[-3:]) or "(no stderr)"
        return Outcome(None, Finding("crash", "", f"exit code {code}; stderr: {last}"), tail)
    if not claims_path.exists():
        return Outcome(None, Finding("malformed", "", "exit code 0 but no claims file written"), tail)
    try:
        return Outcome(read_json(claims_path), None, tail)
    except InputError as e:
        return Outcome(None, Finding("malformed", "", str(e)), tail)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
