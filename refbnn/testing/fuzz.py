"""`refbnn fuzz`: find the smallest BNN on which another implementation disagrees with
refbnn (docs/semantics.md §12.4).

Hypothesis draws cases (`refbnn.testing.strategies.cases`); each is written to files,
the implementation runs on them, and its claims are judged (`compare.judge`). The first
finding fixes a signature (its kind and claimed quantity); Hypothesis then shrinks the
case while that signature keeps failing, within `MAX_SHRINK_RUNS` more runs and the
shrink time. The shrunk
case, the implementation's claims, verify's report and a repro script land in the output
directory, whose example database makes a rerun start from the stored failure.
"""
from __future__ import annotations

import json
import shlex
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Callable, Optional

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.errors import Flaky, Found

from ..formats.datafile import Dataset, write_data
from ..formats.files import InputError, atomic_open, write_json
from ..formats.modelfile import write_model
from ..formats.tracefile import read_trace
from ..oracle.report import claims_report, trace_report
from .build import Case, Reach
from .compare import Finding, judge
from .external import Outcome, command_line, run_command
from .strategies import cases

MAX_SHRINK_RUNS = 300
CASE_FILES = ("model.json", "model.onnx", "data.npz", "request.json", "claims.json", "trace.npz", "report.txt", "repro.sh",
              "stderr.txt")


@dataclass
class FuzzOptions:
    cmd: str
    reach: Reach
    max_examples: int = 100
    seed: int = 0
    out: Path = Path("fuzz-out")
    timeout: float = 60.0
    atol: float = 1e-9
    jobs: int = 1
    shrink_time: float = 300.0
    model_format: str = "json"     # "onnx": the command is handed model.onnx (refbnn export)     # seconds of shrinking at most (a hanging command costs a timeout a run)


@dataclass
class FuzzResult:
    examples: int = 0
    covered: Counter = field(default_factory=Counter)
    finding: Optional[Finding] = None
    case: Optional[Case] = None
    shrink_runs: int = 0
    report: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        """The report on one screen: the finding, the case, the first divergence, patterns
        and diagnosis (the tables stay in report.txt)."""
        keep = ("first divergence:", "pattern:", "diagnosis:")
        return self.report[:3] + [line for line in self.report[3:] if line.startswith(keep)]


def write_case(case: Case, directory: Path, model_format: str = "json") -> dict[str, Path]:
    """The case's model, data and request as files; returns every placeholder's path. With
    `model_format` "onnx" the model is also written as model.onnx (refbnn export, input
    x/Z) and {model} names it; the request then says the graph's input map and Z."""
    directory.mkdir(parents=True, exist_ok=True)
    write_model(directory / "model.json", case.model)
    write_data(directory / "data.npz", case.x, case.y)
    model = directory / "model.json"
    request = case.request
    if model_format == "onnx":
        model = directory / "model.onnx"
        write_model_onnx(case.model, model)
        request = {**request, "onnx": {"input": "x/Z", "Z": case.model.Z}}
    write_json(directory / "request.json", request)
    return {"model": model, "data": directory / "data.npz",
            "request": directory / "request.json", "claims": directory / "claims.json",
            "trace": directory / "trace.npz"}


def write_model_onnx(model, path: Path) -> None:
    """The model as refbnn export writes it, reading x/Z."""
    from ..export.onnx import input_map_of, write_onnx
    write_onnx(str(path), model, *input_map_of("x/Z", model))


def try_case(case: Case, cmd: str, directory: Path, timeout: float, atol: float,
             model_format: str = "json") -> tuple[Optional[Finding], Outcome, dict]:
    """Run the implementation on one case and judge what it wrote: the finding (None if it
    agrees), what the command did, and the claims the request asks for."""
    files = write_case(case, directory, model_format)
    outcome = run_command(cmd, files, timeout)
    if outcome.fault is not None:
        return outcome.fault, outcome, {}
    finding, asked = judge(case.model, case.x, case.y, case.request, outcome.claims, str(files["claims"]), atol)
    return finding, outcome, asked


class _Shard:
    """One search: a find() over its share of the examples, with its own seed and key."""

    def __init__(self, options: FuzzOptions, index: int, examples: int, stop: Callable[[int], bool],
                 progress: Callable[[], None]):
        self.o, self.index, self.examples, self.stop, self.progress = options, index, examples, stop, progress
        self.result = FuzzResult()
        self.target: Optional[tuple] = None
        self.found_at = 0.0
        self.work = Path(tempfile.mkdtemp(prefix="refbnn-fuzz-"))

    def condition(self, case: Case) -> bool:
        r = self.result
        if self.target is None:
            if self.stop(self.index):
                return False
            r.examples += 1
            r.covered.update(case.features)
            self.progress()
        else:
            if r.shrink_runs >= MAX_SHRINK_RUNS or time.monotonic() - self.found_at > self.o.shrink_time:
                return False
            r.shrink_runs += 1
        finding, _, _ = try_case(case, self.o.cmd, self.work, self.o.timeout, self.o.atol, self.o.model_format)
        if finding is None:
            return False
        if self.target is None:
            self.target, self.found_at = finding.signature, time.monotonic()
            r.finding, r.case = finding, case
            return True
        if finding.signature != self.target:
            return False
        r.case = case           # Hypothesis only tries cases smaller than its current one
        return True

    def run(self) -> FuzzResult:
        r = self.o.reach       # no frozenset repr in the key: its order changes from process to process
        key = (f"refbnn-fuzz:{','.join(sorted(r.features))}:{r.max_neurons}:{r.max_inputs}:{r.bs}:{r.importance}:"
               f"{r.bit_errors}:{self.index}").encode()
        db = DirectoryBasedExampleDatabase(str(self.o.out / ".hypothesis"))
        config = settings(max_examples=self.examples, database=db, deadline=None,
                          suppress_health_check=list(HealthCheck),
                          phases=[Phase.reuse, Phase.generate, Phase.shrink])
        reach = self.o.reach
        try:
            seeded_find(cases(reach.features, reach.max_neurons, reach.max_inputs, reach.bs, reach.importance,
                              reach.bit_errors),
                        self.condition, config, Random(self.o.seed * 1009 + self.index).getrandbits(64), key)
        except Flaky:
            pass    # the budgets turned a replayed failure into a pass; the smallest failing case seen stands
        finally:
            shutil.rmtree(self.work, ignore_errors=True)
        return self.result


