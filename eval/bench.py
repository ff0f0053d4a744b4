"""``lsr bench``: query throughput and latency of every search algorithm and of peer engines,
measured in one run on the same document and query vectors, reported as ratios.

Peers (optional, ``pip install -e ".[bench]"``; :mod:`lsr.eval.peers`): splade-index and
bm25s (exhaustive Numba scorers), Seismic and BMP, each fed our vectors. Every engine is
built (timed apart), compiled and warmed up before timing; each approximate setting, ours or
a peer's, reports its recall@k against exact search, and :func:`compare` sets ours against
each peer: exact ``auto`` against each exact peer, and the fastest settings at recall@k of
at least 0.95 against each other.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from lsr.checks import positive_int
from lsr.errors import InputError
from lsr.eval.peers import SEISMIC_HEAP_FACTORS, SEISMIC_QUERY_FRACTIONS
from lsr.index import Index
from lsr.index.auto_exact import CONTENDERS, TRIALS
from lsr.kernels.dispatch import ALGORITHM_NAMES, ALGORITHMS, AUTO

if TYPE_CHECKING:
    from lsr.eval.faithful import FaithfulModel

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
    engine: str = "lsr"  # or the peer's name (lsr.eval.peers)


@dataclass
class BenchReport:
    corpus: str
    n_docs: int
    n_queries: int
    k: int
    index_bytes_per_posting: float
    rows: list[BenchRow] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    versus: list[dict] = field(default_factory=list)  # ours against each peer (compare())

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
        for v in self.versus:
            lines.append(
                f"{v['what']}: {v['ours']} / {v['peer']}: {v['single']:.2f}x single "
                f"({v['ours_single']:,.0f} vs {v['peer_single']:,.0f} QPS), "
                f"{v['batch']:.2f}x batch ({v['ours_batch']:,.0f} vs {v['peer_batch']:,.0f} QPS)"
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
    engine: str = "lsr"
    times: list[np.ndarray] = field(default_factory=list)
    batch_times: list[float] = field(default_factory=list)  # each round's seconds per batch

    def row(self, n: int) -> BenchRow:
        times = np.concatenate(self.times)
        single = float(np.median([t.sum() for t in self.times]))  # the median pass
        batch = float(np.median(self.batch_times))  # the median round
        return BenchRow(
            name=self.name,
            qps_single=n / single if single > 0 else 0.0,
            p50_ms=float(np.percentile(times, 50) * 1e3),
            p99_ms=float(np.percentile(times, 99) * 1e3),
            qps_batch=n / batch if batch > 0 else 0.0,
            recall=self.recall,
            engine=self.engine,
        )


BATCH_SECONDS = 0.1  # each round times back-to-back batches for at least this long
BATCH_ROUNDS = 3  # rounds of batches at least, whatever ``repeat`` (the median of them counts)


def _time_interleaved(
    candidates: list[_Candidate], n: int, repeat: int, batch_seconds: float = BATCH_SECONDS
) -> None:
    """Time every candidate in rounds (one single-query pass and one stretch of batches per
    candidate per round), so that a machine whose speed drifts during the run slows all of
    them alike; ``repeat`` single-query passes and at least :data:`BATCH_ROUNDS` rounds of
    batches each, the median pass and the median round counting (a round that a noisy
    neighbour slowed, or one that ran alone on a quiet machine, moves neither).

    Batch QPS is sustained throughput: after one untimed batch that wakes the idle worker
    threads (on this 2-vCPU VM the first batch after a single-query pass waits about 1.5 ms
    for them, whatever the engine), batches run back to back for ``batch_seconds`` and the
    round's figure is their mean time per batch.
    """
    with _quiet_gc():
        for r in range(max(repeat, BATCH_ROUNDS)):
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
                c.batch_times.append((time.perf_counter() - start) / runs)


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


def _learn_auto(index: Index, rows_of: list, k: int) -> None:
    """Single exact ``auto`` queries until the index has learned which exact kernel to run
    (``lsr.index.auto_exact``), so the timed rounds measure what it runs from then on."""
    if not index.learns_auto or not rows_of:
        return
    for i in range(4 * TRIALS * len(CONTENDERS)):
        if index.auto_exact.choice is not None:
            return
        index.search(rows_of[i % len(rows_of)], k)


def _recall(results, exact, k: int) -> float:
    return _recall_of_top([results.docs[i, : results.counts[i]] for i in range(len(exact))], exact)


def _recall_of_top(top: list[np.ndarray], exact) -> float:
    """Mean recall of each query's returned doc numbers against the exact top k (queries
    with no exact hit left out)."""
    values = []
    for i in range(len(exact)):
        truth = set(exact.docs[i, : exact.counts[i]].tolist())
        if truth:
            values.append(len(truth & set(np.asarray(top[i]).tolist())) / len(truth))
    return float(np.mean(values)) if values else 1.0


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
    algorithms: bool = True,
    peer_names: Sequence[str] | None = None,
    reorder: str | None = None,
) -> BenchReport:
    """Benchmark all exact algorithms, approximate settings and the peers on one index.

    ``clustered``: build settings of a clustered (Seismic-style) index to benchmark too, as
    part of the approximate settings (default: Seismic's recommended build parameters;
    ``{}`` skips it), searched on the Seismic peer's grid of heap factors and query-term
    probe depths.
    ``batch_seconds``: how long each round times back-to-back batches (0: two batches).
    ``algorithms=False`` leaves out the inverted index's algorithms (the clustered index
    and the peers remain); ``peer_names`` picks peers (default: every installed one).
    ``reorder="bp"``: also reorder the index (:mod:`lsr.index.reorder`, timed); the
    algorithms run on both (the reordered rows marked ``[bp]``), the clustered index and
    the peers on the reordered one, which is what they are given in the papers.
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
    indexes = [(index, "")]
    if reorder is not None:
        from lsr.index.reorder import reorder as reorder_index

        reordered, done = reorder_index(index, reorder)
        report.extra["reorder"] = {"method": reorder, **done.to_dict()}
        indexes.append((reordered, f" [{reorder}]"))
    configs = [(name, {"algorithm": name}) for name in ALGORITHM_NAMES] if algorithms else []
    # every algorithm that prunes against theta x the k-th score, by name
    if approximate and algorithms:
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
    for searched, _ in indexes:
        for _, opts in configs:
            searched.search(rows_of[0], k, **opts)
            searched.search(queries[:2], k, **opts)
        if algorithms:
            _learn_auto(searched, rows_of, k)
    report.extra["numba_warmup_seconds"] = time.perf_counter() - t
    candidates = []
    for searched, suffix in indexes:  # recall against each index's own exact top k
        exact = searched.search(queries, k, algorithm="exhaustive")
        candidates += [
            _ours(label + suffix, searched.search, opts, queries, rows_of, k, threads, exact)
            for label, opts in configs
        ]
    last = indexes[-1][0]  # the reordered index, when there is one; ``exact`` is its
    if approximate and clustered != {}:
        candidates += _clustered(report, last, queries, rows_of, k, threads, exact, clustered)
    peer_candidates = _peers(report, last, queries, k, threads, exact, peer_names) if peers else []
    _time_interleaved(candidates + peer_candidates, n, repeat, batch_seconds)
    for searched, suffix in indexes:  # what exact ``auto`` learned to run (index.auto_exact)
        report.extra[f"auto_exact{suffix}"] = searched.auto_exact.to_dict()
    report.rows = [c.row(n) for c in candidates + peer_candidates]
    baseline = next((r for r in report.rows if r.name.startswith("splade-index")), None)
    if baseline is not None:
        for row in report.rows:
            if row is not baseline:
                b1, bb = baseline.qps_single, baseline.qps_batch
                row.ratio_single = row.qps_single / b1 if b1 else None
                row.ratio_batch = row.qps_batch / bb if bb else None
    report.versus = compare(report.rows)
    report.extra["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


TARGET_RECALL = 0.95  # the recall@k at which approximate settings are compared
EXACT_PEERS = ("splade-index (numba)", "bm25s (numba)", "bmp safe")


def compare(rows: list[BenchRow]) -> list[dict]:
    """Ours against each peer, as ratios of QPS (single-query and batch each on its own):
    exact ``auto`` against each exact peer setting (:data:`EXACT_PEERS`), and, for each
    peer with approximate settings, our fastest setting against the peer's fastest among
    those with recall@k of at least :data:`TARGET_RECALL` (exact settings included)."""
    out = []
    auto = next((r for r in rows if r.name == "auto"), None)
    for peer in (r for r in rows if r.name in EXACT_PEERS):
        if auto is not None:
            out.append(_versus("exact", auto, peer, auto, peer))
    ours = [r for r in rows if r.engine == "lsr" and (r.recall or 0) >= TARGET_RECALL]
    approximate = (r.engine for r in rows if r.engine != "lsr" and r.name not in EXACT_PEERS)
    for engine in dict.fromkeys(approximate):
        theirs = [r for r in rows if r.engine == engine and (r.recall or 0) >= TARGET_RECALL]
        if ours and theirs:
            single = (max(ours, key=_single), max(theirs, key=_single))
            batch = (max(ours, key=_batch), max(theirs, key=_batch))
            out.append(_versus(f"recall >= {TARGET_RECALL}", *single, *batch))
    return out


def _single(row: BenchRow) -> float:
    return row.qps_single


def _batch(row: BenchRow) -> float:
    return row.qps_batch


def _versus(what, ours_1, peer_1, ours_b, peer_b) -> dict:
    """One comparison; ``ours_1``/``peer_1`` for single queries, ``ours_b``/``peer_b`` for
    batches (the fastest of each may be different settings)."""

    def names(a, b):
        return a.name if a.name == b.name else f"{a.name} (batch: {b.name})"

    def ratio(a, b):
        return a / b if b else float("inf")

    return {
        "what": what,
        "ours": names(ours_1, ours_b),
        "peer": names(peer_1, peer_b),
        "single": ratio(ours_1.qps_single, peer_1.qps_single),
        "batch": ratio(ours_b.qps_batch, peer_b.qps_batch),
        "ours_single": ours_1.qps_single,
        "peer_single": peer_1.qps_single,
        "ours_batch": ours_b.qps_batch,
        "peer_batch": peer_b.qps_batch,
    }


def _clustered(report, index, queries, rows_of, k, threads, exact, settings) -> list[_Candidate]:
    """Build a clustered index (timed; settings left out take :class:`ClusterSettings`'
    defaults, Seismic's recommended ones); a candidate per search setting, on the grid the
    Seismic peer is swept on."""
    from lsr.index import ClusteredIndex
    from lsr.index.clustered import ClusterSettings

    settings = asdict(ClusterSettings(**(settings or {})))
    clustered = ClusteredIndex.build(index, progress=True, **settings)
    report.extra["clustered_build_seconds"] = clustered.build_seconds
    report.extra["clustered_build_phases"] = clustered.build_phases
    report.extra["clustered_bytes_per_posting"] = clustered.nbytes / max(index.n_postings, 1)
    report.extra["clustered_settings"] = settings
    n = queries.shape[0]
    avg_terms = queries.nnz / max(n, 1)
    probes = sorted({max(1, round(avg_terms * f)) for f in SEISMIC_QUERY_FRACTIONS})
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
        for heap_factor in SEISMIC_HEAP_FACTORS
        for m in probes
    ]


