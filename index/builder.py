"""Streaming construction of postings from batches of document vectors.

:class:`PostingsBuilder` holds the algorithm and returns the arrays of an index; the
:class:`~lsr.index.IndexBuilder` (in :mod:`lsr.index.inverted`, beside the ``Index`` it
builds) wraps them, so this module does not import the index it builds for.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from lsr.errors import InputError
from lsr.index.validation import as_sparse_batch, check_doc_ids
from lsr.kernels import csr_to_postings, dequantize_scale, merge_runs, quantize_uint8
from lsr.kernels.layout import MAX_PACKED_DOCS, PACKED_MARKER, pack

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("uint8", "float32")


def checked_batch(
    vectors: object, doc_ids: Sequence[object], vocab_size: int, seen: set[str]
) -> tuple[sp.csr_array, list[str]]:
    """A batch of document vectors and ids for a builder, or a clear error: canonical CSR of
    width ``vocab_size``, one valid id per row, none of them in ``seen`` (the ids added
    before, which it then holds too) or repeated."""
    csr = as_sparse_batch(vectors, vocab_size, "Document vectors")
    ids = check_doc_ids([d if isinstance(d, str) else str(d) for d in doc_ids])
    if len(ids) != csr.shape[0]:
        raise InputError(
            f"Got {csr.shape[0]} document vectors but {len(ids)} doc ids; pass one id per row."
        )
    fresh = set(ids)
    if len(fresh) != len(ids) or not fresh.isdisjoint(seen):
        dup = next(d for d in ids if d in seen or ids.count(d) > 1)
        raise InputError(f"Duplicate document id {dup!r}; document ids must be unique.")
    seen.update(fresh)
    return csr, ids


def run_of(
    batches: list[sp.csr_array], n_terms: int, first_doc: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Buffered batches as one term-major run: ``(term_offsets, docs, weights)``, the docs
    numbered from ``first_doc`` (see ``lsr.kernels.csr_to_postings``)."""
    csr = sp.vstack(batches, format="csr") if len(batches) > 1 else batches[0]
    return csr_to_postings(
        csr.indptr.astype(np.int64), csr.indices.astype(np.int64), csr.data, n_terms, first_doc
    )


class PostingsBuilder:
    """Add document batches one at a time, then take the index's arrays (``postings()``).

    Each batch is transposed to term-major postings as it arrives (a "run"), so only the
    compact postings are kept, never the document-major input. ``finish`` concatenates the
    runs term by term and quantizes impacts with one scale for the whole index.
    """

    def __init__(
        self,
        vocab: Sequence[str],
        quantization: str = "uint8",
        run_postings: int = 4_000_000,
        scale: float | None = None,
    ) -> None:
        """``scale`` (uint8 only): quantize with this step instead of largest weight / 255,
        unless a weight would exceed 255 steps (then the larger step is used). A collection
        gives all its segments one step, so a merge copies impacts exactly."""
        if quantization not in QUANTIZATIONS:
            raise InputError(
                f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}."
            )
        vocab = [str(t) for t in vocab]
        if not vocab:
            raise InputError("The vocabulary is empty; an index needs at least one term.")
        if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
            raise InputError(f"scale must be a positive number, got {scale!r}.")
        self.vocab = vocab
        self.quantization = quantization
        self.scale = scale
        self._runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._doc_ids: list[str] = []
        self._seen: set[str] = set()
        self._doc_terms: list[np.ndarray] = []
        self._pending: list[sp.csr_array] = []
        self._pending_nnz = 0
        self._run_docs = 0
        self.run_postings = max(1, run_postings)

    @property
    def n_docs(self) -> int:
        return len(self._doc_ids)

    def add(self, vectors: sp.csr_array, doc_ids: Sequence[str]) -> None:
        """Append a batch of document vectors (rows) with their external ids."""
        csr, ids = checked_batch(vectors, doc_ids, len(self.vocab), self._seen)
        self._pending.append(csr)
        self._pending_nnz += csr.nnz
        self._doc_terms.append(np.diff(csr.indptr).astype(np.uint32))
        self._doc_ids.extend(ids)
        if self._pending_nnz >= self.run_postings:
            self._flush()

    def _flush(self) -> None:
        """Transpose the buffered batches into one term-major run (small batches share a run)."""
        if not self._pending:
            return
        self._runs.append(run_of(self._pending, len(self.vocab), self._run_docs))
        self._run_docs += sum(m.shape[0] for m in self._pending)
        self._pending, self._pending_nnz = [], 0

    def extend(self, batches: Iterable[tuple[sp.csr_array, Sequence[str]]]) -> PostingsBuilder:
        """Add every ``(vectors, doc_ids)`` batch of an iterable; returns ``self``."""
        for vectors, ids in batches:
            self.add(vectors, ids)
        return self

    def postings(self, metadata: dict | None = None) -> dict:
        """Merge the runs into one term-major postings list: the keyword arguments of the
        in-memory ``Index`` (vocabulary, ids, postings, scale, metadata)."""
        self._flush()
        n_terms = len(self.vocab)
        if self._runs:
            run_offsets = np.stack([r[0] for r in self._runs])
            run_docs = np.concatenate([r[1] for r in self._runs])
            run_weights = np.concatenate([r[2] for r in self._runs])
        else:
            run_offsets = np.zeros((1, n_terms + 1), dtype=np.int64)
            run_docs = np.empty(0, dtype=np.uint32)
            run_weights = np.empty(0, dtype=np.float32)
        self._runs.clear()
        offsets = np.empty(n_terms + 1, dtype=np.int64)
        docs = np.empty(run_docs.shape[0], dtype=np.uint32)
        weights = np.empty(run_docs.shape[0], dtype=np.float32)
        merge_runs(run_offsets, run_docs, run_weights, offsets, docs, weights)
        del run_docs, run_weights
        top = float(weights.max()) if weights.size else 0.0
        if self.quantization == "uint8":
            scale = dequantize_scale(top)
            if self.scale is not None and top <= 255.0 * self.scale * (1 + 1e-6):  # float32 ulps
                scale = float(self.scale)
            impacts = quantize_uint8(weights, np.float32(scale))
        else:
            scale = 1.0
            impacts = weights
        if impacts.dtype == np.uint8 and self.n_docs <= MAX_PACKED_DOCS:
            docs, impacts = pack(docs, impacts), PACKED_MARKER  # one 4-byte word per posting
        doc_terms = (
            np.concatenate(self._doc_terms) if self._doc_terms else np.empty(0, dtype=np.uint32)
        )
        logger.info("built index: %d docs, %d postings", self.n_docs, docs.shape[0])
        return dict(
            vocab=self.vocab,
            doc_ids=list(self._doc_ids),
            offsets=offsets,
            docs=docs,
            impacts=impacts,
            doc_terms=doc_terms,
            scale=scale,
            metadata=dict(metadata or {}),
        )
