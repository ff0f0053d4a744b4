"""``lsr bench``: query throughput and latency of every search algorithm and of peer engines,
measured in one run on the same document and query vectors, reported as ratios.

Peers (optional, ``pip install -e ".[bench]"``): ``splade-index`` with its Numba backend, fed
our (dequantized) postings and query vectors directly, and ``bm25s`` (Numba backend) for BM25
indexes, fed the same BM25 postings and query term ids. Numba code of every engine is compiled
and warmed up before timing; compile time is reported separately.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp

from lsr.checks import positive_int
from lsr.errors import InputError
from lsr.index import Index
from lsr.kernels.dispatch import ALGORITHM_NAMES, ALGORITHMS, AUTO

logger = logging.getLogger(__name__)


@dataclass
class BenchRow:
    """One configuration's figures; ``recall`` is recall@k against the exact top-k."""

    name: str
    qps_single: float
    p50_ms: float
    p99_ms: float
    qps_batch: float
    recall: float | None = None
    ratio_single: float | None = None
    ratio_batch: float | None = None
    notes: str = ""


@dataclass
class BenchReport:
    corpus: str
    n_docs: int
    n_queries: int
    k: int
    index_bytes_per_posting: float
    rows: list[BenchRow] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        head = (
            f"{'configuration':<34} {'QPS 1':>9} {'p50 ms':>8} {'p99 ms':>8} {'QPS batch':>10} "
            f"{'recall':>7} {'x peer 1':>9} {'x peer B':>9}"
        )
        lines = [
            f"{self.corpus}: {self.n_docs:,} docs, {self.n_queries} queries, k={self.k}, "
            f"{self.index_bytes_per_posting:.2f} bytes/posting",
            head,
            "-" * len(head),
        ]
        for r in self.rows:

            def f(v, fmt):
                return format(v, fmt) if v is not None else "–"

            lines.append(
                f"{r.name:<34} {r.qps_single:>9,.0f} {r.p50_ms:>8.3f} {r.p99_ms:>8.3f} "
                f"{r.qps_batch:>10,.0f} {f(r.recall, '.4f'):>7} {f(r.ratio_single, '.2f'):>9} "
                f"{f(r.ratio_batch, '.2f'):>9}"
            )
        return "\n".join(lines)


