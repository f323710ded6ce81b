"""Run experiment cells: in this process, in a local process pool, or on a Dask cluster
(docs/experiments.md). Results are written by this process only, atomically, one cell
at a time: a cell's record file is written last, so its presence means the cell is
complete, `resume` skips it, and a killed run loses only the cells in flight.
"""
from __future__ import annotations

from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable, Optional

from ..formats.files import InputError, read_json, write_json
from .cells import Cell, run_cell
from .workers import worker_pool

RETRIES = 1      # a cell whose worker died is run once more, then reported


def record_path(out: Path, cell: Cell) -> Path:
    return out / "cells" / f"{cell.key}.json"


def finished(out: Path, cell: Cell) -> bool:
    """A record and its model file both present and readable."""
    rec = record_path(out, cell)
    if not rec.exists() or not (out / "models" / f"{cell.key}.json").exists():
        return False
    try:
        read_json(rec)
        return True
    except InputError:
        return False     # a damaged record: run the cell again


def _store(out: Path, result: dict) -> None:
    write_json(out / "models" / f"{result['key']}.json", result["model"])
    write_json(out / "cells" / f"{result['key']}.json", result["record"])   # last: marks the cell done


def run_cells(out: Path, todo: list[Cell], jobs: int, client=None,
              progress: Optional[Callable[[int, int], None]] = None) -> list[str]:
    """Run the cells (on the Dask `client` if given, else in a pool of `jobs` processes) and
    store each result as it arrives; returns the keys of cells that failed."""
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    done = 0

    def store(result: dict) -> None:
        nonlocal done
        _store(out, result)
        done += 1
        if progress:
            progress(done, len(todo))

    if client is not None:
        return _dask(todo, client, store)
    if jobs <= 1:
        for cell in todo:
            store(run_cell(cell))
        return []
    return _pool(todo, jobs, store)


def _pool(todo: list[Cell], jobs: int, store, fn: Callable[[Cell], dict] = run_cell) -> list[str]:
    failed: list[str] = []
    pending, attempts = list(todo), {c.key: 0 for c in todo}
    while pending:
        retry = []
        with worker_pool(jobs) as pool:
            futures = {pool.submit(fn, c): c for c in pending}
            for fut in as_completed(futures):
                cell = futures[fut]
                try:
                    store(fut.result())
                except BrokenProcessPool:
                    attempts[cell.key] += 1
                    (retry if attempts[cell.key] <= RETRIES else failed).append(cell)
        pending = retry
    return [c.key for c in failed]


def connect(scheduler: str):
    """A client of the Dask scheduler at `scheduler`, or a one-line error within 5 s."""
    try:
        from distributed import Client
    except ImportError:
        raise InputError("--scheduler: needs dask.distributed: pip install 'refbnn[dask]'") from None
    try:
        return Client(scheduler, timeout="5s")
    except (OSError, TimeoutError, ValueError) as e:
        raise InputError(f"--scheduler: cannot reach {scheduler} within 5 s ({type(e).__name__})") from None


def _dask(todo: list[Cell], client, store) -> list[str]:
    from distributed import as_completed as dask_completed

    failed = []
    futures = client.map(run_cell, todo, key=[f"refbnn-{c.config.experiment}-{c.key}" for c in todo],
                         pure=False, retries=RETRIES)
    by_key = {f.key: c for f, c in zip(futures, todo)}
    for fut in dask_completed(futures):
        try:
            store(fut.result())
        except Exception:     # the task failed on its worker, retries included: report it
            failed.append(by_key[fut.key].key)
    return failed
