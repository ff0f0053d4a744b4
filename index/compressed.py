"""A compressed index built in bounded memory and searched memory-mapped: for collections of
many millions of documents (MS MARCO's 8.8M passages, about a billion postings).

:class:`CompressedIndexWriter` takes document batches like :class:`~lsr.index.IndexBuilder`
but never holds the collection's postings: every ``run_postings`` postings it transposes the
buffered batches to a term-major run and appends it to two spill files on disk (doc numbers
and float32 weights). ``finish`` merges the runs a window of terms at a time (at most about
``merge_postings`` postings in memory), quantizes with one scale for the whole index (the
largest weight / 255, known once every run is written) and compresses each window's lists
into blocks (``lsr.kernels.compressed``: bit-packed doc gaps, uint8 impacts). So peak memory
is a run plus a window plus the document ids, whatever the collection's size.

Layout of a compressed index directory (little-endian binary arrays, memory mapped on load)::

    manifest.json      format, counts, scale, block size, vocab hash, each file's size and
                       sha256, a checksum of its own fields
    vocab.json         the term strings (term ids are positions)
    docs.arrow         doc_id (large_string), in doc-number order
    term_postings.bin  int64, n_terms + 1: where each term's postings start
    term_blocks.bin    int64, n_terms + 1: where each term's blocks start
    term_max.bin       uint8, n_terms: each list's largest impact
    block_last.bin     uint32 per block: its last doc number (the next block's gaps start there)
    block_max.bin      uint8 per block: its largest impact
    block_bits.bin     uint8 per block: bits per gap
    block_words.bin    int64, n_blocks + 1: where each block's words start
    words.bin          uint32: the packed gaps, then one zero word
    impacts.bin        uint8 per posting

The directory appears whole or not at all (written into a hidden sibling and renamed, like
:func:`lsr.index.storage.write_directory`); the spill files live in another hidden sibling,
removed when the writer finishes or fails, or (after a kill) by the next writer of the path.
Search is exact and gives the scores and ties of an :class:`~lsr.index.Index` of the same
vectors: a query's terms are added a range of documents at a time (the accumulator's slice
stays in cache), and one query's ranges can run on several threads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from lsr import __version__
from lsr.checks import positive_int
from lsr.errors import InputError
from lsr.index import storage
from lsr.index.algorithms import check_query_terms
from lsr.index.builder import checked_batch, run_of
from lsr.index.errors import IndexFormatError, VocabularyMismatchError
from lsr.index.results import SearchResults
from lsr.index.threads import check_threads, parallel_threads
from lsr.index.validation import as_allowed_mask, as_sparse_batch, check_k
from lsr.kernels import (
    dequantize_scale,
    merge_runs,
    quantize_uint8,
    scratch,
    top_terms,
)
from lsr.kernels.compressed import (
    RANGE_DOCS,
    add_ranges_threads,
    decode_term,
    dense_top,
    encode_blocks,
    reads_few,
    search_compressed,
    search_compressed_many,
)

logger = logging.getLogger(__name__)

FORMAT_NAME = storage.COMPRESSED_FORMAT_NAME
FORMAT_VERSION = 1
BLOCK_SIZE = 128
ARRAYS = {  # file -> dtype, the numeric arrays of the format
    "term_postings.bin": np.int64,
    "term_blocks.bin": np.int64,
    "term_max.bin": np.uint8,
    "block_last.bin": np.uint32,
    "block_max.bin": np.uint8,
    "block_bits.bin": np.uint8,
    "block_words.bin": np.int64,
    "words.bin": np.uint32,
    "impacts.bin": np.uint8,
}
POSTINGS_FILES = (
    "block_last.bin",
    "block_max.bin",
    "block_bits.bin",
    "block_words.bin",
    "words.bin",
    "impacts.bin",
)  # what the postings cost: bytes per posting counts these
ADVICE = "rebuild the index."


class _HashedFile:
    """A file written in pieces whose size and sha256 are computed as it is written."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 (closed by ``close``)
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, array: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(array)).cast("B")
        self.file.write(data)
        self.sha.update(data)
        self.size += len(data)

    def close(self) -> dict:
        """Flush and fsync; the manifest's entry for the file."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return {"bytes": self.size, "sha256": self.sha.hexdigest()}


class CompressedIndexWriter:
    """Build a compressed index at ``path`` from document batches, in bounded memory.

    ``add(vectors, doc_ids)`` as often as needed, then ``finish()``; or use it as a context
    manager, which removes the spill files if the block raises. ``run_postings``: postings
    buffered before a run is spilled; ``merge_postings``: postings merged per window of terms.
    ``scale`` as in :class:`~lsr.index.IndexBuilder` (uint8 step; default largest / 255).
    """

    def __init__(
        self,
        path: str | Path,
        vocab: Sequence[str],
        run_postings: int = 32_000_000,
        merge_postings: int = 64_000_000,
        scale: float | None = None,
        block_size: int = BLOCK_SIZE,
        overwrite: bool = False,
        progress: bool = False,
    ) -> None:
        self.path = Path(path)
        self.vocab = [str(t) for t in vocab]
        if not self.vocab:
            raise InputError("The vocabulary is empty; an index needs at least one term.")
        if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
            raise InputError(f"scale must be a positive number, got {scale!r}.")
        self.run_postings = positive_int(run_postings, "run_postings")
        self.merge_postings = positive_int(merge_postings, "merge_postings")
        self.block_size = positive_int(block_size, "block_size")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for action in storage.recover(self.path):  # a build killed before this one
            logger.warning("%s: %s", self.path, action)
        if self.path.exists() and not overwrite:
            raise FileExistsError(
                f"{self.path} already exists; pass overwrite=True (--overwrite) to replace it."
            )
        if self.path.exists() and not storage.is_index_dir(self.path):
            raise FileExistsError(
                f"{self.path} exists and is not an index; refusing to replace it. Choose "
                "another path."
            )
        self.scale, self.overwrite, self.progress = scale, overwrite, progress
        self._work = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.runs-", dir=self.path.parent))
        self._docs_file = open(self._work / "runs.docs", "wb")  # noqa: SIM115 (closed in finish)
        self._weights_file = open(self._work / "runs.weights", "wb")  # noqa: SIM115
        self._run_offsets: list[np.ndarray] = []  # per run, its term offsets (n_terms + 1)
        self._doc_ids: list[str] = []
        self._seen: set[str] = set()
        self._pending: list[sp.csr_array] = []
        self._pending_nnz = 0
        self._run_docs = 0
        self._max_weight = 0.0
        self._done = False

    @property
    def n_docs(self) -> int:
        return len(self._doc_ids)

    def __enter__(self) -> CompressedIndexWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            self.abort()

    def add(self, vectors: sp.csr_array, doc_ids: Sequence[str]) -> None:
        """Append a batch of document vectors (rows) with their external ids."""
        if self._done:
            raise InputError(
                "This writer has finished or failed; start a new one to build an index."
            )
        csr, ids = checked_batch(vectors, doc_ids, len(self.vocab), self._seen)
        if self.n_docs + len(ids) > np.iinfo(np.uint32).max:
            raise InputError("A compressed index holds at most 2**32 - 1 documents.")
        self._pending.append(csr)
        self._pending_nnz += csr.nnz
        self._doc_ids.extend(ids)
        if self._pending_nnz >= self.run_postings:
            try:
                self._spill()
            except BaseException:  # a run half written: finishing would lose its postings
                self.abort()
                raise

    def extend(
        self, batches: Iterable[tuple[sp.csr_array, Sequence[str]]]
    ) -> CompressedIndexWriter:
        """Add every ``(vectors, doc_ids)`` batch of an iterable; returns ``self``."""
        for vectors, ids in batches:
            self.add(vectors, ids)
        return self

    def _spill(self) -> None:
        """Transpose the buffered batches into one term-major run appended to the spill files."""
        if not self._pending:
            return
        offsets, docs, weights = run_of(self._pending, len(self.vocab), self._run_docs)
        self._run_docs += sum(m.shape[0] for m in self._pending)
        self._pending, self._pending_nnz = [], 0
        if weights.size:
            self._max_weight = max(self._max_weight, float(weights.max()))
        self._docs_file.write(memoryview(docs).cast("B"))
        self._weights_file.write(memoryview(weights).cast("B"))
        self._run_offsets.append(offsets)
        logger.debug("spilled run %d: %d postings", len(self._run_offsets), docs.shape[0])

    def finish(self, metadata: dict | None = None) -> Path:
        """Merge the runs into the compressed index at ``path`` (atomically); returns it."""
        if self._done:
            raise InputError("This writer has already finished or failed; start a new one.")
        try:
            self._spill()
            self._docs_file.close()
            self._weights_file.close()
            storage.write_directory(
                self.path, lambda tmp: self._write(tmp, metadata or {}), self.overwrite
            )
        except BaseException:
            self.abort()
            raise
        self._done = True
        shutil.rmtree(self._work, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        """Stop: close and remove the spill files (no index is written)."""
        self._done = True
        for f in (self._docs_file, self._weights_file):
            f.close()
        shutil.rmtree(self._work, ignore_errors=True)

    def _windows(self) -> list[tuple[int, int]]:
        """Consecutive term ranges holding at most ``merge_postings`` postings each (a longer
        list gets a window of its own)."""
        n_terms = len(self.vocab)
        per_term = np.zeros(n_terms, dtype=np.int64)
        for offsets in self._run_offsets:
            per_term += np.diff(offsets)
        windows, lo, size = [], 0, 0
        for t in range(n_terms):
            if size and size + per_term[t] > self.merge_postings:
                windows.append((lo, t))
                lo, size = t, 0
            size += int(per_term[t])
        windows.append((lo, n_terms))
        return windows

    def _read_window(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The runs' postings of terms ``lo:hi``: per-run offsets from 0, docs, weights."""
        rel = np.stack([o[lo : hi + 1] - o[lo] for o in self._run_offsets])
        total = int(rel[:, -1].sum())
        docs = np.empty(total, dtype=np.uint32)
        weights = np.empty(total, dtype=np.float32)
        ends = np.cumsum([o[-1] for o in self._run_offsets])  # runs' ends in the spill files
        at = 0
        with (
            open(self._work / "runs.docs", "rb") as fd,
            open(self._work / "runs.weights", "rb") as fw,
        ):
            for offsets, end, n in zip(self._run_offsets, ends, rel[:, -1], strict=True):
                start = int(end - offsets[-1] + offsets[lo])
                fd.seek(start * 4)
                fd.readinto(memoryview(docs[at : at + n]).cast("B"))
                fw.seek(start * 4)
                fw.readinto(memoryview(weights[at : at + n]).cast("B"))
                at += int(n)
        return rel, docs, weights

    def _write(self, tmp: Path, metadata: dict) -> None:
        """Merge, quantize and compress the runs into directory ``tmp``."""
        from tqdm.auto import tqdm

        scale = dequantize_scale(self._max_weight)
        if self.scale is not None and self._max_weight <= 255.0 * self.scale * (1 + 1e-6):
            scale = float(self.scale)
        n_terms = len(self.vocab)
        term_postings = np.zeros(n_terms + 1, dtype=np.int64)
        term_blocks = np.zeros(n_terms + 1, dtype=np.int64)
        term_max = np.zeros(n_terms, dtype=np.uint8)
        names = ("block_last.bin", "block_max.bin", "block_bits.bin", "block_words.bin")
        out = {name: _HashedFile(tmp / name) for name in (*names, "words.bin", "impacts.bin")}
        postings = blocks = words = 0
        windows = self._windows()
        for lo, hi in tqdm(windows, desc="merge", unit="window", disable=not self.progress):
            rel, run_docs, run_weights = self._read_window(lo, hi)
            offsets = np.empty(hi - lo + 1, dtype=np.int64)
            docs = np.empty(run_docs.shape[0], dtype=np.uint32)
            weights = np.empty(run_docs.shape[0], dtype=np.float32)
            merge_runs(rel, run_docs, run_weights, offsets, docs, weights)
            del run_docs, run_weights
            impacts = quantize_uint8(weights, np.float32(scale))
            del weights
            t_blocks, last, top, bits, starts, packed = encode_blocks(
                offsets, docs, impacts, self.block_size
            )
            del docs
            term_postings[lo + 1 : hi + 1] = postings + offsets[1:]
            term_blocks[lo + 1 : hi + 1] = blocks + t_blocks[1:]
            nonempty = np.flatnonzero(np.diff(t_blocks))
            if nonempty.size:
                term_max[lo + nonempty] = np.maximum.reduceat(top, t_blocks[nonempty])
            for name, array in zip(names, (last, top, bits, starts[:-1] + words), strict=True):
                out[name].write(array)
            out["words.bin"].write(packed[:-1])  # the trailing zero word is written once, last
            out["impacts.bin"].write(impacts)
            postings += impacts.shape[0]
            blocks += last.shape[0]
            words += packed.shape[0] - 1
        out["block_words.bin"].write(np.array([words], dtype=np.int64))
        out["words.bin"].write(np.zeros(1, dtype=np.uint32))
        files = {name: f.close() for name, f in out.items()}
        for name, array in (
            ("term_postings.bin", term_postings),
            ("term_blocks.bin", term_blocks),
            ("term_max.bin", term_max),
        ):
            f = _HashedFile(tmp / name)
            f.write(array)
            files[name] = f.close()
        storage.write_file_atomically(
            tmp / "vocab.json", json.dumps(self.vocab, ensure_ascii=False).encode("utf-8")
        )
        ids = pa.table({"doc_id": pa.array(self._doc_ids, pa.large_string())})
        with (
            pa.OSFile(str(tmp / "docs.arrow"), "wb") as sink,
            pa.ipc.new_file(sink, ids.schema) as w,
        ):
            w.write_table(ids, max_chunksize=max(ids.num_rows, 1))
        del ids
        storage.fsync_file(tmp / "docs.arrow")
        for name in ("vocab.json", "docs.arrow"):
            files[name] = {
                "bytes": (tmp / name).stat().st_size,
                "sha256": storage.file_sha256(tmp / name),
            }
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "created_by": f"lsr-engine {__version__}",
            "n_docs": self.n_docs,
            "n_postings": postings,
            "n_blocks": blocks,
            "n_words": words + 1,
            "vocab_size": n_terms,
            "vocab_hash": storage.vocab_hash(self.vocab),
            "quantization": {"dtype": "uint8", "scale": scale},
            "block_size": self.block_size,
            "metadata": metadata,
            "files": files,
        }
        storage.write_file_atomically(tmp / storage.MANIFEST, storage.manifest_bytes(manifest))
        size = sum(files[n]["bytes"] for n in POSTINGS_FILES)
        logger.info(
            "built compressed index: %d docs, %d postings, %.2f bytes per posting",
            self.n_docs, postings, size / max(postings, 1),
        )  # fmt: skip


