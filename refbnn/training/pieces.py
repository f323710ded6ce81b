"""The trainer's element-wise work in pieces (`over_batch`), and work arrays kept from one
training step to the next (`buffer`), so that a step's tensors stay in the cache and
fresh memory is not paid for on every step."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np

PIECE_BYTES = 2**21   # a piece of element-wise work: about this many bytes of one tensor,
                      # so that the piece's tensors stay in the cache
_pool: Optional[ThreadPoolExecutor] = None
_pool_key = (0, 0)   # (process, threads) of _pool: a forked worker inherits it without its threads


def over_batch(work: Callable[[slice], None], n: int, item_bytes: int, threads: int = 1) -> None:
    """Run work(sl) for the batch of n inputs in pieces of about PIECE_BYTES (an input's
    share of the tensor is item_bytes), on `threads` threads (0: one per core, at most 4;
    NumPy releases the GIL in its loops). Only for element-wise work that writes its piece's part of preallocated
    outputs: each entry is computed the same way in whatever piece or thread it falls, so
    results depend on neither the piece size nor the number of threads."""
    global _pool, _pool_key
    size = max(1, PIECE_BYTES // max(item_bytes, 1))
    pieces = [slice(i, min(i + size, n)) for i in range(0, n, size)]
    threads = threads or max(1, min(4, len(os.sched_getaffinity(0))))
    if threads == 1 or len(pieces) == 1:
        for sl in pieces:
            work(sl)
        return
    if _pool is None or _pool_key != (os.getpid(), threads):
        _pool, _pool_key = ThreadPoolExecutor(threads), (os.getpid(), threads)
    for _ in _pool.map(work, pieces):
        pass            # (iterating raises a piece's exception here)


def buffer(owner: object, name: str, shape: tuple, dtype, zeros: bool = False) -> np.ndarray:
    """A work array of `owner` kept from one training step to the next: allocated once per
    shape, then reused. Fresh memory costs a page fault per 4 KiB page on first touch (and
    arrays past glibc's mmap threshold are fresh every time): 10-15% of a CNN step. The
    contents are what the last use left, except that one made with zeros=True starts
    zeroed, for users that keep the zeros they rely on (a padding border nobody writes).
    Valid until the owner's next forward or backward."""
    return _reused(owner, name, (tuple(shape), np.dtype(dtype), zeros),
                   lambda: (np.zeros if zeros else np.empty)(shape, dtype))


def buffer_like(owner: object, name: str, x: np.ndarray, dtype=None) -> np.ndarray:
    """As `buffer`, with x's shape and memory layout (what np.empty_like(x, dtype) gives)."""
    dtype = np.dtype(x.dtype if dtype is None else dtype)
    layout = tuple(s // x.itemsize for s in x.strides)
    return _reused(owner, name, (x.shape, layout, dtype), lambda: np.empty_like(x, dtype=dtype))


def _reused(owner: object, name: str, key: tuple, make: Callable[[], np.ndarray]) -> np.ndarray:
    buffers = owner.__dict__.setdefault("_buffers", {})
    if name not in buffers or buffers[name][0] != key:
        buffers[name] = (key, make())
    return buffers[name][1]
