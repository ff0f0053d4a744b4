"""Search algorithm choice, block summaries for pruning, and checks on search options."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np

from kernels import AUTO, BMW, EXHAUSTIVE, MAXSCORE, MAXSCORE_TAAT, build_blocks, term_max_impact
from kernels.layout import is_packed

ALGORITHMS = ("auto", "exhaustive", "maxscore", "maxscore-taat", "bmw")
ALGORITHM_CODES = {
    "auto": AUTO,
    "maxscore": MAXSCORE,
    "bmw": BMW,
    "exhaustive": EXHAUSTIVE,
    "maxscore-taat": MAXSCORE_TAAT,
}
BLOCK_SIZE = 64


def maxima_dtype(impacts: np.ndarray) -> type:
    """The narrowest exact type for maxima of these impacts: uint8 for uint8 impacts (packed
    or not), float32 otherwise."""
    return np.uint8 if is_packed(impacts) or impacts.dtype == np.uint8 else np.float32


@dataclass
class Blocks:
    """Per-term maximum impact and per-block (``size`` postings) maxima and last doc numbers."""

    max_impact: np.ndarray
    offsets: np.ndarray
    max: np.ndarray
    last: np.ndarray
    size: int = BLOCK_SIZE

    @classmethod
    def build(cls, offsets, docs, impacts, size: int = BLOCK_SIZE) -> Blocks:
        """Block tables in the narrowest exact types: maxima as uint8 when impacts are uint8
        (packed or not), block numbers as int32 while they fit."""
        block_offsets, block_max, block_last = build_blocks(offsets, docs, impacts, size)
        max_impact = term_max_impact(offsets, docs, impacts)
        if maxima_dtype(impacts) == np.uint8:
            block_max, max_impact = block_max.astype(np.uint8), max_impact.astype(np.uint8)
        if block_offsets[-1] < np.iinfo(np.int32).max:
            block_offsets = block_offsets.astype(np.int32)
        return cls(max_impact, block_offsets, block_max, block_last, size)


def check_threads(threads: object) -> int | None:
    """``threads`` (a positive int, or None for all of Numba's threads), or an error."""
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1
    ):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}.")
    return None if threads is None else int(threads)


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


def check_query_terms(m: object) -> int:
    """``query_terms`` (how many of a query's heaviest terms to keep) as an int, or an error."""
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"query_terms must be a positive integer, got {m!r}.")
    return int(m)


def algorithm_code(algorithm: str, theta: float) -> int:
    """Validate a search request; the kernel code of ``algorithm`` (``auto`` is resolved per
    query inside the kernels: term-at-a-time MaxScore on large collections and exhaustive on
    small ones when exact; with ``theta`` > 1 MaxScore for short queries, block-max WAND for
    long, expanded ones)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}.")
    if (
        isinstance(theta, bool)
        or not isinstance(theta, (int, float))
        or not (math.isfinite(theta) and theta >= 1.0)
    ):
        raise ValueError(f"theta must be a number >= 1 (1 = exact), got {theta!r}.")
    if algorithm in ("exhaustive", "maxscore-taat") and theta != 1.0:
        raise ValueError(f"theta > 1 needs maxscore or bmw; {algorithm} is exact only.")
    return ALGORITHM_CODES[algorithm]