class CompressedIndex:
    """A compressed index opened memory-mapped (see the module docstring); exact search."""

    range_docs = RANGE_DOCS  # documents a query adds at a time (lsr.kernels.compressed)

    def __init__(
        self, path: Path, manifest: dict, arrays: dict, vocab: list[str], doc_ids: pa.Array
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.vocab = vocab
        self.doc_ids = doc_ids
        self.vocab_hash = manifest["vocab_hash"]
        self.scale = float(manifest["quantization"]["scale"])
        self._scale32 = np.float32(self.scale)
        self.block_size = int(manifest["block_size"])
        self.metadata = manifest.get("metadata", {})
        a = arrays
        self.term_postings, self.term_blocks, self.term_max = (
            a["term_postings.bin"], a["term_blocks.bin"], a["term_max.bin"],
        )  # fmt: skip
        self.block_last, self.block_max, self.block_bits, self.block_words = (
            a["block_last.bin"], a["block_max.bin"], a["block_bits.bin"], a["block_words.bin"],
        )  # fmt: skip
        self.words, self.impacts = a["words.bin"], a["impacts.bin"]
        self._scratch = threading.local()

    @property
    def n_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def n_postings(self) -> int:
        return int(self.impacts.shape[0])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def postings_bytes(self) -> int:
        """Bytes on disk of the postings and their block metadata (not the term table, ids)."""
        return sum(self.manifest["files"][n]["bytes"] for n in POSTINGS_FILES)

    @property
    def bytes_per_posting(self) -> float:
        return self.postings_bytes / max(self.n_postings, 1)

    def __repr__(self) -> str:
        return (
            f"CompressedIndex(n_docs={self.n_docs}, vocab_size={self.vocab_size}, "
            f"n_postings={self.n_postings}, bytes_per_posting={self.bytes_per_posting:.2f})"
        )

    def postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        """Term ``term``'s postings, decoded: doc numbers (int64) and uint8 impacts."""
        if not 0 <= int(term) < self.vocab_size:
            raise InputError(f"term must be a term id in [0, {self.vocab_size}), got {term!r}.")
        lo, hi = int(self.term_postings[term]), int(self.term_postings[term + 1])
        docs = np.empty(hi - lo, dtype=np.int64)
        decode_term(
            int(term), self.term_postings, self.term_blocks, self.block_last, self.block_bits,
            self.block_words, self.words, self.block_size, docs,
        )  # fmt: skip
        return docs, np.asarray(self.impacts[lo:hi])

    def check_vocab(self, vocab: Sequence[str]) -> None:
        if storage.vocab_hash(list(vocab)) != self.vocab_hash:
            raise VocabularyMismatchError(
                f"The query encoder's vocabulary ({len(vocab)} terms) differs from the index "
                f"vocabulary ({self.vocab_size} terms); encode queries with the encoder the "
                "index was built with."
            )

    def search(
        self,
        queries: sp.csr_array,
        k: int = 10,
        vocab: Sequence[str] | None = None,
        threads: int | None = None,
        allowed: np.ndarray | None = None,
        query_terms: int | None = None,
    ) -> SearchResults:
        """The exact top-``k`` documents of each query row by dot product (the scores and tie
        order of an :class:`~lsr.index.Index` of the same vectors). ``threads`` (default: all)
        share a batch's queries, or one query's document ranges; ``allowed`` restricts the
        hits as in ``Index``; ``query_terms`` (approximate) keeps only each query's heaviest
        terms."""
        k, threads = check_k(k), check_threads(threads)
        mask = as_allowed_mask(allowed, self.n_docs)
        if vocab is not None:
            self.check_vocab(vocab)
        q = as_sparse_batch(queries, self.vocab_size, "Query vectors")
        if query_terms is not None:
            indptr, terms, weights = top_terms(
                q.indptr, q.indices, q.data, check_query_terms(query_terms)
            )
            q = sp.csr_array((weights, terms, indptr), shape=q.shape)
        k_eff = min(k, max(self.n_docs, 1))
        lists = (
            self.term_postings, self.term_blocks, self.block_last, self.block_bits,
            self.block_words, self.words, self.impacts, self.block_size,
        )  # fmt: skip
        if q.shape[0] == 1:
            docs = np.full((1, k_eff), -1, dtype=np.int64)
            scores = np.zeros((1, k_eff), dtype=np.float32)
            s = self._scratch
            if getattr(s, "acc", None) is None:
                s.acc, s.candidates = scratch(self.n_docs)
            with parallel_threads(threads) as n_threads:
                if n_threads == 1 or reads_few(self.term_postings, q.indices, self.n_docs):
                    count = search_compressed(
                        *lists, q.indices, q.data, self._scale32, k_eff, mask, s.acc,
                        s.candidates, docs[0], scores[0], self.range_docs,
                    )  # fmt: skip
                else:  # one query's document ranges on several threads
                    add_ranges_threads(*lists, q.indices, q.data, s.acc, self.range_docs)
                    count = dense_top(
                        s.acc, mask, k_eff, self._scale32, s.candidates, docs[0], scores[0]
                    )
            counts = np.array([count], dtype=np.int64)
        else:
            with parallel_threads(threads) as n_threads:
                docs, scores, counts = search_compressed_many(
                    *lists, q.indptr, q.indices, q.data, self._scale32, k_eff, mask,
                    self.n_docs, n_threads, self.range_docs,
                )  # fmt: skip
        return SearchResults(docs=docs, scores=scores, counts=counts, doc_ids=self.doc_ids)

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> CompressedIndex:
        """Open the compressed index at ``path``, its arrays memory mapped. Sizes are always
        checked against the manifest, every file's sha256 too with ``verify``."""
        path = Path(path)
        where = path / storage.MANIFEST
        if not where.is_file():
            raise IndexFormatError(f"{path} is not an index: {storage.MANIFEST} is missing.")
        manifest = storage.parse_sealed(
            where.read_bytes(), where, FORMAT_NAME, FORMAT_VERSION, storage.MANIFEST_CHECKSUM,
            "compressed index", ADVICE,
        )  # fmt: skip
        arrays = {}
        for name, dtype in ARRAYS.items():
            file = storage.check_file(path, name, manifest, verify)
            size = file.stat().st_size
            if size % np.dtype(dtype).itemsize:
                raise IndexFormatError(f"{file} has a partial {np.dtype(dtype)} entry; {ADVICE}")
            arrays[name] = (
                np.memmap(file, dtype=dtype, mode="r") if size else np.zeros(0, dtype=dtype)
            )
        vocab = json.loads(
            storage.check_file(path, "vocab.json", manifest, verify).read_text("utf-8")
        )
        ids_file = storage.check_file(path, "docs.arrow", manifest, verify)
        try:
            table = pa.ipc.open_file(pa.memory_map(str(ids_file), "r")).read_all()
        except (pa.ArrowInvalid, OSError) as e:
            raise IndexFormatError(
                f"{ids_file} is not a readable Arrow file ({e}); {ADVICE}"
            ) from e
        doc_ids = table.column("doc_id").combine_chunks()
        _check_shapes(path, manifest, arrays, vocab, len(doc_ids))
        return cls(path, manifest, arrays, vocab, doc_ids)


def _check_shapes(path: Path, manifest: dict, a: dict, vocab: list, n_docs: int) -> None:
    """Refuse files whose lengths disagree with the manifest or with each other."""
    n_terms, n_blocks = manifest.get("vocab_size"), manifest.get("n_blocks")
    expected = {
        "term_postings.bin": n_terms + 1,
        "term_blocks.bin": n_terms + 1,
        "term_max.bin": n_terms,
        "block_last.bin": n_blocks,
        "block_max.bin": n_blocks,
        "block_bits.bin": n_blocks,
        "block_words.bin": n_blocks + 1,
        "words.bin": manifest.get("n_words"),
        "impacts.bin": manifest.get("n_postings"),
    }
    wrong = [name for name, n in expected.items() if a[name].shape[0] != n]
    if (
        wrong
        or len(vocab) != n_terms
        or n_docs != manifest.get("n_docs")
        or a["term_postings.bin"][-1] != manifest.get("n_postings")
        or a["term_blocks.bin"][-1] != n_blocks
        or a["block_words.bin"][-1] != manifest.get("n_words") - 1
    ):
        raise IndexFormatError(f"{path}: files disagree with the manifest ({wrong}); {ADVICE}")
    if storage.vocab_hash(vocab) != manifest.get("vocab_hash"):
        raise IndexFormatError(f"{path}: vocabulary does not match its hash; {ADVICE}")
