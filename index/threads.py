"""How many threads a batch of searches runs on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numba

from lsr.checks import positive_int


def check_threads(threads: object) -> int | None:
    """``threads`` (a positive int, or None for all of Numba's threads), or an error."""
    return positive_int(threads, "threads", optional=True)


@contextmanager
def parallel_threads(threads: int | None) -> Iterator[int]:
    """Run the enclosed parallel kernels on ``threads`` threads (None: all Numba has, capped
    by it); yields the count in use and restores the previous setting afterwards."""
    previous = numba.get_num_threads()
    n = previous if threads is None else min(threads, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(previous)
