"""The peer engines ``lsr bench`` times beside ours, each fed our vectors, so that a ratio
compares engines and not encoders (``pip install -e ".[bench]"``; a peer not installed is
left out and the report says so).

- ``splade-index`` (Numba backend): our dequantized postings and weighted query terms; exact.
- ``bm25s`` (Numba backend): our BM25 postings and query term ids; exact; BM25 queries only.
- Seismic (``pyseismic-lsr``): our documents' dequantized vectors, built with its recommended
  parameters (:data:`SEISMIC_BUILD`, its own defaults), searched with a sweep of
  ``query_cut`` x ``heap_factor``; approximate.
- BMP (``bmp``): our collection written as CIFF (8-bit impacts), converted by ``ciff2bmp``
  into blocks of :data:`BMP_BLOCK` documents, searched safely (``alpha = beta = 1``) and
  approximately. BMP keeps scores in 16 bits and maps a query's largest weight to 32 levels,
  so it is given each query as :func:`bmp_query` makes it: what it can score without
  overflowing. Even its safe setting misses a document now and then at blocks of 32 (on
  SciFact splade-tiny, 17 of 300 queries; none at blocks of 8, see
  ``tests/pipeline/test_export.py``), so its recall is reported as for approximate ones. Its
  Python API searches one query per call; its batch is a loop of them.

Each peer is a list of :class:`PeerConfig`: how to run one query or the whole batch, and the
top k it returned (doc numbers), from which the bench computes recall against exact search.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lsr.index import Index

SEISMIC_FEED_DOCS = 100_000  # documents handed to Seismic's dataset per call
SEISMIC_BUILD = {
    "n_postings": 3500,
    "centroid_fraction": 0.1,
    "min_cluster_size": 2,
    "summary_energy": 0.4,
    "max_fraction": 1.5,
    "doc_cut": 15,
}
SEISMIC_HEAP_FACTORS = (0.8, 0.9, 1.0)
SEISMIC_QUERY_FRACTIONS = (0.25, 0.5, 1.0)  # query_cut as fractions of the mean query terms
BMP_BLOCK = 32  # documents per block, as in the BMP paper
BMP_SETTINGS = ((1.0, 1.0), (0.9, 1.0), (0.8, 1.0))  # (alpha, beta); (1, 1) is safe
BMP_QUERY_LEVELS = 32  # BMP maps a query's largest weight to 32 and rounds the others up
BMP_MAX_SCORE = 65535  # BMP adds scores and block bounds in 16 bits


@dataclass
class PeerConfig:
    """One peer setting to time: ``single(i)`` runs query ``i`` alone, ``batch()`` all of
    them; ``top`` holds each query's top-k doc numbers from one batch run."""

    name: str
    single: Callable[[int], object]
    batch: Callable[[], object]
    top: list[np.ndarray]
    engine: str


@dataclass
class _Feed:
    """What every peer is fed, computed once: the index, the queries and each one's term ids
    and weights, and all postings as dequantized weights (documents x vocabulary, CSC; a
    copy of every posting, so not one per peer)."""

    index: Index
    queries: sp.csr_array
    rows: list[tuple[np.ndarray, np.ndarray]]
    weights: sp.csc_array
    k: int
    threads: int
    extra: dict


def peer_configs(
    index: Index,
    queries: sp.csr_array,
    k: int,
    threads: int,
    extra: dict,
    names: Sequence[str] | None = None,
) -> list[PeerConfig]:
    """Every installed peer's settings (or those of the peers ``names``: splade-index,
    bm25s, seismic, bmp), built and warmed up; build and warm-up seconds go into ``extra``
    (``"<peer> build_seconds"``, ``"<peer> warmup_seconds"``)."""
    rows = [
        (queries.indices[lo:hi].astype(np.int32), queries.data[lo:hi])
        for lo, hi in zip(queries.indptr[:-1], queries.indptr[1:], strict=True)
    ]
    feed = _Feed(index, queries, rows, index.weights(), k, threads, extra)
    found: list[PeerConfig] = []
    missing = []
    for name, make in (
        ("splade-index", _splade_index),
        ("bm25s", _bm25s),
        ("seismic", _seismic),
        ("bmp", _bmp),
    ):
        if names is not None and name not in names:
            continue
        try:
            configs = make(feed)
        except ImportError:
            missing.append(name)
            continue
        found += configs
    if missing:
        extra["peers not installed"] = missing
    return found