def seeded_find(strategy, condition: Callable, config: settings, seed: int, key: bytes) -> None:
    """hypothesis.find with a seed *and* the example database: find(random=...) seeds
    through @seed, which turns the database off, so a rerun could not start from the
    stored failure. This is find's own body with the seed set as @seed sets it, minus
    that. (It relies on two attributes of Hypothesis's; tests/test_fuzz_command.py
    checks both the seed and the database.)"""

    def test(case):
        if condition(case):
            raise Found

    test._hypothesis_internal_use_seed = seed
    wrapped = settings(config, suppress_health_check=list(HealthCheck), report_multiple_bugs=False)(
        given(strategy)(test))
    wrapped._hypothesis_internal_database_key = key
    try:
        wrapped()
    except Found:
        pass


def fuzz(options: FuzzOptions, progress: Optional[Callable[[int, int], None]] = None) -> FuzzResult:
    """Search for a disagreement; on one, shrink it and write the reproduction to options.out."""
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    for name in CASE_FILES:          # files of an earlier run must not pass for this one's
        (out / name).unlink(missing_ok=True)
    jobs = max(1, min(options.jobs, options.max_examples))
    share = [options.max_examples // jobs + (k < options.max_examples % jobs) for k in range(jobs)]
    found: set[int] = set()
    lock = threading.Lock()
    done = [0]

    def tick() -> None:
        with lock:
            done[0] += 1
            if progress is not None:
                progress(done[0], options.max_examples)

    def stop(k: int) -> bool:          # a shard may stop once a lower one has found something
        return any(j < k for j in found)

    def run(k: int) -> FuzzResult:
        result = _Shard(options, k, share[k], stop, tick).run()
        if result.finding is not None:
            found.add(k)
        return result

    if jobs == 1:
        results = [run(0)]
    else:
        with ThreadPoolExecutor(jobs) as pool:
            results = list(pool.map(run, range(jobs)))
    total = FuzzResult(examples=sum(r.examples for r in results),
                       covered=sum((r.covered for r in results), Counter()))
    chosen = next((r for r in results if r.finding is not None), None)
    if chosen is not None:
        total.case, total.shrink_runs = chosen.case, chosen.shrink_runs
        total.finding, total.report = reproduce(chosen.case, options)
    return total


def reproduce(case: Case, options: FuzzOptions) -> tuple[Finding, list[str]]:
    """Run the implementation once more on the shrunk case, in the output directory, and
    write report.txt and repro.sh beside its files."""
    out = options.out
    finding, outcome, asked = try_case(case, options.cmd, out, options.timeout, options.atol, options.model_format)
    if finding is None:
        finding = Finding("flaky", "", "the shrunk case failed during the search but passed when run again")
    lines = [f"finding: {finding.line()}", f"case: {case.size()}; features: {', '.join(sorted(case.features)) or '-'}",
             f"request: {json.dumps(case.request)}"]
    if finding.kind == "wrong":
        report = claims_report(case.model, Dataset(case.x, case.y), asked, str(out / "claims.json"), options.atol)
        lines += ["", "verify's report on the claims the request asks for:"] + report.lines
    elif outcome.stderr:
        lines += ["", "the command's stderr (its end):"] + outcome.stderr.rstrip().splitlines()[-20:]
    if (out / "trace.npz").exists():      # the command wrote a trace ({trace}): where it first diverges
        try:
            trace = read_trace(out / "trace.npz", case.model, len(case.y))
            lines += [""] + trace_report(case.model, case.x, trace, str(out / "trace.npz")).lines
        except InputError as e:
            lines += ["", f"trace: not read: {e}"]
    with atomic_open(out / "report.txt", "w") as f:
        f.write("\n".join(lines) + "\n")
    model_file = "model.onnx" if options.model_format == "onnx" else "model.json"
    files = {p: (out / name).resolve() for p, name in (("model", model_file), ("data", "data.npz"),
                                                         ("request", "request.json"), ("claims", "claims.json"),
                                                         ("trace", "trace.npz"))}
    args = [sys.executable, "-m", "refbnn.cli", "verify", files["model"], files["data"], "--claims", files["claims"]]
    if files["trace"].exists():
        args += ["--trace", files["trace"]]
    verify = " ".join(shlex.quote(str(a)) for a in args)
    with atomic_open(out / "repro.sh", "w") as f:
        f.write("#!/bin/sh\n# Reruns the implementation on the shrunk case, then refbnn verify on its claims.\n"
                f"{command_line(options.cmd, files)}\n{verify}\n")
    (out / "repro.sh").chmod(0o755)
    return finding, lines
