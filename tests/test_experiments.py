"""`refbnn experiment` (docs/experiments.md): results equal `refbnn metrics` on the saved
files, a local pool and a Dask LocalCluster give identical results, a killed run resumes
to the same results, a dying worker's cell is retried once and stored once, and bad
input exits 2 with nothing half written."""
from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("sklearn")            # the digits data set

from refbnn.cli import main  # noqa: E402
from refbnn.experiments.cells import Config, cells  # noqa: E402
from refbnn.experiments.verdicts import permutation_p  # noqa: E402

TINY = ["--sizes", "8", "--train-ber", "0,0.1", "--reps", "2", "--epochs", "2"]


def _run(*args):
    return CliRunner().invoke(main, ["experiment", *map(str, args)])


@pytest.fixture(scope="module")
def table3_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "t3"
    r = _run("table3", *TINY, "--out", out, "--jobs", "1", "--json", out.parent / "run.json")
    assert r.exit_code == 0, r.output
    return out


def test_the_run_summary_names_its_cells_and_files(table3_run):
    """--json: the 4 cells of TINY (1 size x 2 training BERs x 2 repetitions), all finished."""
    run = json.loads((table3_run.parent / "run.json").read_text())
    assert (run["cells"], run["finished"], run["failed"]) == (4, 4, [])
    assert run["results"] == str(table3_run / "results.json") and run["config"]["experiment"] == "table3"


def test_every_number_equals_refbnn_metrics_on_the_saved_files(table3_run):
    """Property: every cell's record holds exactly what `refbnn metrics --importance --json`
    gives on its saved model and test data, and results.json lists every cell once."""
    records = json.loads((table3_run / "results.json").read_text())
    assert len(records) == 4 and len({r["key"] for r in records}) == 4
    for r in records:
        js = table3_run / "m.json"
        m = CliRunner().invoke(main, ["metrics", str(table3_run / r["model"]), str(table3_run / r["data"]),
                                      "--importance", "--json", str(js)])
        assert m.exit_code == 0
        doc = json.loads(js.read_text())
        for key in ("accuracy", "T", "T_bar", "layers", "importance", "var_importance", "inputs", "neurons"):
            assert r[key] == doc[key], key
    csv = (table3_run / "results.csv").read_text().splitlines()
    assert csv[0].startswith("arch,train_ber,rep,seed,accuracy") and len(csv) == 5


def test_report_and_plots(table3_run):
    """Property: report.md shows the table, links the plot, states each tested claim with its
    p-values; the PNG is a real image of readable size with more than one colour."""
    pytest.importorskip("matplotlib")
    report = (table3_run / "report.md").read_text()
    assert "| fc-8" in report and "![table3.png](table3.png)" in report
    assert "flip training raises T-bar" in report and "p = " in report
    png = (table3_run / "table3.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 800 and height >= 300
    import matplotlib.pyplot as plt
    pixels = plt.imread(str(table3_run / "table3.png"))
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 10
    assert (table3_run / "table3.svg").read_text().lstrip().startswith("<?xml")


def test_fig1_and_fig2_write_their_figures(tmp_path):
    """Property: fig1 measures accuracy over BER per cell (the eval layout, with intervals)
    and draws fig1.png; fig2 records Pi per neuron and draws fig2.png."""
    pytest.importorskip("matplotlib")
    r = _run("fig1", "--sizes", "8", "--train-ber", "0,0.1", "--reps", "2", "--epochs", "2",
             "--eval-ber", "0,0.1,0.3", "--sweep-reps", "2", "--out", tmp_path / "f1", "--jobs", "1")
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "f1" / "results.json").read_text())[0]
    assert [e["ber"] for e in rec["bit_errors"]["results"]] == ["0", "0.1", "0.3"]
    assert (tmp_path / "f1" / "fig1.png").stat().st_size > 10_000
    r = _run("fig2", "--sizes", "8,16", "--reps", "1", "--epochs", "2", "--out", tmp_path / "f2", "--jobs", "1")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "f2" / "fig2.png").stat().st_size > 10_000
    assert "VAR(Pi)" in (tmp_path / "f2" / "report.md").read_text()


