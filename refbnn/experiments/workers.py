"""The one way experiments use more than one core: a pool of fresh worker processes, each
with one BLAS thread, so that a cell gives the same model in every process."""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """`jobs` worker processes started with `spawn` (clean, nothing inherited), each with one
    BLAS thread: OPENBLAS_NUM_THREADS is read when a worker imports NumPy, and inside the
    work `refbnn.engines.fast.one_blas_thread` holds it there as well."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
