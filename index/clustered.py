"""Approximate search in the style of Seismic: static pruning, clustered blocks, summaries.

Built from an :class:`~lsr.index.inverted.Index`: each term keeps its ``postings_per_term``
highest-impact postings, which faiss k-means groups into blocks of about ``cluster_size``
similar documents (clustered on random projections of the documents' sparse vectors); each
block gets a summary (per-term maximum impacts holding ``summary_mass`` of the total, plus
the list's own term). A
query then scores only the documents of blocks whose summaries look promising, exactly,
through a forward index. Build once, search many times; every setting's recall against the
exact top-k is measured by ``lsr bench``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from lsr.checks import positive_int
from lsr.errors import InputError
from lsr.index.algorithms import check_query_terms
from lsr.index.inverted import Index
from lsr.index.results import SearchResults
from lsr.index.threads import check_threads, parallel_threads
from lsr.index.validation import as_allowed_mask, as_sparse_batch, check_k
from lsr.kernels.clustered import (
    ClusterArrays,
    block_summaries,
    clustered_many,
    clustered_one,
    prune_postings,
)
from lsr.kernels.postings import csr_to_postings

logger = logging.getLogger(__name__)

SKETCH_DIM = 32  # random projection width the k-means runs in


@dataclass(frozen=True)
class ClusterSettings:
    """How a clustered index was built (``postings_per_term`` None keeps every posting)."""

    postings_per_term: int | None = None
    cluster_size: int = 16
    summary_mass: float = 0.15
    kmeans_iterations: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        positive_int(self.postings_per_term, "postings_per_term", optional=True)
        positive_int(self.cluster_size, "cluster_size")
        positive_int(self.kmeans_iterations, "kmeans_iterations")
        m = self.summary_mass
        if isinstance(m, bool) or not (isinstance(m, (int, float)) and 0 < m <= 1):
            raise InputError(f"summary_mass must be in (0, 1], got {m!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {self.seed!r}.")


class ClusteredIndex:
    """Clustered postings blocks with summaries plus a forward index, over one ``Index``."""

    def __init__(
        self, index: Index, settings: ClusterSettings, arrays: ClusterArrays, seconds: float
    ) -> None:
        self.index = index
        self.settings = settings
        self.arrays = arrays
        self.build_seconds = seconds
        self._scratch = threading.local()

    @classmethod
    def build(
        cls, index: Index, threads: int | None = None, progress: bool = False, **settings
    ) -> ClusteredIndex:
        """Prune, cluster and summarize ``index``'s postings (see :class:`ClusterSettings`);
        postings lists are clustered on ``threads`` threads (default: all cores)."""
        s, threads = ClusterSettings(**settings), check_threads(threads)
        start = time.perf_counter()
        doc_numbers, impacts = index.doc_numbers(), index.impact_values()
        fwd_offsets, fwd_terms, fwd_weights = csr_to_postings(
            index.offsets, doc_numbers, impacts.astype(np.float32), index.n_docs, 0
        )
        term_dtype = np.uint16 if index.vocab_size <= 1 << 16 else np.uint32
        fwd_terms = fwd_terms.astype(term_dtype)
        fwd_impacts = fwd_weights.astype(impacts.dtype)
        offsets, docs, _ = prune_postings(
            index.offsets, doc_numbers, impacts, s.postings_per_term or 0
        )
        del doc_numbers, impacts
        sketch = _sketches(fwd_offsets, fwd_terms, fwd_weights, index.vocab_size, s.seed)
        ordered, sizes = _cluster_lists(offsets, docs, sketch, s, threads, progress)
        term_blocks = np.zeros(index.vocab_size + 1, dtype=np.int64)
        np.cumsum([len(x) for x in sizes], out=term_blocks[1:])
        sizes = np.concatenate(sizes) if sizes else np.empty(0, np.int64)
        block_offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=block_offsets[1:])
        block_term = np.repeat(np.arange(index.vocab_size), np.diff(term_blocks))
        sum_offsets, sum_terms, sum_values = block_summaries(
            block_offsets,
            ordered,
            block_term,
            fwd_offsets,
            fwd_terms,
            fwd_impacts,
            index.vocab_size,
            float(s.summary_mass),
        )
        arrays = ClusterArrays(
            term_blocks=term_blocks,
            block_offsets=block_offsets,
            block_docs=ordered,
            sum_offsets=sum_offsets,
            sum_terms=sum_terms.astype(term_dtype),
            sum_values=sum_values,
            fwd_offsets=fwd_offsets,
            fwd_terms=fwd_terms,
            fwd_impacts=fwd_impacts,
        )
        seconds = time.perf_counter() - start
        logger.info(
            "clustered %d postings into %d blocks in %.1fs", len(ordered), len(sizes), seconds
        )
        return cls(index, s, arrays, seconds)

    @property
    def vocab(self) -> list[str]:
        return self.index.vocab

    @property
    def n_docs(self) -> int:
        return self.index.n_docs

    @property
    def n_blocks(self) -> int:
        return int(self.arrays.block_offsets.shape[0] - 1)

    @property
    def n_postings(self) -> int:
        """Postings kept after static pruning."""
        return int(self.arrays.block_docs.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory of the blocks, summaries and forward index (on top of the inverted index)."""
        return int(sum(a.nbytes for a in self.arrays))

    def __repr__(self) -> str:
        return (
            f"ClusteredIndex(n_docs={self.index.n_docs}, n_blocks={self.n_blocks}, "
            f"n_postings={self.n_postings}, settings={self.settings})"
        )

    def search(
        self,
        queries: sp.csr_array,
        k: int = 10,
        heap_factor: float = 0.9,
        query_terms: int | None = None,
        threads: int | None = None,
        allowed: np.ndarray | None = None,
    ) -> SearchResults:
        """Approximate top-``k`` per query row.

        A block is visited when its summary score reaches ``heap_factor`` x the current k-th
        score (smaller: more blocks, higher recall); only the ``query_terms`` heaviest query
        terms have their blocks visited (None: all). Scores of returned documents are exact.
        ``allowed``: as for :meth:`Index.search` (excluded documents are never scored).
        """
        k, threads = check_k(k), check_threads(threads)
        if (
            isinstance(heap_factor, bool)
            or not isinstance(heap_factor, (int, float))
            or not (math.isfinite(heap_factor) and heap_factor > 0)
        ):
            raise InputError(f"heap_factor must be a number > 0, got {heap_factor!r}.")
        index = self.index
        mask = as_allowed_mask(allowed, index.n_docs)
        q = as_sparse_batch(queries, index.vocab_size, "Query vectors")
        n_probe = index.vocab_size if query_terms is None else check_query_terms(query_terms)
        k_eff = min(k, max(index.n_docs, 1))
        scale, hf = np.float32(index.scale), np.float32(heap_factor)
        if q.shape[0] == 1:
            q_dense, seen, stamp = self._scratch_arrays()
            docs = np.full((1, k_eff), -1, dtype=np.int64)
            scores = np.zeros((1, k_eff), dtype=np.float32)
            n = clustered_one(
                self.arrays, q.indices, q.data, n_probe, hf, scale, k_eff, mask, q_dense, seen,
                stamp, docs[0], scores[0],
            )  # fmt: skip
            counts = np.array([n], dtype=np.int64)
        else:
            with parallel_threads(threads) as n_threads:
                docs, scores, counts = clustered_many(
                    self.arrays, q.indptr, q.indices, q.data, n_probe, hf, scale, k_eff, mask,
                    index.vocab_size, index.n_docs, n_threads * 4,
                )  # fmt: skip
        return SearchResults(docs=docs, scores=scores, counts=counts, doc_ids=index.doc_ids)

    def _scratch_arrays(self) -> tuple[np.ndarray, np.ndarray, int]:
        """This thread's dense query vector and seen-stamps, plus a fresh stamp."""
        s = self._scratch
        if getattr(s, "seen", None) is None:
            s.q_dense = np.zeros(self.index.vocab_size, dtype=np.float32)
            s.seen = np.full(self.index.n_docs, -1, dtype=np.int64)
            s.stamp = 0
        s.stamp += 1
        return s.q_dense, s.seen, s.stamp


