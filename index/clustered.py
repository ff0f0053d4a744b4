"""Approximate search in the style of Seismic: static pruning, clustered blocks, summaries.

Built from an :class:`~lsr.index.inverted.Index` (see :mod:`lsr.kernels.cluster_build` for
the algorithms): static pruning keeps the postings above a global impact floor (or each
list's highest ones), at most a cap per list; each list's documents go into blocks of about
``cluster_size`` similar documents (by sparse dot products with sampled centroids); each
block gets a summary (per-term maximum impacts holding ``summary_mass`` of the total, plus
the list's own term), stored transposed and quantized. A query then scores only the
documents of blocks whose summaries look promising, exactly, through a forward index. Build
once, search many times; every setting's recall against the exact top-k is measured by
``lsr bench``. The defaults are Seismic's recommended build parameters.
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
from lsr.kernels.cluster_build import (
    cluster_lists,
    heaviest_terms,
    impact_floor,
    prune_postings,
    summarize_lists,
)
from lsr.kernels.clustered import ClusterArrays, clustered_many, clustered_one
from lsr.kernels.postings import csr_to_postings

logger = logging.getLogger(__name__)

PRUNINGS = ("global", "fixed")


def _finite(x) -> bool:
    """A finite int or float (not a bool)."""
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


@dataclass(frozen=True)
class ClusterSettings:
    """How a clustered index is built (Seismic's recommended parameters by default).

    ``pruning="global"``: keep the postings at or above the impact that keeps
    ``postings_per_term`` x vocabulary size postings in all (ties at the floor all kept), at
    most ``max_fraction`` x ``postings_per_term`` per list. ``"fixed"``: each list's
    ``postings_per_term`` highest. ``postings_per_term=None`` keeps every posting.
    ``cluster_size``: postings per sampled centroid (Seismic's ``centroid_fraction`` is its
    inverse); clusters below ``min_cluster_size`` are dissolved; documents are clustered
    on their ``doc_cut`` heaviest terms. ``summary_mass``: the fraction of a block summary's
    mass kept. ``seed``: the centroid sampling."""

    postings_per_term: int | None = 3500
    pruning: str = "global"
    max_fraction: float = 1.5
    cluster_size: int = 10
    min_cluster_size: int = 2
    doc_cut: int = 15
    summary_mass: float = 0.4
    seed: int = 0

    def __post_init__(self) -> None:
        positive_int(self.postings_per_term, "postings_per_term", optional=True)
        positive_int(self.cluster_size, "cluster_size")
        positive_int(self.min_cluster_size, "min_cluster_size")
        positive_int(self.doc_cut, "doc_cut")
        if self.pruning not in PRUNINGS:
            raise InputError(f"pruning must be one of {', '.join(PRUNINGS)}; got {self.pruning!r}.")
        if not (_finite(self.summary_mass) and 0 < self.summary_mass <= 1):
            raise InputError(f"summary_mass must be in (0, 1], got {self.summary_mass!r}.")
        if not (_finite(self.max_fraction) and self.max_fraction >= 1):
            raise InputError(f"max_fraction must be >= 1, got {self.max_fraction!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {self.seed!r}.")

    def list_cap(self) -> int:
        """Postings a list keeps at most (0: no cap)."""
        if self.postings_per_term is None:
            return 0
        if self.pruning == "fixed":
            return self.postings_per_term
        return max(1, int(self.postings_per_term * self.max_fraction))


class ClusteredIndex:
    """Clustered postings blocks with summaries plus a forward index, over one ``Index``."""

    def __init__(
        self,
        index: Index,
        settings: ClusterSettings,
        arrays: ClusterArrays,
        seconds: float,
        phases: dict[str, float] | None = None,
    ) -> None:
        self.index = index
        self.settings = settings
        self.arrays = arrays
        self.build_seconds = seconds
        self.build_phases = phases or {}  # seconds per build step (prune, cluster, summarize)
        # the most blocks one list has: the size of the per-query block scratch
        self.max_blocks = max(1, int(np.diff(arrays.term_blocks).max(initial=0)))
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
        floor = impacts.dtype.type(0)
        if s.pruning == "global" and s.postings_per_term is not None:
            floor = impact_floor(impacts, s.postings_per_term * index.vocab_size)
        offsets, docs, _ = prune_postings(index.offsets, doc_numbers, impacts, s.list_cap(), floor)
        del doc_numbers, impacts
        phases = {"prune": time.perf_counter() - start}
        top_terms, top_weights = heaviest_terms(fwd_offsets, fwd_terms, fwd_weights, s.doc_cut)
        workers = threads or os.cpu_count() or 1
        chunks = _chunks(offsets, 16 * workers)
        ordered = np.empty_like(docs)
        sizes = np.zeros(docs.shape[0], dtype=np.int64)
        n_blocks = np.zeros(index.vocab_size, dtype=np.int64)

        def cluster(lo: int, hi: int) -> None:
            cluster_lists(
                lo, hi, offsets, docs, fwd_offsets, fwd_terms, fwd_weights, top_terms,
                top_weights, s.cluster_size, s.min_cluster_size, s.seed, index.vocab_size,
                ordered, sizes, n_blocks,
            )  # fmt: skip

        _run_chunks(cluster, chunks, offsets, workers, progress, "cluster")
        phases["cluster"] = time.perf_counter() - start - sum(phases.values())
        term_blocks = np.zeros(index.vocab_size + 1, dtype=np.int64)
        np.cumsum(n_blocks, out=term_blocks[1:])
        # list t's block sizes were written at sizes[offsets[t]:offsets[t] + n_blocks[t]]
        within = np.arange(term_blocks[-1]) - np.repeat(term_blocks[:-1], n_blocks)
        block_sizes = sizes[np.repeat(offsets[:-1], n_blocks) + within]
        block_offsets = np.zeros(block_sizes.shape[0] + 1, dtype=np.int64)
        np.cumsum(block_sizes, out=block_offsets[1:])
        top = float(fwd_impacts.max()) if fwd_impacts.shape[0] else 0.0
        block_dtype = np.uint16 if n_blocks.max(initial=0) <= 1 << 16 else np.uint32
        parts: dict[int, list] = {}

        def summarize(lo: int, hi: int) -> None:
            part = list(summarize_lists(
                lo, hi, term_blocks, block_offsets, ordered, fwd_offsets, fwd_terms,
                fwd_impacts, index.vocab_size, float(s.summary_mass), top,
            ))  # fmt: skip
            part[2] = part[2].astype(term_dtype)
            part[4] = part[4].astype(block_dtype)
            parts[lo] = part

        _run_chunks(summarize, chunks, offsets, workers, progress, "summarize")
        phases["summarize"] = time.perf_counter() - start - sum(phases.values())
        ordered_parts = [parts[lo] for lo, _ in chunks]
        comps_per_list, entries_per_list, comp_terms, comp_ends = (
            _join(ordered_parts, i) for i in range(4)
        )
        entry_blocks, entry_values, block_scale = (_join(ordered_parts, i) for i in range(4, 7))
        del ordered_parts
        list_comps = np.zeros(index.vocab_size + 1, dtype=np.int64)
        np.cumsum(comps_per_list, out=list_comps[1:])
        list_entries = np.zeros(index.vocab_size + 1, dtype=np.int64)
        np.cumsum(entries_per_list, out=list_entries[1:])
        arrays = ClusterArrays(
            term_blocks=term_blocks,
            block_offsets=block_offsets,
            block_docs=ordered,
            list_comps=list_comps,
            list_entries=list_entries,
            comp_terms=comp_terms,
            comp_ends=comp_ends,
            entry_blocks=entry_blocks,
            entry_values=entry_values,
            block_scale=block_scale,
            fwd_offsets=fwd_offsets,
            fwd_terms=fwd_terms,
            fwd_impacts=fwd_impacts,
        )
        seconds = time.perf_counter() - start
        logger.info(
            "clustered %d postings into %d blocks in %.1fs (%s)",
            len(ordered), len(block_sizes), seconds,
            ", ".join(f"{k} {v:.1f}s" for k, v in phases.items()),
        )  # fmt: skip
        return cls(index, s, arrays, seconds, phases)

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
            q_dense, seen, bounds, keys = self._scratch_arrays()
            docs = np.full((1, k_eff), -1, dtype=np.int64)
            scores = np.zeros((1, k_eff), dtype=np.float32)
            n = clustered_one(
                self.arrays, q.indices, q.data, n_probe, hf, scale, k_eff, mask, q_dense, seen,
                bounds, keys, docs[0], scores[0],
            )  # fmt: skip
            counts = np.array([n], dtype=np.int64)
        else:
            with parallel_threads(threads) as n_threads:
                docs, scores, counts = clustered_many(
                    self.arrays, q.indptr, q.indices, q.data, n_probe, hf, scale, k_eff, mask,
                    index.vocab_size, index.n_docs, self.max_blocks, n_threads * 4,
                )  # fmt: skip
        return SearchResults(docs=docs, scores=scores, counts=counts, doc_ids=index.doc_ids)

    def _scratch_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """This thread's scratch: dense query vector, seen-bits, block bounds, sort keys."""
        s = self._scratch
        if getattr(s, "seen", None) is None:
            s.q_dense = np.zeros(self.index.vocab_size, dtype=np.float32)
            s.seen = np.zeros((self.index.n_docs >> 3) + 1, dtype=np.uint8)
            s.bounds = np.zeros(self.max_blocks, dtype=np.float32)
            s.keys = np.empty(self.max_blocks, dtype=np.uint64)
        return s.q_dense, s.seen, s.bounds, s.keys


def _join(parts: list[list[np.ndarray]], i: int) -> np.ndarray:
    """The ``i``-th array of every part, concatenated; each part's copy is released as it
    is copied, so the build holds the result plus one part, not two copies."""
    if not parts:
        return np.empty(0, dtype=np.int64)
    out = np.empty(sum(p[i].shape[0] for p in parts), dtype=parts[0][i].dtype)
    at = 0
    for p in parts:
        n = p[i].shape[0]
        out[at : at + n] = p[i]
        p[i] = None
        at += n
    return out


def _chunks(offsets: np.ndarray, n_chunks: int) -> list[tuple[int, int]]:
    """Contiguous term ranges holding about equal numbers of postings (at least one term)."""
    n_terms = offsets.shape[0] - 1
    if n_terms == 0:
        return []
    goal = np.linspace(0, offsets[-1], n_chunks + 1)[1:-1]
    # a goal below the last offset falls before the last list: every cut is in 1..n_terms
    cuts = np.unique(np.concatenate(([0], np.searchsorted(offsets[1:], goal) + 1, [n_terms])))
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


def _run_chunks(work, chunks, offsets, workers: int, progress: bool, desc: str) -> None:
    """``work(lo, hi)`` for every chunk of lists on ``workers`` threads (the kernels release
    the GIL), with a progress bar in postings."""
    from tqdm.auto import tqdm

    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=int(offsets[-1]), desc=desc, unit="posting", disable=not progress) as bar,
    ):
        jobs = [(pool.submit(work, lo, hi), int(offsets[hi] - offsets[lo])) for lo, hi in chunks]
        for job, n in jobs:
            job.result()
            bar.update(n)
