"""`refbnn fuzz` (docs/semantics.md §12.4) against real commands: the correct float
implementation of examples/ passes, each bug of examples/buggy_metrics.py is found from
scratch and shrunk, and every way a command can fail is a clear finding."""
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from refbnn.formats.modelfile import read_model

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CORRECT = f"{PY} {ROOT}/examples/independent_metrics.py --answer {{model}} {{data}} {{request}} {{claims}}"


def buggy(bug: str) -> str:
    return f"{PY} {ROOT}/examples/buggy_metrics.py --bug {bug} {{model}} {{data}} {{request}} {{claims}}"


def fuzz(out, *args):
    return run_cli("fuzz", "--out", out, *args)


def _summary(result) -> str:
    return result.output.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_correct_implementation_passes_200_examples_with_every_feature(tmp_path):
    """No disagreement over 200 examples with every feature, Pi and bit errors included; the
    last line counts the examples and the features they covered."""
    r = fuzz(tmp_path / "out", "--impl", CORRECT, "--max-examples", "200", "--jobs", "2")
    assert r.exit_code == 0, r.output
    last = _summary(r)
    assert last.startswith("fuzz: 200 examples, no disagreement; features covered: fc ")
    counts = dict(part.rsplit(" ", 1) for part in last.split("features covered: ")[1].split(", "))
    assert all(int(n) > 0 for n in counts.values()), counts     # every feature was drawn


@pytest.mark.slow
@pytest.mark.parametrize("bug, quantity", [("tie-ge", None), ("pad-minus-one", "T"),
                                            ("first-layer-without-z", "T")])
def test_each_bug_of_the_example_is_found_from_scratch_and_shrunk(tmp_path, bug, quantity):
    """fuzz finds each bug within 200 examples (no model given), shrinks it to a handful of
    neurons and inputs, and leaves the shrunk case with verify's report and a repro script
    that reproduces the disagreement."""
    out = tmp_path / "out"
    r = fuzz(out, "--impl", buggy(bug), "--max-examples", "200", "--shrink-time", "60")
    assert r.exit_code == 1, r.output
    assert "a disagreement after" in r.output and "Traceback" not in r.output
    model = read_model(out / "model.json")
    assert model.neurons <= 5 and len(np.load(out / "data.npz")["y"]) <= 3, r.output
    report = (out / "report.txt").read_text()
    if quantity:      # a wrong number: verify's report names the convention; the repro shows it
        assert report.splitlines()[0].startswith(f"finding: wrong: {quantity}")
        assert "diagnosis:" in report
        rerun = subprocess.run(["sh", str(out / "repro.sh")], capture_output=True, text=True)
        assert rerun.returncode == 1 and "verify: FAILED" in rerun.stdout
    else:             # the tie rule changes predictions: a wrong number, or the command's own A = 0
        assert report.splitlines()[0].startswith(("finding: wrong: ", "finding: crash: exit code 1; "
                                                                        "stderr: buggy_metrics: accuracy is 0"))


def test_a_rerun_starts_from_the_stored_failure(tmp_path):
    """The example database lives in OUT: the second run's first example is the stored shrunk
    failure, and it shrinks to the same case."""
    out = tmp_path / "out"
    first = fuzz(out, "--impl", buggy("first-layer-without-z"), "--max-examples", "200", "--no-importance",
                 "--no-bit-errors", "--seed", "3")
    assert first.exit_code == 1, first.output
    model = (out / "model.json").read_text()
    second = fuzz(out, "--impl", buggy("first-layer-without-z"), "--max-examples", "200", "--no-importance",
                  "--no-bit-errors", "--seed", "3")
    assert second.exit_code == 1
    assert "a disagreement after 1 example," in second.output
    assert (out / "model.json").read_text() == model


def test_the_same_seed_draws_the_same_examples(tmp_path):
    """Two runs with one seed hand the command the same files, in the same order; another seed
    other files."""
    def log_of(seed: int, name: str) -> list[str]:
        log = tmp_path / f"{name}.log"
        cmd = f"cat {{model}} {{data}} {{request}} | cksum >> {log}; " + CORRECT
        r = fuzz(tmp_path / name, "--impl", cmd, "--max-examples", "8", "--seed", str(seed), "--no-importance",
                 "--no-bit-errors")
        assert r.exit_code == 0, r.output
        return log.read_text().splitlines()

    a, b, c = log_of(5, "a"), log_of(5, "b"), log_of(6, "c")
    assert len(a) == 8 and a == b and a != c


def _finding(result) -> str:
    line = next(line for line in result.output.splitlines() if line.startswith("finding: "))
    return line.removeprefix("finding: ")


def test_a_crashing_command_is_a_finding_with_its_stderr(tmp_path):
    r = fuzz(tmp_path / "out", "--impl", "echo 'kaboom in mine.py' >&2; exit 3 # {claims}", "--shrink-time", "5")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert _finding(r) == "crash: exit code 3; stderr: kaboom in mine.py"
    assert "kaboom" in (tmp_path / "out" / "report.txt").read_text()