def _timed(extra: dict, key: str, work: Callable[[], object]) -> object:
    t = time.perf_counter()
    out = work()
    extra[key] = time.perf_counter() - t
    return out


# ---- splade-index and bm25s: exhaustive Numba scorers over CSC score arrays ---------------


def _numba_peer(engine, retrieve, per_query, feed: _Feed) -> list[PeerConfig]:
    name = f"{engine} (numba)"
    k, threads, weights = feed.k, feed.threads, feed.weights
    scores = {
        "data": weights.data,
        "indices": weights.indices.astype(np.int32),
        "indptr": weights.indptr.astype(np.int32),
        "num_docs": feed.index.n_docs,
    }

    def run(lo, hi, n_threads):
        args = [list(column) for column in zip(*per_query[lo:hi], strict=True)]
        return retrieve(*args, scores, k=k, sorted=True, return_as="tuple",
                        show_progress=False, n_threads=n_threads)  # fmt: skip

    n = len(per_query)
    _timed(feed.extra, f"{name} warmup_seconds", lambda: (run(0, 1, 1), run(0, min(2, n), threads)))
    docs, _ = run(0, n, threads)
    return [
        PeerConfig(
            name,
            lambda i: run(i, i + 1, 1),
            lambda: run(0, n, threads),
            [np.asarray(d, dtype=np.int64) for d in docs],
            engine,
        )
    ]


def _splade_index(feed: _Feed) -> list[PeerConfig]:
    from splade_index.numba.retrieve_utils import _retrieve_numba_functional

    return _numba_peer("splade-index", _retrieve_numba_functional, feed.rows, feed)


def _bm25s(feed: _Feed) -> list[PeerConfig]:
    from bm25s.numba.retrieve_utils import _retrieve_numba_functional

    if not np.allclose(feed.queries.data, np.round(feed.queries.data)):
        return []  # bm25s scores term-id lists: only BM25 term-count queries translate
    ids = [(np.repeat(t, w.astype(np.int64)).astype(np.int32),) for t, w in feed.rows]
    return _numba_peer("bm25s", _retrieve_numba_functional, ids, feed)


# ---- Seismic ------------------------------------------------------------------------------


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what native code prints on file descriptor 1 to stderr, keeping stdout for the
    report (``--json``): Seismic's builder prints its progress there."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _seismic(feed: _Feed) -> list[PeerConfig]:
    import seismic

    index, k, threads, extra = feed.index, feed.k, feed.threads, feed.extra
    text = seismic.get_seismic_string()

    def build():
        dataset = seismic.SeismicDataset()
        docs = feed.weights.tocsr()  # dropped before Seismic builds: a copy of every posting
        docs.sort_indices()
        for lo in range(0, index.n_docs, SEISMIC_FEED_DOCS):  # bounded int64 copies
            hi = min(index.n_docs, lo + SEISMIC_FEED_DOCS)
            a, b = docs.indptr[lo], docs.indptr[hi]
            dataset.add_documents_by_id(
                np.arange(lo, hi).astype(text),
                docs.indices[a:b].astype(np.int64),
                docs.data[a:b].astype(np.float32),
                (docs.indptr[lo : hi + 1] - a).astype(np.int64),
            )
        del docs
        with _stdout_to_stderr():
            return seismic.SeismicIndex.build_from_dataset(
                dataset, **SEISMIC_BUILD, num_threads=threads
            )

    engine = _timed(extra, "seismic build_seconds", build)
    extra["seismic build"] = SEISMIC_BUILD
    rows = feed.rows
    n = len(rows)
    ids = np.array([f"q{i}" for i in range(n)]).astype(text)
    terms = [t.astype(np.int64).astype(text) for t, _ in rows]
    weights = [w.astype(np.float32) for _, w in rows]
    avg_terms = feed.queries.nnz / max(n, 1)
    cuts = sorted({max(1, round(avg_terms * f)) for f in SEISMIC_QUERY_FRACTIONS})

    def single(i, cut, heap):
        return engine.search(ids[i], terms[i], weights[i], k, cut, heap)

    def batch(cut, heap):
        return engine.batch_search(ids, terms, weights, k, cut, heap, num_threads=threads)

    def top(results) -> list[np.ndarray]:
        """Each query's doc numbers, by the query id in every hit (the batch's lists need
        not come in query order; a query with no hit has none)."""
        out = [np.zeros(0, dtype=np.int64) for _ in range(n)]
        for hits in results:
            if hits:
                out[int(hits[0][0][1:])] = np.array([int(d) for _, _, d in hits], np.int64)
        return out

    _timed(extra, "seismic warmup_seconds", lambda: (single(0, cuts[0], 1.0), batch(cuts[0], 1.0)))
    return [
        PeerConfig(
            f"seismic hf={heap} query_cut={cut}",
            lambda i, c=cut, h=heap: single(i, c, h),
            lambda c=cut, h=heap: batch(c, h),
            top(batch(cut, heap)),
            "seismic",
        )
        for heap in SEISMIC_HEAP_FACTORS
        for cut in cuts
    ]