def test_local_pool_and_dask_local_cluster_give_identical_results(table3_run, tmp_path):
    """Property: the same configuration run in 2 local processes and on a
    distributed.LocalCluster of 2 worker processes writes a results.json identical to the
    in-process run, byte for byte."""
    distributed = pytest.importorskip("distributed")
    r = _run("table3", *TINY, "--out", tmp_path / "pool", "--jobs", "2")
    assert r.exit_code == 0, r.output
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        r = _run("table3", *TINY, "--out", tmp_path / "dask", "--scheduler", cluster.scheduler_address)
    assert r.exit_code == 0, r.output
    reference = (table3_run / "results.json").read_bytes()
    assert (tmp_path / "pool" / "results.json").read_bytes() == reference
    assert (tmp_path / "dask" / "results.json").read_bytes() == reference


def test_killed_run_resumes_to_the_same_results(table3_run, tmp_path):
    """Property: a run killed with SIGKILL after some cells and restarted with --resume gives
    a results.json identical to the uninterrupted run's; no cell is recorded twice."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "refbnn.cli", "experiment", "table3", *TINY, "--out", str(out), "--jobs", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "cells").glob("*.json")) if (out / "cells").exists() else []) < 1:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((out / "cells").glob("*.json")))
    assert 1 <= done < 4, "the kill came too late to test anything"
    r = _run("table3", *TINY, "--out", out, "--resume", "--jobs", "1")
    assert r.exit_code == 0 and f"{done} cells finished" in r.output, r.output
    assert (out / "results.json").read_bytes() == (table3_run / "results.json").read_bytes()


def test_a_dying_worker_is_retried_and_its_cell_stored_once(table3_run, tmp_path, monkeypatch):
    """Property: when a worker process dies mid-cell, the cell runs again (once) and every cell
    is stored exactly once, with the same numbers as an undisturbed run."""
    from experiment_worker import dies_once

    from refbnn.experiments import runner

    monkeypatch.setenv("REFBNN_TEST_MARKER", str(tmp_path / "died"))
    cfg = Config.from_json(json.loads((table3_run / "experiment.json").read_text()))
    out = tmp_path / "retry"
    (out / "models").mkdir(parents=True)
    (out / "cells").mkdir()
    stored = []
    failed = runner._pool(cells(cfg), 2, lambda res: (stored.append(res["key"]), runner._store(out, res)), dies_once)
    assert failed == [] and (tmp_path / "died").exists()
    assert sorted(stored) == sorted(c.key for c in cells(cfg))
    for c in cells(cfg):
        assert (out / "cells" / f"{c.key}.json").read_text() == (table3_run / "cells" / f"{c.key}.json").read_text()


@pytest.mark.parametrize("args, message", [
    (["table3", "--sizes", "7"], "--sizes: [7]: the fc family has sizes 8, 16, 32, 64, 128"),
    (["table3", "--train-ber", "0,1"], "--train-ber: every BER must lie in [0, 1)"),
    (["table3", "--train-ber", "0,x"], "--train-ber: 'x' is not a number"),
    (["fig3"], "'fig3' is not one of 'fig1', 'table3', 'fig2'"),
    (["table3", "--scheduler", "tcp://127.0.0.1:9"], "--scheduler: cannot reach tcp://127.0.0.1:9 within 5 s"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, args, message):
    """Property: bad experiment names, sizes, BERs and an unreachable scheduler exit 2 with one
    line naming the option, within seconds, and the results directory is never created."""
    start = time.time()
    r = _run(*args, *(["--out", tmp_path / "o"] if args[0] != "fig3" else []))
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "o").exists()
    assert time.time() - start < 20


def test_results_of_another_configuration_are_never_mixed(table3_run):
    """Property: a directory that holds another configuration is refused, naming the parameter
    that differs; the same configuration without --resume is refused too."""
    r = _run("table3", "--sizes", "8", "--train-ber", "0,0.1", "--reps", "2", "--epochs", "3", "--out", table3_run)
    assert r.exit_code == 2 and "epochs: this directory holds a run with epochs = 2, not 3" in r.output
    r = _run("table3", *TINY, "--out", table3_run)
    assert r.exit_code == 2 and "--resume continues it" in r.output


def test_more_repetitions_grow_a_run_with_resume(table3_run, tmp_path):
    """Property: a run of one repetition continued with --reps 2 --resume keeps its cells
    byte for byte, runs only the new repetition, and gives the results.json of the
    two-repetition run from scratch (a cell's seed comes from its key, not from the count);
    without --resume it is refused with that advice, and fewer repetitions are refused."""
    out = tmp_path / "grown"
    one = ["--sizes", "8", "--train-ber", "0,0.1", "--reps", "1", "--epochs", "2"]    # TINY with one repetition
    assert _run("table3", *one, "--out", out, "--jobs", "1").exit_code == 0
    first = {p.name: p.read_bytes() for p in (out / "cells").glob("*.json")}
    assert len(first) == 2
    r = _run("table3", *TINY, "--out", out, "--jobs", "1")
    assert r.exit_code == 2 and "reps = 1, not 2" in r.output and "--resume to add the repetitions" in r.output
    r = _run("table3", *TINY, "--out", out, "--jobs", "1", "--resume")
    assert r.exit_code == 0 and "2 cells finished, 2 to run" in r.output, r.output
    assert all((out / "cells" / name).read_bytes() == data for name, data in first.items())
    assert (out / "results.json").read_bytes() == (table3_run / "results.json").read_bytes()
    r = _run("table3", *one, "--out", out, "--jobs", "1", "--resume")
    assert r.exit_code == 2 and "reps = 2, not 1" in r.output and "--resume to add" not in r.output


def test_permutation_test_by_hand():
    """Property: the exact one-sided permutation p of the U statistic, by hand: higher = [3, 4]
    against lower = [1, 2] is the most extreme of C(4, 2) = 6 splits, p = 1/6; identical
    samples give p = 1 (every split is at least as extreme, ties counting 1/2)."""
    assert permutation_p([1, 2], [3, 4]) == pytest.approx(1 / 6)
    assert permutation_p([1, 1], [1, 1]) == 1.0
    assert permutation_p([3, 4], [1, 2]) == 1.0


def test_paper_preset_prints_its_cost():
    """Property: --preset paper --dry-run states the paper's budget (Fashion, 100 epochs, 10
    repetitions, 300 cells) and an estimate, and runs nothing."""
    pytest.importorskip("sklearn")
    fashion = Path("/usr/share/datasets/fashion-mnist")
    if not fashion.exists():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    r = _run("table3", "--preset", "paper", "--out", "/nonexistent/x", "--dry-run")
    assert r.exit_code == 0 and "300 cells" in r.output and "100 epochs" in r.output
    assert re.search(r"estimated [0-9.]+ (min|h) of one core, [0-9.]+ (min|h) on \d+ workers? \(timed", r.output)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["table3", "fig1"])
def test_quick_presets_run_and_match_refbnn_metrics(experiment, tmp_path):
    """Property: `refbnn experiment table3|fig1 --preset quick` runs as the README says,
    writes the table, plot and report, and every record's metrics equal `refbnn metrics`
    on its saved model (checked on one cell per architecture and training BER)."""
    pytest.importorskip("matplotlib")
    out = tmp_path / experiment
    r = _run(experiment, "--preset", "quick", "--out", out, "--jobs", "2")
    assert r.exit_code == 0, r.output
    assert (out / f"{experiment}.png").exists() and "## The paper's claims, here" in (out / "report.md").read_text()
    records = json.loads((out / "results.json").read_text())
    assert len(records) == {"table3": 90, "fig1": 12}[experiment]
    for rec in (r for r in records if r["rep"] == 0):
        js = tmp_path / "m.json"
        args = ["metrics", str(out / rec["model"]), str(out / rec["data"]), "--b", ",".join(rec["T"]), "--json", str(js)]
        assert CliRunner().invoke(main, args + (["--importance"] if "importance" in rec else [])).exit_code == 0
        doc = json.loads(js.read_text())
        assert all(rec[k] == doc[k] for k in ("accuracy", "T", "T_bar", "layers")), rec["key"]
        if "importance" in rec:
            assert rec["importance"] == doc["importance"] and rec["var_importance"] == doc["var_importance"]


def test_without_matplotlib_the_report_says_plots_were_skipped(tmp_path, monkeypatch):
    """Property: without the plots extra everything else still runs, and report.md and the
    command's output say that the plots were skipped."""
    from refbnn.experiments import plots

    monkeypatch.setattr(plots, "available", lambda: False)
    r = _run("table3", "--sizes", "8", "--train-ber", "0", "--reps", "1", "--epochs", "1",
             "--out", tmp_path / "np", "--jobs", "1")
    assert r.exit_code == 0 and "plots skipped" in r.output
    assert "Plots were skipped: matplotlib is not installed" in (tmp_path / "np" / "report.md").read_text()
    assert not list((tmp_path / "np").glob("*.png"))