def _dead(pid: int) -> bool:
    """Gone, or a zombie waiting for a parent that is gone too."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_a_hanging_command_is_killed_with_its_children(tmp_path):
    """A timeout is a finding; the command's whole process group is killed, the child it left
    in the background included."""
    pids = tmp_path / "pids"
    r = fuzz(tmp_path / "out", "--impl", f"sleep 300 & echo $! >> {pids}; sleep 300 # {{claims}}",
             "--timeout", "0.5", "--shrink-time", "2")
    assert r.exit_code == 1, r.output
    assert _finding(r) == "timeout: no exit within 0.5 s (its process group was killed)"
    time.sleep(0.2)
    children = [int(p) for p in pids.read_text().split()]
    assert children and all(_dead(p) for p in children)


def test_a_background_child_of_a_finished_command_is_killed(tmp_path):
    pids = tmp_path / "pids"
    r = fuzz(tmp_path / "out", "--impl", f"sleep 300 & echo $! >> {pids}; printf garbage > {{claims}}",
             "--shrink-time", "2")
    assert r.exit_code == 1
    assert _finding(r).startswith("malformed: ")
    time.sleep(0.2)
    assert all(_dead(int(p)) for p in pids.read_text().split())


def test_garbage_claims_are_a_malformed_finding(tmp_path):
    r = fuzz(tmp_path / "out", "--impl", "printf '[1, 2' > {claims}", "--shrink-time", "2")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert _finding(r).startswith("malformed: ") and "claims.json" in _finding(r)


def test_no_claims_file_is_a_malformed_finding(tmp_path):
    r = fuzz(tmp_path / "out", "--impl", "true {claims}", "--shrink-time", "2")
    assert _finding(r) == "malformed: exit code 0 but no claims file written"


def test_an_omitted_requested_claim_is_a_missing_finding(tmp_path):
    drop = (f"{PY} -c \"import json, sys; d = json.load(open(sys.argv[1])); del d['var_importance']; "
            f"json.dump(d, open(sys.argv[1], 'w'))\" {{claims}}")
    r = fuzz(tmp_path / "out", "--impl", f"{CORRECT} && {drop}", "--no-bit-errors", "--shrink-time", "10")
    assert r.exit_code == 1
    assert _finding(r).startswith("missing: var_importance: the request asks for it")
    # shrunk: the smallest model that has a neuron, on one input
    model = read_model(tmp_path / "out" / "model.json")
    assert model.neurons == 1


def test_jobs_search_side_by_side_and_still_find_the_bug(tmp_path):
    r = fuzz(tmp_path / "out", "--impl", buggy("first-layer-without-z"), "--jobs", "2", "--no-importance",
             "--no-bit-errors", "--max-examples", "100")
    assert r.exit_code == 1, r.output
    assert _finding(r).startswith("wrong: ")


@pytest.mark.parametrize("args, message", [
    (["--impl", "mine {model}"], "must contain {claims}"),
    (["--impl", "mine {claims} {weights}"], "unknown placeholder"),
    (["--impl", "mine {claims}", "--features", "fc,gpu"], "'gpu' is not a feature"),
    (["--impl", "mine {claims}", "--features", "padding"], "keep fc or conv"),
    (["--impl", "mine {claims}", "--b", "1/0"], "--b"),
    (["--impl", "mine {claims}", "--out", "/proc/refbnn-cannot-be-here"], "--out: /proc/refbnn-cannot-be-here: cannot "
                                                                         "create the directory"),
])
def test_bad_options_exit_2_naming_them(tmp_path, args, message):
    r = fuzz(tmp_path / "out", *args)
    assert r.exit_code == 2 and message in r.output, r.output


@pytest.mark.slow
def test_a_trace_written_through_the_placeholder_is_reported(tmp_path):
    """With {trace}, report.txt and the terminal show the first divergence, its pattern (a tie)
    and the diagnosis of the traced values; repro.sh passes the trace to verify."""
    out = tmp_path / "out"
    r = fuzz(out, "--impl", buggy("tie-ge") + " {trace}", "--no-importance", "--no-bit-errors",
             "--shrink-time", "60")
    assert r.exit_code == 1, r.output
    report = (out / "report.txt").read_text()
    assert "first divergence: a" in report and "differences are at h = s (a threshold tie" in report
    assert "diagnosis: your traced values match refbnn exactly if a threshold tie (h = s) gives +1" in r.output
    assert "--trace" in (out / "repro.sh").read_text()


def test_without_hypothesis_the_commands_name_the_extra():
    """refbnn runs as before without Hypothesis; fuzz and conformance say which extra they need."""
    blocker = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name == 'hypothesis' or name.startswith('hypothesis.'):\n"
               "            raise ImportError('no hypothesis here')\n"
               "sys.meta_path.insert(0, Block())\n"
               "from refbnn.cli import main\n"
               "main(sys.argv[1:])\n")
    for args in (["fuzz", "--impl", "x {claims}"], ["conformance", "run", "--impl", "x {claims}"]):
        r = subprocess.run([PY, "-c", blocker, *args], capture_output=True, text=True)
        assert r.returncode == 2 and "pip install 'refbnn[fuzz]'" in r.stderr, r.stderr
    r = subprocess.run([PY, "-c", blocker, "inspect", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