def _peers(report, index, queries, k, threads, exact, names=None) -> list[_Candidate]:
    """A candidate per setting of each installed peer (see :mod:`lsr.eval.peers`), built
    and warmed up (seconds in ``report.extra``), with its recall@k against ``exact``."""
    from lsr.eval.peers import peer_configs

    return [
        _Candidate(c.name, c.single, c.batch, _recall_of_top(c.top, exact), c.engine)
        for c in peer_configs(index, queries, k, threads, report.extra, names)
    ]


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
    like: FaithfulModel | None = None,
    reorder: str | None = None,
) -> BenchReport:
    """Build a synthetic SPLADE-like index (timed) and benchmark it: drawn from ``like``, a
    generator fitted to real vectors (:mod:`lsr.eval.faithful`; ``vocab``, ``doc_terms``,
    ``query_terms`` and ``inference_free`` then come from it), or with independent terms
    (:mod:`lsr.eval.synthetic`)."""
    from lsr.eval.synthetic import synthetic_corpus, synthetic_queries
    from lsr.index import IndexBuilder

    _check_timing(repeat)  # before the build, which takes a while on large corpora

    t = time.perf_counter()
    if like is not None:
        vocab = like.vocab_size
    builder = IndexBuilder([f"t{i}" for i in range(vocab)])
    gen_seconds = 0.0
    source = like.corpus(n_docs) if like else synthetic_corpus(n_docs, vocab, doc_terms)
    while True:
        g = time.perf_counter()
        batch = next(source, None)
        gen_seconds += time.perf_counter() - g
        if batch is None:
            break
        builder.add(*batch)
    index = builder.finish()
    build_seconds = time.perf_counter() - t - gen_seconds
    if like is not None:
        queries = like.queries(n_queries, n_docs)[0]
        kind = "faithful"
    else:
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
        reorder=reorder,
    )
    report.extra.update(
        {
            "build_seconds": build_seconds,
            "generate_seconds": gen_seconds,
            "avg_nnz_doc": float(index.doc_terms.mean()),
            "avg_nnz_query": queries.nnz / n_queries,
            "n_postings": index.n_postings,
            **(
                {"focus_share": like.focus_share, "from_document": like.from_document}
                if like
                else {}
            ),
        }
    )
    return report
