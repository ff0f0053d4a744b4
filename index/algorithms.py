"""Search algorithm choice and the checks on the options that go with it.

The algorithms themselves and their codes are :data:`lsr.kernels.dispatch.ALGORITHMS`; this
module validates a request against that table.
"""

from __future__ import annotations

import math

from lsr.checks import positive_int
from lsr.errors import InputError
from lsr.kernels.dispatch import ALGORITHM_NAMES, ALGORITHMS

ALGORITHM_CODES = {a.name: a.code for a in ALGORITHMS}
EXACT_ONLY = tuple(a.name for a in ALGORITHMS if a.exact_only)


def check_query_terms(m: object) -> int:
    """``query_terms`` (how many of a query's heaviest terms to keep) as an int, or an error."""
    return positive_int(m, "query_terms")


def algorithm_code(algorithm: str, theta: float) -> int:
    """Validate a search request; the kernel code of ``algorithm`` (``auto`` is resolved per
    query: exhaustive on small collections and, on large ones, whichever of exhaustive,
    term-at-a-time MaxScore and ranges the index measured fastest (``lsr.index.auto_exact``)
    when exact;
    with ``theta`` > 1 MaxScore for short queries, block-max WAND for long, expanded ones)."""
    if algorithm not in ALGORITHM_CODES:
        raise InputError(
            f"algorithm must be one of {', '.join(ALGORITHM_NAMES)}, got {algorithm!r}."
        )
    if (
        isinstance(theta, bool)
        or not isinstance(theta, (int, float))
        or not (math.isfinite(theta) and theta >= 1.0)
    ):
        raise InputError(f"theta must be a number >= 1 (1 = exact), got {theta!r}.")
    if algorithm in EXACT_ONLY and theta != 1.0:
        raise InputError(f"theta > 1 needs maxscore, bmw or ranges; {algorithm} is exact only.")
    return ALGORITHM_CODES[algorithm]
