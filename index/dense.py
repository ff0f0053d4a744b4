"""Dense vectors beside the sparse ones: one faiss index file per segment and representation.

A dense representation's vectors are float32 rows (one per document of the segment, in its
document order), L2-normalized by the encoder, scored by inner product (cosine). Each segment
keeps them in one faiss index file, ``dense-NAME.faiss``, written inside the segment's
directory before it is renamed into place, listed with its size and sha256 in the segment's
``representations.json`` (:mod:`lsr.index.representations`) and memory mapped on load
(``IO_FLAG_MMAP_IFC``: the vectors of a flat or HNSW index are not read into memory).

The index type is a build-time value (:class:`DenseSpec`): ``flat`` (``IndexFlatIP``, exact:
the default), ``hnsw`` (``IndexHNSWFlat``: ``m``, ``ef_construction``; ``ef_search`` at query
time) or ``ivf`` (``IndexIVFFlat`` over a k-means coarse quantizer: ``nlist``; ``nprobe`` at
query time). Deleted documents and filtered-out ones are excluded inside faiss
(``IDSelectorBitmap``), so one search returns k allowed hits (the approximate types may
return fewer when few documents are allowed). Ties rank by document number, as the sparse
side does.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from lsr.errors import InputError
from lsr.index.errors import IndexFormatError
from lsr.index.results import SearchResults

DENSE_TYPES = ("flat", "hnsw", "ivf")
IVF_POINTS_PER_LIST = 39  # faiss's k-means wants this many training points per centroid


def _faiss():
    import faiss  # heavy: imported by the dense side only

    return faiss


@dataclass(frozen=True)
class DenseSpec:
    """How a dense representation is indexed in each segment (a build-time choice), and the
    defaults of its query-time knobs (``ef_search``, ``nprobe``)."""

    type: str = "flat"
    m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    nlist: int = 1024
    nprobe: int = 16

    def __post_init__(self) -> None:
        if self.type not in DENSE_TYPES:
            raise InputError(
                f"unknown dense index type {self.type!r}; use one of {', '.join(DENSE_TYPES)}."
            )
        for name in ("m", "ef_construction", "ef_search", "nlist", "nprobe"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(
                    f"dense index option {name} must be an integer >= 1, got {value!r}."
                )

    @classmethod
    def parse(cls, text: str | dict | DenseSpec | None) -> DenseSpec:
        """A spec from ``flat``, ``hnsw:m=32,ef_construction=200,ef_search=128``,
        ``ivf:nlist=1024,nprobe=16`` or a dict of the same."""
        if text is None:
            return cls()
        if isinstance(text, DenseSpec):
            return text
        if isinstance(text, dict):
            unknown = sorted(set(text) - set(asdict(cls())))
            if unknown:
                raise InputError(f"unknown dense index option {unknown[0]!r}.")
            return cls(**text)
        kind, _, rest = str(text).partition(":")
        options: dict = {"type": kind.strip().lower()}
        for part in filter(None, (p.strip() for p in rest.split(","))):
            name, eq, value = part.partition("=")
            if not eq or name.strip() not in asdict(cls()) or name.strip() == "type":
                raise InputError(
                    f"bad dense index option {part!r} in {text!r}; e.g. 'hnsw:m=32,ef_search=128'."
                )
            try:
                options[name.strip()] = int(value)
            except ValueError:
                raise InputError(f"dense index option {part!r} must be an integer.") from None
        return cls(**options)

    def to_dict(self) -> dict:
        return asdict(self)


def check_vectors(vectors, dim: int | None, what: str = "Dense vectors") -> np.ndarray:
    """``vectors`` as a C-contiguous float32 (n, dim) array, refusing other shapes and
    non-finite values with one sentence."""
    try:
        array = np.ascontiguousarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InputError(f"{what} must be a 2-d array of numbers ({e}).") from None
    if array.ndim != 2:
        raise InputError(f"{what} must be a 2-d array (n, dim), got shape {array.shape}.")
    if dim is not None and array.shape[1] != dim:
        raise InputError(f"{what} have {array.shape[1]} dimensions; this collection's have {dim}.")
    if not np.isfinite(array).all():
        raise InputError(f"{what} contain NaN or infinite values.")
    return array


def build_faiss(vectors: np.ndarray, spec: DenseSpec):
    """A faiss index of ``vectors`` (ids = row numbers) as ``spec`` says. An IVF index of a
    small segment gets fewer lists (``n // 39``, at least 1) so its k-means can train."""
    faiss = _faiss()
    n, dim = vectors.shape
    if spec.type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif spec.type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.ef_construction
    else:
        nlist = max(1, min(spec.nlist, n // IVF_POINTS_PER_LIST))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1  # (a segment of < 39 documents: one list, quietly)
        if n:
            index.train(vectors)
    if n:
        index.add(vectors)
    return index


def write_dense(path: Path, vectors: np.ndarray, spec: DenseSpec) -> None:
    """Write ``vectors`` as a faiss index file at ``path`` (the caller fsyncs and lists it)."""
    _faiss().write_index(build_faiss(vectors, spec), str(path))


class DenseVectors:
    """One segment's vectors of one dense representation, searched through faiss."""

    def __init__(self, path: Path, spec: DenseSpec, n_docs: int, dim: int) -> None:
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
        except RuntimeError as e:
            raise IndexFormatError(f"{path} is not a readable faiss index ({e}).") from None
        if index.ntotal != n_docs or index.d != dim:
            raise IndexFormatError(
                f"{path} holds {index.ntotal} vectors of {index.d} dimensions; the segment has "
                f"{n_docs} documents of {dim}. Rebuild the collection."
            )
        self.path, self.spec, self.index, self.dim = Path(path), spec, index, dim
        self.file_bytes = self.path.stat().st_size  # (the file never changes)
        self._lock = threading.Lock()  # reconstructing an IVF index's direct map

    @property
    def n_docs(self) -> int:
        return int(self.index.ntotal)

    def vectors(self, numbers: np.ndarray) -> np.ndarray:
        """The stored vectors of documents ``numbers``, as float32 rows (what a merge copies)."""
        faiss = _faiss()
        if self.spec.type == "ivf":  # an IVF index finds a vector by id through its direct map
            ivf = faiss.extract_index_ivf(self.index)
            with self._lock:
                if ivf.direct_map.type == faiss.DirectMap.NoMap:
                    ivf.make_direct_map()
        return self.index.reconstruct_batch(np.asarray(numbers, dtype=np.int64))

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(numbers, scores)`` of the top ``k`` allowed documents per query (-1 pads)."""
        return faiss_topk(self.index, self.spec, queries, k, allowed, ef_search, nprobe)


def faiss_topk(
    index,
    spec: DenseSpec,
    queries: np.ndarray,
    k: int,
    allowed: np.ndarray | None = None,
    ef_search: int | None = None,
    nprobe: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(numbers, scores)`` of a faiss index's top ``k`` per query, among the ``allowed``
    documents (bool per document; None: all), ties by document number (-1 pads)."""
    faiss = _faiss()
    n = int(index.ntotal)
    k = min(k, n)
    if k == 0:
        nq = queries.shape[0]
        return np.full((nq, 0), -1, np.int64), np.zeros((nq, 0), np.float32)
    bitmap = selector = None
    if spec.type == "hnsw":
        params = faiss.SearchParametersHNSW(efSearch=max(ef_search or spec.ef_search, k))
    elif spec.type == "ivf":
        params = faiss.SearchParametersIVF(nprobe=nprobe or spec.nprobe)
    else:
        params = faiss.SearchParameters()
    if allowed is not None:
        bitmap = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")
        selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bitmap))
        params.sel = selector
    scores, numbers = index.search(queries, k, params=params)
    del bitmap, selector  # (kept alive through the search: faiss reads them by pointer)
    return tie_order(numbers.astype(np.int64), scores)


def tie_order(numbers: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by score (descending), equal scores by document number, -1 pads last."""
    valid = numbers >= 0
    key_scores = np.where(valid, scores.astype(np.float64), -np.inf)
    key_numbers = np.where(valid, numbers, np.iinfo(np.int64).max)
    order = np.lexsort((key_numbers, -key_scores), axis=1)
    numbers = np.take_along_axis(np.where(valid, numbers, -1), order, axis=1)
    scores = np.take_along_axis(np.where(valid, scores, 0.0).astype(np.float32), order, axis=1)
    return numbers, scores


def brute_force(
    vectors: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k by a matrix product (the write buffer's search, and the
    reference the tests hold faiss's flat search to); ties by row number."""
    nq, n = queries.shape[0], vectors.shape[0]
    k = min(k, n if allowed is None else int(np.count_nonzero(allowed)))
    if k == 0 or n == 0:
        return np.full((nq, 0), -1, np.int64), np.zeros((nq, 0), np.float32)
    scores = queries @ vectors.T
    if allowed is not None:
        scores = np.where(np.asarray(allowed, bool)[None, :], scores, -np.inf)
    top = (
        np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (nq, 1))
    )
    picked = np.take_along_axis(scores, top, axis=1)
    return tie_order(
        np.where(np.isfinite(picked), top, -1), np.where(np.isfinite(picked), picked, 0)
    )


def as_results(numbers: np.ndarray, scores: np.ndarray, doc_ids: pa.Array) -> SearchResults:
    """Dense hits as :class:`SearchResults` over a segment's document ids."""
    counts = (numbers >= 0).sum(axis=1).astype(np.int64)
    return SearchResults(docs=numbers, scores=scores, counts=counts, doc_ids=doc_ids)


class DenseBuffer:
    """The write buffer's vectors of one dense representation: one row per buffer row (in
    the buffer's row order), appended in place (capacity doubles); rows never change, so a
    view holding the first ``n`` rows stays valid while writes go on."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.rows = np.empty((16, dim), dtype=np.float32)
        self.n_rows = 0

    def append(self, vector: np.ndarray) -> None:
        if self.n_rows == self.rows.shape[0]:
            grown = np.empty((2 * self.rows.shape[0], self.dim), dtype=np.float32)
            grown[: self.n_rows] = self.rows[: self.n_rows]
            self.rows = grown  # readers keep the old array, whose rows are unchanged
        self.rows[self.n_rows] = vector
        self.n_rows += 1

    def tail(self, start: int) -> DenseBuffer:
        out = DenseBuffer(self.dim)
        for r in range(start, self.n_rows):
            out.append(self.rows[r])
        return out

    def view(self, n_rows: int) -> np.ndarray:
        """The first ``n_rows`` rows (a view of the current array)."""
        return self.rows[:n_rows]


class DenseIndex:
    """Dense vectors of a whole corpus in one faiss index, in memory (what an evaluation or a
    benchmark searches; a collection keeps one :class:`DenseVectors` per segment)."""

    def __init__(self, vectors: np.ndarray, doc_ids: list[str], spec: DenseSpec | None = None):
        vectors = check_vectors(vectors, None, "Document vectors")
        if vectors.shape[0] != len(doc_ids):
            raise InputError(f"Got {vectors.shape[0]} vectors for {len(doc_ids)} ids.")
        self.spec = spec or DenseSpec()
        self.dim = vectors.shape[1]
        self.index = build_faiss(vectors, self.spec)
        self.doc_ids = pa.array(doc_ids, pa.large_string())

    @property
    def n_docs(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int = 10) -> SearchResults:
        """Top ``k`` by inner product (ties by document order)."""
        queries = check_vectors(queries, self.dim, "Query vectors")
        return as_results(*faiss_topk(self.index, self.spec, queries, k), self.doc_ids)
