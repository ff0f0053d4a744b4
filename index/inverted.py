"""The :class:`Index`: term-major postings over a fixed vocabulary, with exact top-k search."""

from __future__ import annotations

import functools
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from lsr import __version__
from lsr.errors import InputError
from lsr.index import storage
from lsr.index.algorithms import algorithm_code, check_query_terms
from lsr.index.auto_exact import AutoExact
from lsr.index.blocks import BLOCK_SIZE, Blocks, maxima_dtype
from lsr.index.builder import PostingsBuilder
from lsr.index.errors import IndexFormatError, VocabularyMismatchError
from lsr.index.results import SearchResults
from lsr.index.store import STORE_FILE, DocumentStore, write_store
from lsr.index.threads import check_threads, parallel_threads
from lsr.index.validation import as_allowed_mask, as_sparse_batch, check_k
from lsr.kernels import (
    dense_rows,
    doc_range_maxima,
    doc_range_starts,
    scratch,
    search_many,
    search_single,
    top_terms,
)
from lsr.kernels.dispatch import AUTO, AUTO_TAAT_MIN_DOCS, PostingsArrays
from lsr.kernels.layout import PACKED_MARKER, is_packed, unpack_docs, unpack_impacts
from lsr.kernels.lookup import document_postings, posting_positions
from lsr.kernels.maxscore_taat import SPARSE_FRACTION
from lsr.kernels.topk import SCAN_BLOCK

# dense rows (kernels.dense) are built on collections up to this size: each row add streams
# the accumulator, which must stay in the L3 cache to beat a scatter of the term's postings
# (1.6x faster exhaustive search at 1M documents, 1.3x at 2M: docs/performance.md)
DENSE_ROWS_MAX_DOCS = 2_000_000