def test_the_estimate_counts_the_cells_still_to_run_by_kind(monkeypatch):
    """estimate_seconds times each kind of cell (architecture, flips or not) once and sums
    over the cells given: none gives 0, and a cell of a timed kind adds that kind's time."""
    pytest.importorskip("sklearn")
    from refbnn.experiments import estimate
    from refbnn.experiments.cells import dataset

    timed = []

    def fake_cost(config, data, arch, flips):
        timed.append((arch, flips))
        return estimate.CellCost(10.0 if flips else 4.0, 1.0)

    monkeypatch.setattr(estimate, "cell_cost", fake_cost)
    config = Config("table3", sizes=(8, 16), train_bers=(0.0, 0.05, 0.1), reps=2)
    todo = cells(config)
    data = dataset("digits")
    assert estimate.estimate_seconds(config, data, []) == 0
    # per size: 2 reps at 0% (5 s each) + 4 cells with flips (11 s each) = 54 s; two sizes
    assert estimate.estimate_seconds(config, data, todo) == 2 * (2 * 5.0 + 4 * 11.0)
    assert sorted(timed) == [("fc-16", False), ("fc-16", True), ("fc-8", False), ("fc-8", True)]


def test_a_slice_of_a_cell_is_really_timed():
    """cell_cost runs the trainer and Algorithm 1 for real on slices: positive times that
    grow with the epochs (training) but not the measurement."""
    pytest.importorskip("sklearn")
    from refbnn.experiments.cells import dataset
    from refbnn.experiments.estimate import cell_cost

    data = dataset("digits")
    short = cell_cost(Config("table3", epochs=2), data, "fc-8", False)
    long = cell_cost(Config("table3", epochs=200), data, "fc-8", False)
    assert 0 < short.train < long.train and short.measure > 0


