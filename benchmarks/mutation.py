"""Mutation testing of the judgment layer with mutmut: does a one-line mistake fail a test?

    python -m pip install mutmut==3.8.1
    python benchmarks/mutation.py                                  # every module below
    python benchmarks/mutation.py refbnn/oracle/statistics.py      # one module
    python benchmarks/mutation.py refbnn/x.py --tests tests/test_x.py --keep /tmp/mut

For each module mutmut makes every one-token mistake it knows (an operator, a comparison,
a constant, a dropped argument, ...) and runs the tests that reach the mutated function;
a mutant that no test fails *survived*. The run works in a copy of the working tree (the
repository gets no `mutants/` folder), on one mutmut worker per core.

Prints per module the mutants made and their fate (killed, timeout and segfault: a test
failed, hung or crashed; text only: mutmut's XX around a message, see is_text_only;
survived), then each survivor's mutated line with the reason recorded for it in the table
"Equivalent mutants" of tests/README.md (the same module, function and line), or SURVIVED.
Exit status 1 if a survivor is not in the record.
"""
from __future__ import annotations

import argparse
import configparser
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "tests" / "README.md"

# The judgment layer (issue: verdicts, diagnosis, reports, the .pt reader's refusals) and
# the tests that judge each module; mutmut runs, per mutant, those of them that reach it.
MODULES = {
    "refbnn/oracle/statistics.py": ["tests/test_statistics_independent.py", "tests/test_audit_independent.py",
                                    "tests/test_verify_statistics.py"],
    "refbnn/oracle/diagnose.py": ["tests/test_diagnose_patterns.py", "tests/test_verify_diagnosis.py",
                                  "tests/test_conformance.py::test_every_registry_convention_changes_an_expected_number",
                                  "tests/test_conformance.py::test_the_contract_itself_changes_no_expected_number"],
    "refbnn/experiments/verdicts.py": ["tests/test_verdicts.py", "tests/test_verdicts_independent.py"],
    "refbnn/experiments/findings.py": ["tests/test_findings.py", "tests/test_verdicts.py", "tests/test_paperdiff.py"],
    "refbnn/experiments/paperdiff.py": ["tests/test_paperdiff.py", "tests/test_paper_table3.py"],
    # (not all of test_experiments.py: its SIGKILL test would stop mutmut's own workers)
    "refbnn/experiments/estimate.py": [f"tests/test_experiments.py::test_{name}" for name in (
        "the_estimate_counts_the_cells_still_to_run_by_kind", "a_slice_of_a_cell_is_really_timed",
        "the_cost_of_a_table3_cell_by_its_arithmetic", "the_cost_of_a_fig1_cell_by_its_arithmetic",
        "the_timer_and_the_slices", "the_estimate_in_words", "paper_preset_prints_its_cost")],
    "refbnn/measure/paired.py": ["tests/test_profile.py", "tests/test_statistics_independent.py"],
    "refbnn/measure/profile.py": ["tests/test_profile.py"],
    "refbnn/measure/profile_page.py": ["tests/test_profile_page.py", "tests/test_profile.py"],
    "refbnn/importers/torchfile.py": ["tests/test_torchfile.py", "tests/test_torchfile_hostile.py"],
    "refbnn/semantics/batchnorm.py": ["tests/test_batchnorm_fold.py", "tests/test_fold.py"],
}


def read_record(path: Path = RECORD) -> dict[tuple[str, str, str], str]:
    """{(module, function, mutated line): reason} from the table "Equivalent mutants" of
    tests/README.md, whose rows read | `module` | `function` | `mutated line` | reason |."""
    record, inside = {}, False
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            inside = line.strip() == "## Equivalent mutants"
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if inside and len(cells) == 4 and cells[0].startswith("`refbnn/"):
            module, function, mutated = (c.strip("`").replace("\\|", "|") for c in cells[:3])
            record[module, function, " ".join(mutated.split())] = cells[3]
    return record


def function_of(mutant: str) -> str:
    """The mutated function of a mutmut name: `pkg.mod.x_name__mutmut_3` -> `name`,
    `pkg.mod.xǁClassǁmethod__mutmut_3` -> `Class.method`."""
    last = mutant.rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0]
    return last[2:].replace("ǁ", ".") if last.startswith("xǁ") else last[2:]