def _cluster_lists(offsets, docs, sketch, s: ClusterSettings, threads, progress):
    """Every term's postings reordered by cluster (faiss k-means on the document sketches,
    one single-threaded k-means per list, lists spread over threads); ``(docs, block sizes)``."""
    import faiss  # heavy: only clustered search needs it
    from tqdm.auto import tqdm

    n_terms = offsets.shape[0] - 1
    ordered = docs.copy()
    sizes: list[np.ndarray] = [np.empty(0, np.int64)] * n_terms

    def cluster(t: int) -> None:
        lo, hi = offsets[t], offsets[t + 1]
        n = int(hi - lo)
        n_clusters = -(-n // s.cluster_size)
        if n_clusters <= 1:
            sizes[t] = np.array([n] if n else [], dtype=np.int64)
            return
        x = sketch[docs[lo:hi]]
        km = faiss.Kmeans(
            SKETCH_DIM,
            n_clusters,
            niter=s.kmeans_iterations,
            seed=s.seed + t,
            spherical=True,
            min_points_per_centroid=1,
            max_points_per_centroid=max(256, s.cluster_size),
        )
        km.train(x)
        assign = np.argmax(x @ km.centroids.T, axis=1)
        ordered[lo:hi] = docs[lo:hi][np.lexsort((docs[lo:hi], assign))]
        counts = np.bincount(assign, minlength=n_clusters)
        sizes[t] = counts[counts > 0].astype(np.int64)

    workers = threads or os.cpu_count() or 1
    omp_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # many small problems: threads over lists, not inside one
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            jobs = pool.map(cluster, range(n_terms), chunksize=64)
            for _ in tqdm(jobs, total=n_terms, desc="cluster", unit="term", disable=not progress):
                pass
    finally:
        faiss.omp_set_num_threads(omp_threads)
    return ordered, sizes


def _sketches(fwd_offsets, fwd_terms, fwd_weights, vocab_size: int, seed: int) -> np.ndarray:
    """Unit-length random projections of the documents' sparse vectors (what k-means sees)."""
    n_docs = fwd_offsets.shape[0] - 1
    docs = sp.csr_array(
        (fwd_weights, fwd_terms.astype(np.int64), fwd_offsets), (n_docs, vocab_size)
    )
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((vocab_size, SKETCH_DIM), dtype=np.float32)
    sketch = np.ascontiguousarray(docs @ projection, dtype=np.float32)
    norms = np.linalg.norm(sketch, axis=1, keepdims=True)
    return sketch / np.maximum(norms, 1e-12)