@contextlib.contextmanager
def _quiet_gc():
    """Collect garbage first and keep the collector off while timing (as ``timeit`` does), so
    no configuration pays for another's garbage."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class _Candidate:
    """One configuration to time: ``single(i)`` runs query ``i`` alone, ``batch()`` all of
    them; the timings of every pass are collected here."""

    name: str
    single: Callable[[int], object]
    batch: Callable[[], object]
    recall: float | None
    times: list[np.ndarray] = field(default_factory=list)
    batch_best: float = float("inf")

    def row(self, n: int) -> BenchRow:
        times = np.concatenate(self.times)
        best_pass = min(float(t.sum()) for t in self.times)  # the least disturbed pass
        return BenchRow(
            name=self.name,
            qps_single=n / best_pass if best_pass > 0 else 0.0,
            p50_ms=float(np.percentile(times, 50) * 1e3),
            p99_ms=float(np.percentile(times, 99) * 1e3),
            qps_batch=n / self.batch_best if self.batch_best > 0 else 0.0,
            recall=self.recall,
        )


BATCH_SECONDS = 0.1  # each round times back-to-back batches for at least this long


def _time_interleaved(
    candidates: list[_Candidate], n: int, repeat: int, batch_seconds: float = BATCH_SECONDS
) -> None:
    """Time every candidate in rounds (one single-query pass and one stretch of batches per
    candidate per round), so that a machine whose speed drifts during the run slows all of
    them alike; ``repeat`` single passes and at least two rounds of batches each, the best
    round counting.

    Batch QPS is sustained throughput: after one untimed batch that wakes the idle worker
    threads (on this 2-vCPU VM the first batch after a single-query pass waits about 1.5 ms
    for them, whatever the engine), batches run back to back for ``batch_seconds`` and the
    round's figure is their mean time per batch.
    """
    with _quiet_gc():
        for r in range(max(repeat, 2)):
            for c in candidates:
                if r < repeat:
                    times = np.empty(n)
                    for i in range(n):
                        t = time.perf_counter()
                        c.single(i)
                        times[i] = time.perf_counter() - t
                    c.times.append(times)
                c.batch()
                runs, start = 0, time.perf_counter()
                while runs < 2 or time.perf_counter() - start < batch_seconds:
                    c.batch()
                    runs += 1
                c.batch_best = min(c.batch_best, (time.perf_counter() - start) / runs)


def _check_timing(repeat: object, batch_seconds: object = BATCH_SECONDS) -> None:
    """Refuse timing options that would time nothing (or wait forever) with a clear error."""
    positive_int(repeat, "repeat")
    if not isinstance(batch_seconds, (int, float)) or not 0 <= batch_seconds < float("inf"):
        raise InputError(f"batch_seconds must be a finite number >= 0, got {batch_seconds!r}.")


def _ours(name, search, opts, queries, rows_of, k, threads, exact) -> _Candidate:
    """A candidate for ``search(queries, k, **opts)`` (an index's or a clustered index's),
    with its recall@k against ``exact``."""
    results = search(queries, k, threads=threads, **opts)
    return _Candidate(
        name,
        lambda i: search(rows_of[i], k, **opts),
        lambda: search(queries, k, threads=threads, **opts),
        _recall(results, exact, k),
    )


def _recall(results, exact, k: int) -> float:
    values = []
    for i in range(len(exact)):
        truth = set(exact.docs[i, : exact.counts[i]].tolist())
        if truth:
            got = set(results.docs[i, : results.counts[i]].tolist())
            values.append(len(truth & got) / len(truth))
    return float(np.mean(values)) if values else 1.0


def _peer_postings(index: Index) -> dict:
    """Our postings as the CSC score arrays splade-index and bm25s consume (dequantized)."""
    return {
        "data": (index.impact_values().astype(np.float32) * np.float32(index.scale)),
        "indices": index.doc_numbers().astype(np.int32),
        "indptr": index.offsets.astype(np.int32),
        "num_docs": index.n_docs,
    }


def _rows(queries: sp.csr_array) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each query's term ids and weights."""
    return [
        (queries.indices[lo:hi].astype(np.int32), queries.data[lo:hi])
        for lo, hi in zip(queries.indptr[:-1], queries.indptr[1:], strict=True)
    ]


def _peer_runner(retrieve, per_query: list[tuple], scores: dict, k: int):
    """``run(lo, hi, threads)`` calling a peer's Numba retrieval on queries ``lo:hi``."""

    def run(lo, hi, threads):
        args = [list(column) for column in zip(*per_query[lo:hi], strict=True)]
        return retrieve(
            *args,
            scores,
            k=k,
            sorted=True,
            return_as="tuple",
            show_progress=False,
            n_threads=threads,
        )

    return run


def _splade_index_peer(index: Index, queries: sp.csr_array, k: int):
    """splade-index's Numba backend fed our postings and weighted query terms."""
    try:
        from splade_index.numba.retrieve_utils import _retrieve_numba_functional
    except ImportError:
        return None
    return _peer_runner(_retrieve_numba_functional, _rows(queries), _peer_postings(index), k)


def _bm25s_peer(index: Index, queries: sp.csr_array, k: int):
    """bm25s' Numba backend fed our BM25 postings and query term ids (repeated by count)."""
    try:
        from bm25s.numba.retrieve_utils import _retrieve_numba_functional
    except ImportError:
        return None
    if not np.allclose(queries.data, np.round(queries.data)):
        return None  # bm25s scores term-id lists: only BM25 term-count queries translate
    ids = [(np.repeat(t, w.astype(np.int64)).astype(np.int32),) for t, w in _rows(queries)]
    return _peer_runner(_retrieve_numba_functional, ids, _peer_postings(index), k)