class Index:
    """An inverted index of sparse document vectors (build, save, load, search).

    Impacts are stored as uint8 with one scale for the whole index (default) or as float32.
    Scores are the dot product of the query vector with the (dequantized) document vector;
    ties rank the document added first higher.
    """

    def __init__(
        self,
        vocab: Sequence[str],
        doc_ids: Sequence[str] | pa.Array,
        offsets: np.ndarray,
        docs: np.ndarray,
        impacts: np.ndarray,
        doc_terms: np.ndarray,
        scale: float,
        metadata: dict | None = None,
        blocks: Blocks | None = None,
        vocab_hash: str | None = None,
    ) -> None:
        self.vocab = vocab if isinstance(vocab, list) else list(vocab)
        self.doc_ids = (
            doc_ids if isinstance(doc_ids, pa.Array) else pa.array(doc_ids, pa.large_string())
        )
        self.offsets = offsets
        self.docs = docs
        self.impacts = impacts
        self.doc_terms = doc_terms
        self.scale = float(scale)
        self._scale32 = np.float32(self.scale)  # what the kernels multiply by (one conversion)
        self.metadata = dict(metadata or {})
        self.blocks = blocks if blocks is not None else Blocks.build(offsets, docs, impacts)
        self.vocab_hash = vocab_hash or storage.vocab_hash(self.vocab)
        self._scratch = threading.local()
        self._kernel_arrays: PostingsArrays | None = None
        self._kernel_lock = threading.Lock()
        self.auto_exact = AutoExact()  # what exact ``auto`` runs here (index.auto_exact)
        self._position: dict[str, int] | None = None
        self.manifest: dict | None = None  # the manifest it was loaded with, if loaded
        self.store: DocumentStore | None = None  # its stored documents, if loaded with them

    @property
    def _postings(self) -> PostingsArrays:
        """The arrays the search kernels take, built on first use: the doc-range maxima of the
        long lists (one pass over their postings, about 0.6 s per 100M) and, on collections
        of at most ``DENSE_ROWS_MAX_DOCS`` documents, dense rows for the most frequent terms (at
        most half the postings' bytes)."""
        if self._kernel_arrays is None:
            with self._kernel_lock:
                if self._kernel_arrays is None:
                    b = self.blocks
                    like = np.zeros(0, dtype=maxima_dtype(self.impacts))
                    ranges = doc_range_maxima(
                        self.offsets, self.docs, self.impacts, self.n_docs, like, SCAN_BLOCK
                    )
                    starts = doc_range_starts(
                        self.offsets, self.docs, self.impacts, ranges[0], ranges[1].shape[0],
                        self.n_docs, SCAN_BLOCK,
                    )  # fmt: skip
                    budget = (self.docs.nbytes + self.impacts.nbytes) // 2
                    row_bytes = max(self.n_docs, 1) * like.itemsize
                    max_rows = budget // row_bytes if self.n_docs <= DENSE_ROWS_MAX_DOCS else 0
                    dense = dense_rows(
                        self.offsets, self.docs, self.impacts, self.n_docs, like, max_rows
                    )
                    self._kernel_arrays = PostingsArrays(
                        offsets=self.offsets,
                        docs=self.docs,
                        impacts=self.impacts,
                        max_impact=b.max_impact,
                        block_offsets=b.offsets,
                        block_max=b.max,
                        block_last=b.last,
                        block_size=b.size,
                        range_rows=ranges[0],
                        range_max=ranges[1],
                        range_base=starts[0],
                        range_rel=starts[1],
                        dense_rows=dense[0],
                        dense_table=dense[1],
                    )
        return self._kernel_arrays

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        vectors: sp.csr_array,
        doc_ids: Sequence[str],
        vocab: Sequence[str],
        quantization: str = "uint8",
        chunk_size: int = 50_000,
        metadata: dict | None = None,
    ) -> Index:
        """Index the rows of ``vectors`` (documents x vocabulary), ``chunk_size`` rows at a time."""
        builder = PostingsBuilder(vocab, quantization=quantization)
        if not sp.issparse(vectors):
            as_sparse_batch(vectors, len(builder.vocab), "Document vectors")
        if len(doc_ids) != vectors.shape[0]:
            raise InputError(
                f"Got {vectors.shape[0]} document vectors but {len(doc_ids)} doc ids; "
                "pass one id per row."
            )
        csr = sp.csr_array(vectors)
        for lo in range(0, csr.shape[0], max(1, chunk_size)):
            hi = min(lo + chunk_size, csr.shape[0])
            builder.add(csr[lo:hi], doc_ids[lo:hi])
        return cls(**builder.postings(metadata))

    # ---- properties ---------------------------------------------------------------------

    @property
    def n_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def learns_auto(self) -> bool:
        """Whether exact ``auto`` here picks its kernel by timing (``auto_exact``): from
        ``AUTO_TAAT_MIN_DOCS`` documents; below, it always scores exhaustively."""
        return self.n_docs >= AUTO_TAAT_MIN_DOCS

    @property
    def n_postings(self) -> int:
        return int(self.docs.shape[0])

    @functools.cached_property
    def list_lengths(self) -> np.ndarray:
        """Postings per term (document frequencies), int64, computed once."""
        return np.diff(np.asarray(self.offsets, dtype=np.int64))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def quantization(self) -> str:
        return "uint8" if self.packed or self.impacts.dtype == np.uint8 else "float32"

    @property
    def packed(self) -> bool:
        """Postings are uint32 words of doc number (low 24 bits) and uint8 impact (high 8)."""
        return is_packed(self.impacts)

    def doc_numbers(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Doc numbers of postings ``lo:hi`` (uint32), whatever the postings layout."""
        words = self.docs[lo:hi]
        return unpack_docs(words) if self.packed else words

    def impact_values(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Stored impacts of postings ``lo:hi`` (uint8 or float32; times ``scale`` = weight)."""
        return unpack_impacts(self.docs[lo:hi]) if self.packed else self.impacts[lo:hi]

    def weights(self) -> sp.csc_array:
        """All dequantized weights as a (documents x vocabulary) CSC array."""
        data = self.impact_values().astype(np.float32) * np.float32(self.scale)
        return sp.csc_array(
            (data, self.doc_numbers(), self.offsets), shape=(self.n_docs, self.vocab_size)
        )

    def rows(self, numbers: np.ndarray) -> tuple[sp.csr_array, list[str]]:
        """The dequantized vectors (CSR, in the order given) and the ids of documents
        ``numbers``: what a merge of segments re-indexes."""
        numbers = np.asarray(numbers, dtype=np.int64)
        return self.weights().tocsr()[numbers], self.doc_ids.take(pa.array(numbers)).to_pylist()

    def __repr__(self) -> str:
        return (
            f"Index(n_docs={self.n_docs}, vocab_size={self.vocab_size}, "
            f"n_postings={self.n_postings}, quantization={self.quantization!r})"
        )

    def doc_index(self, doc_id: str) -> int:
        """The internal number of an external document id (KeyError if absent)."""
        return self._positions()[doc_id]

    def has_doc(self, doc_id: str) -> bool:
        """Whether the index holds a document with this external id."""
        return doc_id in self._positions()

    def _positions(self) -> dict[str, int]:
        """External id -> internal number, built on first use (one pass over the ids)."""
        if self._position is None:
            self._position = {d: i for i, d in enumerate(self.doc_ids.to_pylist())}
        return self._position

    def document_vector(self, doc: int) -> dict[str, float]:
        """The stored (dequantized) weights of document number ``doc``, term by term (one
        compiled binary search per non-empty term)."""
        terms, positions = document_postings(self.offsets, self.docs, self.impacts, int(doc))
        weights = self._weights_at(positions)
        return {
            self.vocab[t]: float(w) for t, w in zip(terms.tolist(), weights.tolist(), strict=True)
        }

    def term_weights(self, docs: np.ndarray | int, terms: np.ndarray) -> np.ndarray:
        """The stored (dequantized) weights of document numbers ``docs`` for ``terms`` (0 where
        absent): an array (len(docs), len(terms)), or (len(terms),) for one document number;
        one compiled binary search per pair, for explaining hits."""
        single = np.ndim(docs) == 0
        doc_numbers = np.atleast_1d(np.asarray(docs, dtype=np.int64))
        terms = np.asarray(terms, dtype=np.int64)
        if terms.size and (terms.min() < 0 or terms.max() >= self.vocab_size):
            raise InputError(f"term ids must be in [0, {self.vocab_size}).")
        positions = posting_positions(self.offsets, self.docs, self.impacts, doc_numbers, terms)
        out = np.zeros(positions.shape, dtype=np.float32)
        found = positions >= 0
        out[found] = self._weights_at(positions[found])
        return out[0] if single else out

    def _weights_at(self, positions: np.ndarray) -> np.ndarray:
        """Dequantized weights of the postings at ``positions``."""
        stored = unpack_impacts(self.docs[positions]) if self.packed else self.impacts[positions]
        return stored.astype(np.float32) * self._scale32

    # ---- search -------------------------------------------------------------------------

    def check_vocab(self, vocab: Sequence[str]) -> None:
        """Refuse a query vocabulary that differs from the index's."""
        check_vocab(vocab, self.vocab_hash, self.vocab_size)

    def search(
        self,
        queries: sp.csr_array,
        k: int = 10,
        vocab: Sequence[str] | None = None,
        threads: int | None = None,
        algorithm: str = "auto",
        theta: float = 1.0,
        query_terms: int | None = None,
        allowed: np.ndarray | None = None,
    ) -> SearchResults:
        """Top-``k`` documents for each query row, by dot product.

        ``algorithm``: ``exhaustive`` (term-at-a-time), ``maxscore`` (document-at-a-time),
        ``maxscore-taat`` (term-at-a-time), ``bmw`` (block-max WAND) or ``ranges`` (block-max
        pruning over doc ranges, best bound first; pays for short queries) all return the
        same exact top-k; ``auto`` picks one (exhaustive below 100k documents; above, the
        fastest of exhaustive, term-at-a-time MaxScore and ranges, learned from the first
        queries: ``auto_exact``; MaxScore or BMW by query length when approximate). Approximate
        search: ``theta`` > 1 prunes against ``theta`` x the k-th score (maxscore, bmw,
        ranges), ``query_terms`` keeps only each query's heaviest terms. Pass the
        encoder's ``vocab`` to have it checked against the index's. ``allowed`` (a bool array
        over the document numbers) restricts the hits to the documents it marks: deleted
        documents and filters are applied inside the kernels, so each query still gets ``k``
        hits when that many allowed documents match, and pruning stays exact over them.
        """
        k, threads = check_k(k), check_threads(threads)
        mask = as_allowed_mask(allowed, self.n_docs)
        if vocab is not None:
            self.check_vocab(vocab)
        code = algorithm_code(algorithm, theta)
        q = as_sparse_batch(queries, self.vocab_size, "Query vectors")
        q_indptr, q_terms, q_weights = q.indptr, q.indices, q.data
        if query_terms is not None:
            q_indptr, q_terms, q_weights = top_terms(
                q_indptr, q_terms, q_weights, check_query_terms(query_terms)
            )
        k_eff = min(k, max(self.n_docs, 1))
        scale, theta = self._scale32, float(theta)
        learning = code == AUTO and theta == 1.0 and self.learns_auto
        if learning and self.auto_exact.choice is not None:
            code, learning = self.auto_exact.choice, False
        if q.shape[0] == 1:
            docs = np.empty((1, k_eff), dtype=np.int64)
            scores = np.empty((1, k_eff), dtype=np.float32)
            counts = np.empty(1, dtype=np.int64)
            acc, candidates = self._scratch_arrays()
            trial, postings = None, 0
            if learning:
                postings = int(self.list_lengths[q_terms].sum())
                if postings * SPARSE_FRACTION >= self.n_docs:  # else both contenders scan sparsely
                    trial = self.auto_exact.next_trial()
            started = time.perf_counter()
            search_single(
                code if trial is None else trial, self._postings, q_terms, q_weights, scale,
                k_eff, theta, mask, acc, candidates, docs, scores, counts,
            )  # fmt: skip
            if trial is not None:
                self.auto_exact.record(trial, time.perf_counter() - started, postings)
        else:
            with parallel_threads(threads) as n_threads:
                docs, scores, counts = search_many(
                    code, self._postings, q_indptr, q_terms, q_weights, scale, k_eff, theta,
                    mask, self.n_docs, n_threads * 4,
                )  # fmt: skip
        return SearchResults(docs=docs, scores=scores, counts=counts, doc_ids=self.doc_ids)

    def _scratch_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-thread accumulator and candidate list, allocated once per thread."""
        s = self._scratch
        if getattr(s, "acc", None) is None or s.acc.shape[0] != self.n_docs:
            s.acc, s.candidates = scratch(self.n_docs)
        return s.acc, s.candidates

    # ---- persistence --------------------------------------------------------------------

    def save(
        self,
        path: str | Path,
        overwrite: bool = False,
        extra=None,
        manifest_fields: dict | None = None,
        documents: Sequence[dict] | pa.Table | None = None,
    ) -> Path:
        """Write the index to directory ``path`` atomically (temp dir + rename).

        ``extra(tmp_dir)`` may write more files (e.g. the encoder) into the directory before
        it is renamed into place, so they appear together with the index or not at all;
        ``manifest_fields`` adds top-level manifest fields (``base_id``, ``wal``).
        ``documents`` (one record per document, in doc-number order) are written as the
        stored documents (``lsr.index.store``); without them a loaded index's store is kept.
        """
        path = Path(path)
        starts = self.offsets[:-1]
        tables = {
            "terms.arrow": pa.table(
                {
                    "term": pa.array(self.vocab, pa.string()),
                    "start": pa.array(starts, pa.int64()),
                    "df": pa.array(np.diff(self.offsets), pa.int64()),
                    "max_impact": pa.array(self.blocks.max_impact),
                    "block_start": pa.array(self.blocks.offsets[:-1]),
                }
            ),
            "postings.arrow": pa.table(
                {"posting": pa.array(self.docs, pa.uint32())}
                if self.packed
                else {
                    "doc": pa.array(self.docs, pa.uint32()),
                    "impact": pa.array(self.impacts),
                }
            ),
            "docs.arrow": pa.table(
                {
                    "doc_id": self.doc_ids.cast(pa.large_string()),
                    "n_terms": pa.array(self.doc_terms, pa.uint32()),
                }
            ),
            "blocks.arrow": pa.table(
                {
                    "max": pa.array(self.blocks.max),
                    "last": pa.array(self.blocks.last, pa.uint32()),
                }
            ),
        }
        manifest = {
            "format": storage.FORMAT_NAME,
            "format_version": storage.FORMAT_VERSION,
            "created_by": f"lsr-engine {__version__}",
            "n_docs": self.n_docs,
            "n_postings": self.n_postings,
            "vocab_size": self.vocab_size,
            "vocab_hash": self.vocab_hash,
            "quantization": {"dtype": self.quantization, "scale": self.scale},
            "postings_layout": "packed" if self.packed else "separate",
            "block_size": self.blocks.size,
            "metadata": self.metadata,
            **(manifest_fields or {}),
        }
        optional = {}
        if documents is not None:
            if len(documents) != self.n_docs:
                raise InputError(
                    f"Got {len(documents)} documents to store for {self.n_docs} indexed ones."
                )
            optional[STORE_FILE] = lambda file: write_store(file, documents)
        elif self.store is not None:
            source = self.store.path
            optional[STORE_FILE] = lambda file: shutil.copyfile(source, file)
        storage.write_index(
            path, tables, manifest, overwrite=overwrite, extra=extra, optional=optional
        )
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        mmap: bool = True,
        verify: bool = True,
        vocab: tuple[list[str], str] | None = None,
    ) -> Index:
        """Open the index at ``path``; arrays are memory mapped unless ``mmap=False``.

        ``verify`` checks every file's sha256 against the manifest (sizes are always
        checked), so corruption is reported here rather than as wrong results later.
        ``vocab`` (the term list and its hash) is a vocabulary already loaded, which the
        index shares when its manifest names the same hash (the segments of a collection).
        """
        path = Path(path)
        manifest = storage.read_manifest(path)
        tables = storage.read_tables(path, manifest, mmap=mmap, verify=verify)
        terms, postings, docs_t, blocks_t = (tables[n] for n in storage.FILES)
        q = manifest.get("quantization", {})
        dtype = q.get("dtype")
        if dtype not in ("uint8", "float32"):
            raise IndexFormatError(f"{path}: unknown quantization {dtype!r}; rebuild the index.")
        starts = storage.column(terms, "start", pa.int64(), "terms.arrow")
        df = storage.column(terms, "df", pa.int64(), "terms.arrow")
        offsets = np.empty(starts.shape[0] + 1, dtype=np.int64)
        offsets[:-1] = starts
        offsets[-1] = starts[-1] + df[-1] if starts.shape[0] else 0
        layout = manifest.get("postings_layout", "separate")
        if layout == "packed" and dtype == "uint8":
            doc_nums = storage.column(postings, "posting", pa.uint32(), "postings.arrow")
            impacts = PACKED_MARKER
        elif layout == "separate":
            doc_nums = storage.column(postings, "doc", pa.uint32(), "postings.arrow")
            impacts = storage.column(postings, "impact", pa.type_for_alias(dtype), "postings.arrow")
        else:
            raise IndexFormatError(
                f"{path}: unknown postings layout {layout!r} for {dtype}; rebuild the index."
            )
        maxima = (pa.float32(), pa.uint8())  # format 1 stored float32 maxima
        block_start = storage.column(terms, "block_start", (pa.int64(), pa.int32()), "terms.arrow")
        shared = vocab is not None and vocab[1] == manifest.get("vocab_hash")
        vocab = vocab[0] if shared else terms.column("term").to_pylist()
        doc_ids = docs_t.column("doc_id").combine_chunks()
        n_docs, n_postings = manifest.get("n_docs"), manifest.get("n_postings")
        if (
            len(vocab) != manifest.get("vocab_size")
            or len(doc_ids) != n_docs
            or doc_nums.shape[0] != n_postings
            or offsets[-1] != n_postings
            or (offsets.shape[0] > 1 and np.any(np.diff(offsets) < 0))
            or not np.array_equal(np.diff(offsets), df)
        ):
            raise IndexFormatError(f"{path}: files disagree with the manifest; rebuild the index.")
        if not shared and storage.vocab_hash(vocab) != manifest.get("vocab_hash"):
            raise IndexFormatError(
                f"{path}: vocabulary does not match its hash; rebuild the index."
            )
        if shared and terms.num_rows != len(vocab):
            raise IndexFormatError(f"{path}: files disagree with the manifest; rebuild the index.")
        if verify and n_postings and _max_doc(doc_nums, impacts) >= n_docs:
            raise IndexFormatError(
                f"{path}: postings refer to unknown documents; rebuild the index."
            )
        index = cls(
            vocab=vocab,
            doc_ids=doc_ids,
            offsets=offsets,
            docs=doc_nums,
            impacts=impacts,
            blocks=Blocks(
                max_impact=storage.column(terms, "max_impact", maxima, "terms.arrow"),
                offsets=np.append(block_start, np.array([len(blocks_t)], block_start.dtype)),
                max=storage.column(blocks_t, "max", maxima, "blocks.arrow"),
                last=storage.column(blocks_t, "last", pa.uint32(), "blocks.arrow"),
                size=int(manifest.get("block_size", BLOCK_SIZE)),
            ),
            doc_terms=storage.column(docs_t, "n_terms", pa.uint32(), "docs.arrow"),
            scale=float(q.get("scale", 1.0)),
            metadata=manifest.get("metadata", {}),
            vocab_hash=manifest.get("vocab_hash"),
        )
        index.manifest = manifest  # as read, for what lives beside the index (the log's state)
        if STORE_FILE in manifest.get("files", {}):
            index.store = DocumentStore(storage.check_file(path, STORE_FILE, manifest, verify))
        return index


def check_vocab(vocab: Sequence[str], expected_hash: str, size: int) -> None:
    """Refuse a query vocabulary whose hash is not ``expected_hash`` (an index's, of ``size``
    terms)."""
    if storage.vocab_hash(list(vocab)) != expected_hash:
        raise VocabularyMismatchError(
            f"The query encoder's vocabulary ({len(vocab)} terms) differs from the index "
            f"vocabulary ({size} terms); encode queries with the encoder the index was built "
            "with."
        )


class IndexBuilder(PostingsBuilder):
    """Add document batches one at a time (``add`` / ``extend``), then ``finish()`` into an
    :class:`Index`. Each batch is transposed to term-major postings as it arrives, so only
    the compact postings are kept, never the document-major input."""

    def finish(self, metadata: dict | None = None) -> Index:
        """The in-memory index of every batch added."""
        return Index(**self.postings(metadata))


def _max_doc(docs: np.ndarray, impacts: np.ndarray, chunk: int = 1 << 24) -> int:
    """The largest doc number in the postings, decoded a chunk at a time."""
    if not is_packed(impacts):
        return int(docs.max())
    return max(int(unpack_docs(docs[i : i + chunk]).max()) for i in range(0, len(docs), chunk))
