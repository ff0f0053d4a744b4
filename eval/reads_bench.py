"""``lsr bench INDEX --reads``: what the service's cheap reads cost on a collection.

``GET /documents/{id}`` reads a document's stored fields from the document store (one
zstd batch of 128 documents decompressed, then cached) and, with ``?vector=true``, its vector
back from term-major postings; ``explain`` looks up each hit's weight for each query term
(compiled binary searches, ``lsr.kernels.lookup``). This measures them through
:class:`lsr.index.LiveIndex`, opened read-only, the way the service calls them: latency per
document fetched, and per query explained for several k. Kernels are compiled and warmed up
before timing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lsr.checks import positive_int
from lsr.errors import InputError
from lsr.index import LiveIndex


@dataclass
class ReadsReport:
    collection: str
    n_docs: int
    vocab_size: int
    get_ms: dict[str, float] = field(default_factory=dict)  # p50 / p99 / max per vector read
    document_ms: dict[str, float] | None = None  # the same per stored-document read
    store_bytes_per_doc: float | None = None
    explain_ms: dict[int, dict[str, float]] = field(default_factory=dict)  # per k, per query

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        lines = [
            f"{self.collection}: {self.n_docs:,} docs, {self.vocab_size:,} terms"
            + (
                f", stored documents {self.store_bytes_per_doc:,.0f} bytes/doc"
                if self.store_bytes_per_doc is not None
                else ", no stored documents"
            ),
            f"{'read':<28} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}",
        ]
        if self.document_ms is not None:
            lines.append(_row("GET /documents/{id}", self.document_ms))
        lines.append(_row("  ... ?vector=true (vector)", self.get_ms))
        lines += [_row(f"explain, k={k}", ms) for k, ms in self.explain_ms.items()]
        return "\n".join(lines)


def _row(name: str, ms: dict[str, float]) -> str:
    return f"{name:<28} {ms['p50']:>8.3f} {ms['p99']:>8.3f} {ms['max']:>8.3f}"


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "max": float(ms.max())}  # fmt: skip


def timed(call, arguments: list) -> list[float]:
    """Seconds each ``call(argument)`` took, one call at a time."""
    out = []
    for argument in arguments:
        start = time.perf_counter()
        call(argument)
        out.append(time.perf_counter() - start)
    return out


def bench_reads(
    path: str | Path,
    queries: sp.csr_array,
    n_gets: int = 500,
    ks: tuple[int, ...] = (10, 100, 1000),
    seed: int = 0,
) -> ReadsReport:
    """Time ``n_gets`` document fetches (random ids) and the explanation of each query's top
    k hits for every k in ``ks``."""
    positive_int(n_gets, "n_gets")
    if not ks:
        raise InputError("Give at least one k to explain.")
    for k in ks:
        positive_int(k, "k")
    live = LiveIndex(path, read_only=True)
    segments = [s for s in live.segments if s.n_docs]
    if not segments:
        raise InputError(f"{path} holds no documents to read back.")
    ids = [d for s in segments for d in s.doc_ids.to_pylist()]
    chosen = np.random.default_rng(seed).integers(0, len(ids), size=n_gets)
    live.get(ids[0])  # compile / load the lookup kernels, and build the id table
    live.explain(ids[:2], queries[[0]].indices)
    gets = timed(live.get, [ids[i] for i in chosen])
    report = ReadsReport(Path(path).name, live.n_docs, len(live.vocab), _percentiles(gets))
    if all(s.store is not None for s in segments):
        live.document(ids[0])
        report.document_ms = _percentiles(timed(live.document, [ids[i] for i in chosen]))
        stored = sum(s.store.path.stat().st_size for s in segments)
        report.store_bytes_per_doc = stored / len(ids)
    for k in ks:
        hits = live.search(queries, k)
        times = []
        for i, h in enumerate(hits):
            terms = queries[[i]].indices
            start = time.perf_counter()
            live.explain(h.ids, terms)
            times.append(time.perf_counter() - start)
        report.explain_ms[k] = _percentiles(times)
    return report
