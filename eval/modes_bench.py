"""``lsr bench COLLECTION --modes``: what dense and hybrid search cost next to sparse search.

Each query goes from text to hits the way :class:`lsr.pipeline.Searcher` answers it: encoded
by the encoder of every representation asked, searched, and for ``hybrid`` fused (with the
collection's tuned fusion when it has one, else equal weights). The modes are interleaved
per query (sparse, dense, hybrid, then the next query), for ``rounds`` passes after a
warm-up, so drift in this machine's speed hits them alike; medians and ratios to sparse are
reported. One query at a time: the latency a single user sees.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from lsr.checks import positive_int
from lsr.errors import InputError
from lsr.index.fusion import FusionSpec
from lsr.pipeline import Searcher


@dataclass
class ModesReport:
    collection: str
    n_docs: int
    representations: dict[str, str]
    fusion: dict
    fusion_text: str
    queries: int
    k: int
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # mode -> p50/p99

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        names = ", ".join(f"{n} ({kind})" for n, kind in self.representations.items())
        lines = [
            f"{self.collection}: {self.n_docs:,} docs; {names}; {self.queries} queries, "
            f"k={self.k}, one at a time, text to hits",
            f"{'mode':<8} {'p50 ms':>8} {'p99 ms':>8} {'x sparse':>9}",
        ]
        base = self.latency_ms["sparse"]["p50"]
        for mode, ms in self.latency_ms.items():
            lines.append(f"{mode:<8} {ms['p50']:>8.3f} {ms['p99']:>8.3f} {ms['p50'] / base:>9.2f}")
        lines.append(f"hybrid: {self.fusion_text}")
        return "\n".join(lines)


def bench_modes(path: str, texts: list[str], k: int = 10, rounds: int = 3) -> ModesReport:
    """Time sparse, dense (when the collection has a dense representation) and hybrid search
    of ``texts`` on the collection at ``path`` (see the module docstring)."""
    positive_int(k, "k")
    positive_int(rounds, "rounds")
    if not texts:
        raise InputError("No queries to time.")
    with Searcher.open(path) as searcher:
        kinds = searcher.live.representations
        if len(kinds) < 2:
            raise InputError(
                f"{path} has one representation; --modes compares sparse, dense and hybrid "
                "search of a collection built with several (lsr index --dense ...)."
            )
        modes = ["sparse", *(["dense"] if "dense" in kinds.values() else []), "hybrid"]
        for mode in modes:  # compile kernels, load models
            searcher.search(texts[:2], k, mode=mode)
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(rounds):
            for text in texts:
                for mode in modes:
                    start = time.perf_counter()
                    searcher.search(text, k, mode=mode)
                    times[mode].append(time.perf_counter() - start)
        spec = searcher.fusion or FusionSpec()
        text = f"{', '.join(spec.retrievers or kinds)}, {spec.describe()}" + (
            " (tuned by lsr tune-fusion)" if searcher.fusion is not None else " (default)"
        )
        report = ModesReport(str(path), searcher.live.n_docs, kinds, spec.to_dict(), text,
                             len(texts), k)  # fmt: skip
    for mode, seconds in times.items():
        ms = np.asarray(seconds) * 1e3
        report.latency_ms[mode] = {"p50": float(np.median(ms)), "p99": float(np.quantile(ms, 0.99))}
    return report
