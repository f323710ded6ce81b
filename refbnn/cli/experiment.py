"""`refbnn experiment`: rerun the paper's Fig. 1, Table III and Fig. 2."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import click
from tabulate import tabulate

from ..experiments.cells import EXPERIMENTS, FAMILIES, FIG1_EVAL_BERS, PRESETS, TABLE3_BERS, Config, cells, check_config
from ..experiments.estimate import describe, estimate_seconds
from ..experiments.report import HEADERS, collect, summary_rows, write_report, write_results
from ..experiments.runner import connect, finished, run_cells
from ..formats.datafile import write_data
from ..formats.files import InputError, read_json, write_json
from ..reports.provenance import portable_command
from .common import SEED, Progress, json_option, parsed
from .group import main
from .options import parse_bers, parse_naturals

DEFAULT_BERS = {"table3": TABLE3_BERS, "fig1": (0.0, 0.05, 0.1, 0.2), "fig2": (0.0, 0.05)}


def _config(experiment, preset, dataset, family, sizes, train_ber, reps, epochs, seed, eval_ber, sweep_reps) -> Config:
    p = PRESETS[preset]
    fam = family or "fc"
    default_sizes = FAMILIES[fam] if experiment != "fig1" else (FAMILIES[fam][-1],)
    cfg = Config(experiment=experiment, dataset=dataset or p["dataset"], family=fam,
                 sizes=tuple(parsed(sizes, parse_naturals, "--sizes")) if sizes else default_sizes,
                 train_bers=tuple(b for _, b in parsed(train_ber, parse_bers, "--train-ber")) if train_ber else
                 DEFAULT_BERS[experiment],
                 reps=reps or p["reps"], epochs=epochs or p["epochs"], seed=seed,
                 eval_bers=tuple(b for _, b in parsed(eval_ber, parse_bers, "--eval-ber")) if eval_ber else FIG1_EVAL_BERS,
                 sweep_reps=sweep_reps or p["sweep_reps"])
    check_config(cfg)
    return cfg


def _same_config(out: Path, cfg: Config, resume: bool = False) -> bool:
    """True if `out` already holds this configuration or, with `resume`, the same one with
    fewer repetitions: its cells are then cells of this one, bit for bit (a cell's seed
    comes from its key, not from the count), and the run grows. An error naming the first
    parameter that differs if it holds another."""
    path = out / "experiment.json"
    if not path.exists():
        return False
    have = read_json(path)
    want = cfg.as_json()
    for key in want:
        if have.get(key) == want[key]:
            continue
        more = key == "reps" and isinstance(have.get(key), int) and have[key] < want[key]
        if more and resume:
            continue
        raise InputError(f"{path}: {key}: this directory holds a run with {key} = {have.get(key)!r}, "
                         f"not {want[key]!r}; results are never mixed (use another --out"
                         f"{', or --resume to add the repetitions to this run' if more else ''})")
    return True


@main.command("experiment", short_help="Rerun the paper's Fig. 1, Table III or Fig. 2, with statistics.")
@click.argument("experiment", type=click.Choice(EXPERIMENTS))
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="quick", show_default=True,
              help="quick: digits, 60 epochs, 3 repetitions (minutes); paper: Fashion-MNIST, 100 epochs, "
                   "10 repetitions (the paper's section V-A). Options below override it.")
@click.option("--dataset", default=None, help="digits, fashion-mnist, or any data set `refbnn train` reads.")
@click.option("--arch", "family", type=click.Choice(sorted(FAMILIES)), default=None,
              help="The Table III family: fc (N,N) or cnn (N,N,2N).  [default: fc]")
@click.option("--sizes", default=None, help="Comma-separated family sizes N (fc: 8..128, cnn: 8..64).")
@click.option("--train-ber", default=None, help="Comma-separated BERs during training.")
@click.option("--reps", type=click.IntRange(1, 1000), default=None, help="Repetitions (models) per cell.")
@click.option("--epochs", type=click.IntRange(1, 10**4), default=None)
@click.option("--seed", default=0, show_default=True, type=SEED,
              help="Every cell's seed is derived from it and the cell's key.")
@click.option("--eval-ber", default=None, help="fig1: BERs at inference for the accuracy curve.")
@click.option("--sweep-reps", type=click.IntRange(1, 1000), default=None,
              help="fig1: repetitions of the flip patterns per BER.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Results directory: models/, data/, cells/, results.json, results.csv, plots, report.md.")
@click.option("--jobs", type=click.IntRange(1, 1024), default=None,
              help="Local worker processes.  [default: the number of cores]")
@click.option("--scheduler", default=None, help="tcp://HOST:PORT of a Dask scheduler to run the cells on.")
@click.option("--resume", is_flag=True, help="Continue a run in --out: skip the finished cells. With more --reps "
                                              "than the run holds, add the repetitions to it.")
@click.option("--dry-run", is_flag=True, help="Only print the cells and the time estimate.")
@click.option("--report-only", is_flag=True,
              help="Run nothing: write results and report.md from the cells finished in --out so far "
                   "(a run stopped early; the report says what is missing, --resume continues it).")
@json_option
def experiment_cmd(experiment, preset, dataset, family, sizes, train_ber, reps, epochs, seed, eval_ber, sweep_reps,
                   out_dir, jobs, scheduler, resume, dry_run, report_only, json_path) -> None:
    """Rerun one of the paper's experiments: train every cell (architecture x training
    BER x repetition), measure it exactly, and write tables, plots and report.md.

    Cells have stable keys and seeds derived from them, so the results do not depend
    on where or in which order cells run: --jobs N runs them in local processes,
    --scheduler sends them to a Dask cluster, with the same results. --resume skips
    finished cells; killing a run loses at most the cells in flight. --resume with more
    --reps than the run in --out adds repetitions to it (its cells are cells of the larger
    run, bit for bit).
    """
    import os

    cfg = _config(experiment, preset, dataset, family, sizes, train_ber, reps, epochs, seed, eval_ber, sweep_reps)
    out = Path(out_dir)
    jobs = jobs or os.cpu_count() or 1
    client = connect(scheduler) if scheduler else None      # before anything is written
    from ..experiments.cells import dataset as load
    data = load(cfg.dataset)
    todo_all = cells(cfg)
    if report_only:
        if not _same_config(out, cfg):
            raise InputError(f"{out}/experiment.json: missing or another configuration; --report-only reports "
                             "the run of these options in --out")
        _finish(out, cfg, experiment, todo_all, None, [], json_path, jobs)
        return
    workers = len(client.scheduler_info()["workers"]) if client is not None else jobs
    seconds = estimate_seconds(cfg, data, [c for c in todo_all if not finished(out, c)])
    click.echo(f"{experiment}: {len(todo_all)} cells ({len(cfg.sizes)} sizes x {len(cfg.train_bers)} training "
               f"BERs x {cfg.reps} repetitions) on {cfg.dataset}, {cfg.epochs} epochs; estimated "
               f"{describe(seconds, workers)} (timed on a slice of each kind of cell)")
    if dry_run:
        return
    if _same_config(out, cfg, resume):
        if not resume and any(finished(out, c) for c in todo_all):
            raise InputError(f"{out}: holds results of this configuration; --resume continues it")
    elif resume and (out / "cells").exists():
        raise InputError(f"{out}/experiment.json: missing; --resume needs the directory of an earlier run")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "experiment.json", cfg.as_json())
    (out / "data").mkdir(exist_ok=True)
    write_data(out / "data" / "test.npz", data.x_test, data.y_test)
    # Repetition by repetition: a run stopped early has every cell of its first repetitions
    # rather than all repetitions of its first cells (the results do not depend on the order)
    todo = sorted((c for c in todo_all if not finished(out, c)), key=lambda c: c.rep)
    if len(todo) < len(todo_all):
        click.echo(f"--resume: {len(todo_all) - len(todo)} cells finished, {len(todo)} to run")
    start = time.perf_counter()
    try:
        with Progress("cells") as progress:
            failed = run_cells(out, todo, jobs, client, progress)
    finally:
        if client is not None:
            client.close()
    _finish(out, cfg, experiment, todo_all, time.perf_counter() - start, failed, json_path, jobs)


def _finish(out: Path, cfg, experiment: str, todo_all: list, elapsed: Optional[float], failed: list,
            json_path: Optional[str], jobs: int = 1) -> None:
    """results.json, results.csv and report.md from the finished cells (the report's
    recomputations on `jobs` local processes); the summary."""
    records = collect(out, cfg)
    write_results(out, cfg, records)
    argv = [a for a in sys.argv[1:] if a != "--report-only"]      # the run's own command
    command = portable_command(argv, out) if argv[:1] == ["experiment"] else \
        f"refbnn experiment {experiment} (called from Python)"
    figures = write_report(out, cfg, records, command, elapsed, jobs)
    click.echo(tabulate(summary_rows(cfg, records), headers=HEADERS))
    click.echo(f"wrote {out}/results.json, results.csv, report.md" + (f", {', '.join(figures)}" if figures else
                                                                       " (plots skipped: no matplotlib)"))
    if json_path:       # the run's summary; every number is in OUT/results.json
        write_json(json_path, {"experiment": experiment, "out": str(out), "config": cfg.as_json(),
                               "cells": len(todo_all), "finished": len(records), "failed": list(failed),
                               "results": str(out / "results.json"), "report": str(out / "report.md"),
                               "figures": figures})
    if failed:
        click.echo(f"{len(failed)} cells failed (their workers died twice): {', '.join(failed[:5])}; "
                   "--resume runs them again")
        sys.exit(1)