# ---- BMP ----------------------------------------------------------------------------------


def bmp_query(index: Index, terms: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """A query as BMP scores it: the terms that have postings, weights ``ceil(32 w / max w)``,
    heaviest first, and only as many as keep the bound (sum of weight times the list's largest
    impact) within BMP's 16-bit scores."""
    keep = index.list_lengths[terms] > 0
    terms, weights = terms[keep], weights[keep]
    if not terms.size:
        return terms, weights.astype(np.float32)
    order = np.argsort(-weights, kind="stable")
    terms, weights = terms[order], weights[order]
    levels = np.ceil(weights / weights[0] * BMP_QUERY_LEVELS).astype(np.float32)
    bound = np.cumsum(levels * index.blocks.max_impact[terms].astype(np.float32))
    n = int(np.searchsorted(bound, BMP_MAX_SCORE, side="right"))
    return terms[:n], levels[:n]


def _bmp(feed: _Feed) -> list[PeerConfig]:
    import bmp

    from lsr.index.ciff import write_ciff

    index, k, extra = feed.index, feed.k, feed.extra

    def build():
        with tempfile.TemporaryDirectory(prefix="lsr-bench-bmp-") as tmp:
            folder = Path(tmp)  # removed once loaded: the searcher holds the index in memory
            write_ciff(index, folder / "index.ciff")
            with _stdout_to_stderr():  # ciff2bmp prints its progress
                bmp.ciff2bmp(ciff_file=str(folder / "index.ciff"),
                             output=str(folder / "index.bmp"), bsize=BMP_BLOCK,
                             compress_range=False)  # fmt: skip
                return bmp.Searcher(str(folder / "index.bmp"))

    engine = _timed(extra, "bmp build_seconds", build)
    vocab = index.vocab
    asked = []
    for terms, weights in feed.rows:
        t, w = bmp_query(index, terms, weights)
        asked.append({vocab[c]: float(v) for c, v in zip(t.tolist(), w.tolist(), strict=True)})
    extra["bmp query terms kept"] = sum(map(len, asked)) / max(feed.queries.nnz, 1)
    number = {doc_id: i for i, doc_id in enumerate(index.doc_ids.to_pylist())}

    def single(i, alpha, beta):
        return engine.search(asked[i], k=k, alpha=alpha, beta=beta) if asked[i] else ([], [])

    def batch(alpha, beta):
        return [single(i, alpha, beta) for i in range(len(asked))]

    def top(results) -> list[np.ndarray]:
        return [np.array([number[d] for d in ids], dtype=np.int64) for ids, _ in results]

    _timed(extra, "bmp warmup_seconds", lambda: batch(1.0, 1.0))
    return [
        PeerConfig(
            "bmp safe" if (alpha, beta) == (1.0, 1.0) else f"bmp alpha={alpha} beta={beta}",
            lambda i, a=alpha, b=beta: single(i, a, b),
            lambda a=alpha, b=beta: batch(a, b),
            top(batch(alpha, beta)),
            "bmp",
        )
        for alpha, beta in BMP_SETTINGS
    ]