def copy_tree(dest: Path) -> None:
    """The working tree as git sees it (tracked and untracked files, not the ignored ones)."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


def configure(work: Path, module: str, tests: list[str]) -> None:
    """mutmut's section in the copy's setup.cfg: mutate `module` only, run `tests` in one
    process each (-n 0: mutmut forks its own workers)."""
    cfg = configparser.ConfigParser()
    cfg.read(work / "setup.cfg")
    cfg["mutmut"] = {
        "source_paths": "refbnn",
        "only_mutate": module,
        "pytest_add_cli_args_test_selection": "\n" + "\n".join(tests),
        "pytest_add_cli_args": "\n-n\n0",
        "also_copy": "\n" + "\n".join(["docs/", "examples/", "proofs/", "benchmarks/", "README.md"]),
    }
    with open(work / "setup.cfg", "w") as f:
        cfg.write(f)


def mutmut(work: Path, *args: str) -> str:
    result = subprocess.run(["mutmut", *args], cwd=work, capture_output=True, text=True)
    return result.stdout + result.stderr


def changed_lines(work: Path, mutant: str) -> list[tuple[str, str]]:
    """(original, mutated) of each line the mutant changes, whitespace normalised."""
    diff = mutmut(work, "show", mutant).splitlines()
    minus = [" ".join(x[1:].split()) for x in diff if x.startswith("-") and not x.startswith("---")]
    plus = [" ".join(x[1:].split()) for x in diff if x.startswith("+") and not x.startswith("+++")]
    return list(zip(minus + [""] * (len(plus) - len(minus)), plus)) or [("", "(line removed)")]


def is_text_only(original: str, mutated: str) -> bool:
    """A mutant that only wraps a string in XX: a message with two letters more on each
    side. Messages are checked by the words a user reads (`in`), so these are equivalent by
    class and counted, not listed (tests/README.md, "Equivalent mutants")."""
    return "XX" in mutated and mutated.replace("XX", "") == original


DETECTED = {"killed", "timeout", "segfault"}     # a test failed, hung or crashed: the mistake shows


def recheck(work: Path, mutant: str, tests: list[str]) -> str:
    """A mutant mutmut calls suspicious (its worker ended by a signal it did not expect:
    some tests' child processes take mutmut's fork down with them), judged by running its
    tests once more in a process of their own."""
    env = {**os.environ, "MUTANT_UNDER_TEST": mutant}
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:cacheprovider", *tests],
                          cwd=work / "mutants", env=env, capture_output=True)
    return "survived" if done.returncode == 0 else "killed"


def run_module(module: str, tests: list[str], jobs: int, keep: Path | None,
               record: dict) -> tuple[dict, list[tuple[str, str, str | None, str]]]:
    """({status: count}, [(function, mutated line, recorded reason or None, status)] of
    the mutants no test detected, text-only ones left out)."""
    work = Path(tempfile.mkdtemp(prefix="refbnn-mutation-")) if keep is None else keep / Path(module).stem
    try:
        if work.exists() and keep is not None:
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        copy_tree(work)
        configure(work, module, tests)
        log = mutmut(work, "run", "--max-children", str(jobs))
        results = mutmut(work, "results", "--all", "true")
        statuses = {k: v.strip() for k, v in re.findall(r"^\s*(\S+__mutmut_\d+): (.+)$", results, re.M)}
        if not statuses:
            raise SystemExit(f"mutmut made no mutants of {module}; its output ends:\n{log[-3000:]}")
        counts: dict[str, int] = {}
        survivors = []
        for name, status in sorted(statuses.items()):
            if status == "suspicious":
                status = recheck(work, name, tests)
            if status not in DETECTED:
                lines = changed_lines(work, name)
                if all(is_text_only(o, m) for o, m in lines):
                    status = "text only"
                else:
                    function = function_of(name)
                    for _, line in lines:
                        survivors.append((function, line, record.get((module, function, line)), status))
            counts[status] = counts.get(status, 0) + 1
        return counts, survivors
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="files under refbnn/ (default: the judgment layer)")
    parser.add_argument("--tests", nargs="+", help="test files to judge them (default: the table in this script)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutmut workers")
    parser.add_argument("--keep", type=Path, help="work in DIR/<module> and keep it (for `mutmut show` there)")
    args = parser.parse_args()
    if shutil.which("mutmut") is None:
        raise SystemExit("needs mutmut: python -m pip install mutmut==3.8.1")
    record, new = read_record(), 0
    for module in args.modules or list(MODULES):
        tests = args.tests or MODULES.get(module)
        if not tests:
            raise SystemExit(f"{module}: no tests known for it; name them with --tests")
        counts, survivors = run_module(module, tests, args.jobs, args.keep, record)
        print(f"{module}: {sum(counts.values())} mutants; " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())),
              flush=True)
        for function, line, reason, status in survivors:
            new += reason is None
            unrecorded = "NO TEST REACHES IT" if status == "no tests" else status.upper()
            print(f"    {function}: {line}\n        -> {reason or unrecorded + ' (not in the record)'}", flush=True)
    print(f"{new} survivor(s) outside the record of equivalent mutants")
    return 1 if new else 0


if __name__ == "__main__":
    sys.exit(main())