def bench_index(
    index: Index,
    queries: sp.csr_array,
    name: str,
    k: int = 10,
    repeat: int = 1,
    threads: int | None = None,
    approximate: bool = True,
    peers: bool = True,
    clustered: dict | None = None,
    batch_seconds: float = BATCH_SECONDS,
) -> BenchReport:
    """Benchmark all exact algorithms, approximate settings and the peers on one index.

    ``clustered``: build settings of a clustered (Seismic-style) index to benchmark too, as
    part of the approximate settings (default :data:`CLUSTER_DEFAULTS`; ``{}`` skips it),
    searched with heap factors 0.9, 0.95 and 1.0 at three query-term probe depths.
    ``batch_seconds``: how long each round times back-to-back batches (0: two batches).
    """
    import numba

    _check_timing(repeat, batch_seconds)
    threads = threads or numba.get_num_threads()
    queries = sp.csr_array(queries, dtype=np.float32)
    queries.sum_duplicates()
    n = queries.shape[0]
    report = BenchReport(
        corpus=name,
        n_docs=index.n_docs,
        n_queries=n,
        k=k,
        index_bytes_per_posting=index_bytes(index) / max(index.n_postings, 1),
    )
    rows_of = [queries[[i]] for i in range(n)]
    exact = index.search(queries, k, algorithm="exhaustive")
    configs = [(name, {"algorithm": name}) for name in ALGORITHM_NAMES]
    if approximate:  # every algorithm that prunes against theta x the k-th score, by name
        configs += [
            (f"{a.name} theta={t}", {"algorithm": a.name, "theta": t})
            for a in ALGORITHMS
            if not a.exact_only and a.code != AUTO
            for t in (1.2, 1.5, 2.0)
        ]
        avg_terms = queries.nnz / max(n, 1)
        for m in sorted({max(1, int(avg_terms * f)) for f in (0.25, 0.5)}):
            configs.append((f"auto query_terms={m}", {"algorithm": "auto", "query_terms": m}))
    t = time.perf_counter()
    for _, opts in configs:
        index.search(rows_of[0], k, **opts)
        index.search(queries[:2], k, **opts)
    report.extra["numba_warmup_seconds"] = time.perf_counter() - t
    candidates = [
        _ours(label, index.search, opts, queries, rows_of, k, threads, exact)
        for label, opts in configs
    ]
    if approximate and clustered != {}:
        candidates += _clustered(report, index, queries, rows_of, k, threads, exact, clustered)
    peer_candidates = _peers(report, index, queries, k, threads, exact) if peers else []
    _time_interleaved(candidates + peer_candidates, n, repeat, batch_seconds)
    report.rows = [c.row(n) for c in candidates + peer_candidates]
    baseline = next((r for r in report.rows if r.name.startswith("splade-index")), None)
    if baseline is not None:
        for row in report.rows:
            if row is not baseline:
                b1, bb = baseline.qps_single, baseline.qps_batch
                row.ratio_single = row.qps_single / b1 if b1 else None
                row.ratio_batch = row.qps_batch / bb if bb else None
    report.extra["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


CLUSTER_DEFAULTS = {"postings_per_term": 1000, "cluster_size": 16, "summary_mass": 0.15}


def _clustered(report, index, queries, rows_of, k, threads, exact, settings) -> list[_Candidate]:
    """Build a clustered index (timed); a candidate per search setting."""
    from lsr.index import ClusteredIndex

    settings = {**CLUSTER_DEFAULTS, **(settings or {})}
    clustered = ClusteredIndex.build(index, progress=True, **settings)
    report.extra["clustered_build_seconds"] = clustered.build_seconds
    report.extra["clustered_bytes_per_posting"] = clustered.nbytes / max(index.n_postings, 1)
    report.extra["clustered_settings"] = settings
    n = queries.shape[0]
    avg_terms = queries.nnz / max(n, 1)
    probes = sorted({max(1, round(avg_terms * f)) for f in (0.25, 0.33, 1.0)})
    clustered.search(rows_of[0], k)
    clustered.search(queries[:2], k)
    return [
        _ours(
            f"clustered hf={heap_factor} terms={m}",
            clustered.search,
            {"heap_factor": heap_factor, "query_terms": m},
            queries,
            rows_of,
            k,
            threads,
            exact,
        )
        for heap_factor in (0.9, 0.95, 1.0)
        for m in probes
    ]


def _peers(report, index, queries, k, threads, exact) -> list[_Candidate]:
    """A candidate per installed peer, compiled and warmed up (time in ``report.extra``)."""
    n = queries.shape[0]
    found = []
    for peer_name, make in (
        ("splade-index (numba)", _splade_index_peer),
        ("bm25s (numba)", _bm25s_peer),
    ):
        run = make(index, queries, k)
        if run is None:
            continue
        t = time.perf_counter()
        run(0, 1, 1)
        run(0, min(2, n), threads)
        report.extra[f"{peer_name} warmup_seconds"] = time.perf_counter() - t
        docs, _ = run(0, n, threads)
        truth = [set(exact.docs[i, : exact.counts[i]].tolist()) for i in range(n)]
        recall = [
            len(set(np.asarray(docs[i]).tolist()) & truth[i]) / len(truth[i])
            for i in range(n)
            if truth[i]
        ]
        found.append(
            _Candidate(
                peer_name,
                lambda i, r=run: r(i, i + 1, 1),
                lambda r=run: r(0, n, threads),
                float(np.mean(recall)) if recall else 1.0,
            )
        )
    if not found:
        report.extra["peers"] = 'not installed: pip install -e ".[bench]"'
    return found


def index_bytes(index: Index) -> int:
    """Bytes of the postings, blocks and term tables (what a saved index stores per posting)."""
    b = index.blocks
    arrays = (index.docs, index.impacts, index.offsets, b.max_impact, b.offsets, b.max, b.last)
    return int(sum(a.nbytes for a in arrays))


def bench_synthetic(
    n_docs: int,
    n_queries: int = 1000,
    vocab: int = 30522,
    doc_terms: int = 120,
    query_terms: int = 40,
    inference_free: bool = False,
    k: int = 10,
    repeat: int = 1,
    peers: bool = True,
    approximate: bool = True,
    clustered: dict | None = None,
) -> BenchReport:
    """Build a synthetic SPLADE-like index (timed) and benchmark it."""
    from lsr.eval.synthetic import synthetic_corpus, synthetic_queries
    from lsr.index import IndexBuilder

    _check_timing(repeat)  # before the build, which takes a while on large corpora

    t = time.perf_counter()
    builder = IndexBuilder([f"t{i}" for i in range(vocab)])
    gen_seconds = 0.0
    source = synthetic_corpus(n_docs, vocab, doc_terms)
    while True:
        g = time.perf_counter()
        batch = next(source, None)
        gen_seconds += time.perf_counter() - g
        if batch is None:
            break
        builder.add(*batch)
    index = builder.finish()
    build_seconds = time.perf_counter() - t - gen_seconds
    queries = synthetic_queries(n_queries, vocab, query_terms, inference_free=inference_free)
    kind = "inference-free" if inference_free else "splade-like"
    report = bench_index(
        index,
        queries,
        f"synthetic {kind}",
        k,
        repeat,
        approximate=approximate,
        peers=peers,
        clustered=clustered,
    )
    report.extra.update(
        {
            "build_seconds": build_seconds,
            "generate_seconds": gen_seconds,
            "avg_nnz_doc": float(index.doc_terms.mean()),
            "avg_nnz_query": queries.nnz / n_queries,
            "n_postings": index.n_postings,
        }
    )
    return report
