"""Which exact algorithm ``auto`` runs on a large index, learned from the queries it serves.

On collections of ``AUTO_TAAT_MIN_DOCS`` or more, exact search has three contenders whose order
depends on the data, not on anything a query shows beforehand. Term-at-a-time MaxScore is 1.3-1.8x
faster than the exhaustive kernel without dense rows on IDF-weighted data (its heavy terms are rare,
so the essential lists are short) and about 2.2x slower on a corpus fitted to SciFact's SPLADE
vectors (50-100 terms per query with flat weights: the essential lists hold the sparse,
cache-missing postings, and many ranges stay candidates). Range pruning is 2.2x the exhaustive
kernel on 5-term inference-free queries, where bounds are tight, and otherwise falls back to the
exhaustive kernel after a 10-15% overhead. The figures: ``docs/performance.md``. All three return
bit-identical results, so ``auto`` may pick any: the first ``TRIALS`` single queries per contender
that read enough postings to matter take turns, each timed per posting read, and the one with the
lowest median runs from then on.
Until then batches use the size rule of ``lsr.kernels.dispatch.resolve``.
"""

from __future__ import annotations

import statistics
import threading

from lsr.kernels.dispatch import ALGORITHMS, EXHAUSTIVE, MAXSCORE_TAAT, RANGES

TRIALS = 8  # timed queries per contender
CONTENDERS = (EXHAUSTIVE, MAXSCORE_TAAT, RANGES)
NAMES = {a.code: a.name for a in ALGORITHMS}


class AutoExact:
    """The per-index choice between the exact contenders; thread-safe."""

    def __init__(self, trials: int = TRIALS) -> None:
        self.trials = trials
        self.choice: int | None = None  # the kernel code, once decided
        self._samples: dict[int, list[float]] = {code: [] for code in CONTENDERS}
        self._lock = threading.Lock()

    def next_trial(self) -> int | None:
        """The contender the next single query should time, or None once decided."""
        if self.choice is not None:
            return None
        with self._lock:
            return min(CONTENDERS, key=lambda code: len(self._samples[code]))

    def record(self, code: int, seconds: float, postings: int) -> None:
        """One timed query of ``code`` that read ``postings`` postings; decides after
        ``trials`` of each."""
        with self._lock:
            if self.choice is not None or postings <= 0:
                return
            self._samples[code].append(seconds / postings)
            if all(len(s) >= self.trials for s in self._samples.values()):
                self.choice = min(CONTENDERS, key=lambda c: statistics.median(self._samples[c]))

    def to_dict(self) -> dict:
        """What ``auto`` has learned: the choice (None while timing) and the medians so far,
        in nanoseconds per posting."""
        with self._lock:
            medians = {
                NAMES[c]: round(statistics.median(s) * 1e9, 3)
                for c, s in self._samples.items()
                if s
            }
        return {"choice": NAMES.get(self.choice), "ns_per_posting": medians}