def _scripted_cost(monkeypatch, config, flips, copies=3):
    """cell_cost with every timing replaced by a known number: the slice's training steps
    take 6 s (1 s a step), an evaluation of the 500-input slice 2 s, the measurement of the
    slice 3 s. Each timed function still runs, and what it is and returns is kept: the
    trainer (its config and data when timed), then the results of the evaluation and the
    measurement. The test set is the digits' repeated three times (1,347 inputs), so the
    slice's times scale by 1,347 / 500. Returns (cost, what was timed, steps per epoch, scale)."""
    from refbnn.experiments import estimate
    from refbnn.experiments.cells import dataset
    from refbnn.training.datasets import DataSplit

    digits = dataset("digits")
    data = DataSplit(digits.x_train, digits.y_train, np.concatenate([digits.x_test] * copies),
                     np.concatenate([digits.y_test] * copies), digits.Z, digits.classes, digits.name)
    timed = []

    def fake(f):
        if not timed:                  # the training steps: the trainer as it is then
            timed.append((f.__self__.cfg, len(f.__self__.data.y_train)))
        engines = [c.cell_contents for c in (getattr(f, "__closure__", None) or ())
                   if type(c.cell_contents).__name__ == "FastEngine"]
        timed.append((f(), engines[0].threads if engines else None))
        return (6.0, 2.0, 3.0)[len(timed) - 2]
    monkeypatch.setattr(estimate, "_timed", fake)
    cost = estimate.cell_cost(config, data, "fc-8", flips)
    return cost, timed, -(-len(data.y_train) // 128), len(data.y_test) / 500


def test_the_cost_of_a_table3_cell_by_its_arithmetic(monkeypatch):
    """Training: 1 s a step x steps per epoch x 7 epochs, plus an evaluation of the test set
    after each epoch (2 s x scale); measurement: Algorithm 1 (3 s x scale) plus one
    evaluation. The timed steps are 6 of 128 inputs on one thread, with flips at 5% for a
    flip-trained cell; the evaluation predicts the 500-input slice, the measurement is
    Algorithm 1 (one Pi per hidden neuron: 8), both on one thread."""
    pytest.importorskip("sklearn")
    cost, timed, steps, scale = _scripted_cost(monkeypatch, Config("table3", epochs=7), True)
    cfg, n = timed[0]
    assert (cfg.train_ber, cfg.batch_size, cfg.threads, n) == (0.05, 128, 1, 6 * 128)
    assert len(timed) == 4 and len(timed[2][0]) == 500 and len(timed[3][0]) == 16
    assert timed[2][1] == timed[3][1] == 1
    assert scale == 1347 / 500          # 3 x 449 test inputs, timed on a slice of 500
    assert cost.train == pytest.approx(1.0 * steps * 7 + 2.0 * scale * 7)
    assert cost.measure == pytest.approx(3.0 * scale + 2.0 * scale)
    assert cost.total == cost.train + cost.measure
    small, _, _, _ = _scripted_cost(monkeypatch, Config("table3", epochs=7), True, copies=1)
    assert small.measure == pytest.approx(3.0 + 2.0)      # 449 test inputs: the slice is all of them, scale 1


def test_the_cost_of_a_fig1_cell_by_its_arithmetic(monkeypatch):
    """fig1 measures the accuracy sweep instead: one repetition at the largest BER timed
    (3 s x scale), times the BERs evaluated (4) and the sweep's repetitions (5); a regular
    cell trains without flips."""
    pytest.importorskip("sklearn")
    from refbnn.experiments import estimate

    asked = []
    sweep = estimate.accuracy_sweep
    monkeypatch.setattr(estimate, "accuracy_sweep", lambda *a: asked.append(a[3:5]) or sweep(*a))
    config = Config("fig1", epochs=2, eval_bers=(0.0, 0.01, 0.05, 0.1), sweep_reps=5)
    cost, timed, steps, scale = _scripted_cost(monkeypatch, config, False)
    assert timed[0][0].train_ber == 0.0
    assert [(bers[0][1], reps) for bers, reps in asked] == [(0.1, 1)] and len(timed[3][0][0].accuracies) == 1
    assert cost.train == pytest.approx(1.0 * steps * 2 + 2.0 * scale * 2)
    assert cost.measure == pytest.approx(3.0 * scale * 4 * 5 + 2.0 * scale)


def test_the_timer_and_the_slices(monkeypatch):
    """_timed is the clock's difference around the call (a fake clock reading 10 then 12.5
    gives 2.5); _first_steps keeps the first n training inputs, the first 128 test inputs
    with their labels, and the data set's Z, classes and name."""
    pytest.importorskip("sklearn")
    from refbnn.experiments import estimate
    from refbnn.experiments.cells import dataset

    clock = iter([10.0, 12.5])
    monkeypatch.setattr(estimate.time, "perf_counter", lambda: next(clock))
    called = []
    assert estimate._timed(lambda: called.append(1)) == 2.5 and called == [1]
    data = dataset("digits")
    cut = estimate._first_steps(data, 300)
    assert np.array_equal(cut.x_train, data.x_train[:300]) and np.array_equal(cut.y_train, data.y_train[:300])
    assert np.array_equal(cut.x_test, data.x_test[:128]) and np.array_equal(cut.y_test, data.y_test[:128])
    assert (cut.Z, cut.classes, cut.name) == (data.Z, data.classes, data.name)


@pytest.mark.parametrize("seconds, workers, text", [
    (750, 2, "12.5 min of one core, 6.2 min on 2 workers"),       # 750 s = 12.5 min; / 2 = 6.25 -> 6.2
    (3 * 3600 - 60, 1, "179.0 min of one core, 179.0 min on 1 worker"),
    (3 * 3600, 4, "3.0 h of one core, 45.0 min on 4 workers"),    # from 3 h on in hours
    (100 * 3600, 1, "100.0 h of one core, 100.0 h on 1 worker"),
    (12061, 1, "3.4 h of one core, 3.4 h on 1 worker"),            # 3.35028 h: rounds up, in hours of 3,600 s
    (600, 0, "10.0 min of one core, 10.0 min on 0 workers"),      # 0 workers: divided by 1
])
def test_the_estimate_in_words(seconds, workers, text):
    from refbnn.experiments.estimate import describe
    assert describe(seconds, workers) == text


def test_report_only_reports_the_finished_cells_and_names_what_is_missing(tmp_path):
    """A run stopped after some cells: --report-only writes results and report.md from those,
    says how many of how many and which (arch, BER) have none, and runs nothing."""
    pytest.importorskip("sklearn")
    out = tmp_path / "t3"
    args = ["table3", "--sizes", "8", "--train-ber", "0,0.05", "--reps", "1", "--epochs", "1", "--out", out,
            "--jobs", "1"]
    r = _run(*args)
    assert r.exit_code == 0, r.output
    (out / "cells" / "fc-8_ber0.05_rep0.json").unlink()       # as if the run had stopped before it
    (out / "report.md").unlink()
    r = _run(*args, "--report-only")
    assert r.exit_code == 0, r.output
    report = (out / "report.md").read_text()
    assert "**Unfinished: 1 of 2 cells.** Cells with no repetition yet: fc-8 at 5%." in report
    assert "(reported with --report-only)" in report
    assert not (out / "cells" / "fc-8_ber0.05_rep0.json").exists()     # nothing was run
    r = _run("table3", "--sizes", "16", "--train-ber", "0", "--reps", "1", "--epochs", "1", "--out", out,
             "--report-only")
    assert r.exit_code == 2 and "sizes: this directory holds a run with sizes = [8], not [16]" in r.output


def test_cells_run_repetition_by_repetition(tmp_path, monkeypatch):
    """Every cell's repetition 0 is handed out before any cell's repetition 1 (TINY: 2 BERs x
    2 repetitions), so a run stopped early holds whole tables with fewer repetitions."""
    import refbnn.cli.experiment as command

    handed = []

    def record(out, todo, *args):
        handed.extend(c.key for c in todo)
        raise KeyboardInterrupt            # stop here: the order is all this test needs

    monkeypatch.setattr(command, "run_cells", record)
    _run("table3", *TINY, "--out", tmp_path / "t3", "--jobs", "2")
    assert handed == ["fc-8_ber0_rep0", "fc-8_ber0.1_rep0", "fc-8_ber0_rep1", "fc-8_ber0.1_rep1"]


def test_a_cell_trains_on_one_thread_and_one_blas_thread(monkeypatch):
    """run_cell trains with TrainConfig.threads = 1 (the runner's parallelism is its cells)
    and with BLAS held to one thread, which is let go afterwards."""
    from threadpoolctl import threadpool_info

    import refbnn.experiments.cells as cells_module

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    seen = []

    def fake_train(tc, data):
        seen.append((tc.threads, blas_threads()))
        raise KeyboardInterrupt            # what the cell trains with is all this test needs

    monkeypatch.setattr(cells_module, "train", fake_train)
    monkeypatch.setattr(cells_module, "dataset", lambda name: None)
    before = blas_threads()
    with pytest.raises(KeyboardInterrupt):
        cells_module.run_cell(cells(Config("table3", sizes=(8,), train_bers=(0.0,), reps=1))[0])
    assert seen == [(1, {1})] and blas_threads() == before
