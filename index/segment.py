"""Segments: the immutable parts of a collection.

A segment is an index directory in the format of :mod:`lsr.index.storage` (postings, block
maxima, document ids, stored documents) under ``segments/NAME/`` of its collection, plus the
deletion files of the commit points that deleted some of its documents
(:mod:`lsr.index.deletes`). It is written once, by a flush of the write buffer or by a merge
of other segments, and never changed: a :class:`Segment` is loaded once and shared by every
snapshot and commit point that names it, and so are the filter masks computed on it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from lsr.index.commit import SEGMENTS_DIR
from lsr.index.filters import Filter
from lsr.index.inverted import Index
from lsr.index.representations import Representation, load_extras, write_extras
from lsr.index.store import ID_FIELD

FILTER_CACHE_SIZE = 32  # filter masks kept per segment (one bool per document each)


def segment_name(number: int) -> str:
    return f"s{number:08d}"


class Segment:
    """One immutable segment: its name, its index (with its stored documents), its extra
    representations (:mod:`lsr.index.representations`: name -> sparse ``Index`` or
    ``DenseVectors``, same document numbers) and the filter masks computed on it (a small LRU
    cache, shared by the threads that search it)."""

    def __init__(self, name: str, path: Path, index: Index, extras: dict | None = None) -> None:
        self.name = name
        self.path = Path(path)
        self.index = index
        self.extras = extras or {}
        self._masks: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        root: Path,
        name: str,
        vocab: tuple[list[str], str],
        verify: bool = True,
        extras: tuple[Representation, ...] = (),
        extra_vocabs: dict | None = None,
    ) -> Segment:
        """Open segment ``name`` of the collection at ``root`` (sharing its vocabulary), with
        the ``extras`` its commit point lists (``extra_vocabs``: name -> (vocab, hash))."""
        path = Path(root) / SEGMENTS_DIR / name
        index = Index.load(path, verify=verify, vocab=vocab)
        parts = load_extras(path, extras, index.n_docs, extra_vocabs or {}, verify=verify)
        return cls(name, path, index, parts)

    @classmethod
    def write(
        cls,
        root: Path,
        name: str,
        index: Index,
        documents: Sequence[dict] | pa.Table | None,
        vocab: tuple[list[str], str],
        extras: tuple[Representation, ...] = (),
        extra_data: dict | None = None,
        extra_vocabs: dict | None = None,
        extra_scales: dict | None = None,
    ) -> Segment:
        """Save ``index`` (and its stored ``documents``, and ``extra_data``: name -> the
        extra representations' rows in the same order) as segment ``name`` atomically and
        open it, with the arrays the kernels need built now rather than by the first search."""
        path = Path(root) / SEGMENTS_DIR / name
        extra_vocabs = extra_vocabs or {}
        ids = index.doc_ids.to_pylist() if extras else []

        def fill(tmp: Path) -> None:
            words = {n: v[0] for n, v in extra_vocabs.items()}
            write_extras(tmp, extras, extra_data or {}, ids, words, extra_scales or {})

        index.save(path, documents=documents, extra=fill if extras else None)
        segment = cls.load(root, name, vocab, False, extras, extra_vocabs)  # just fsynced
        segment.warm()
        return segment

    @property
    def n_docs(self) -> int:
        return self.index.n_docs

    @property
    def bytes(self) -> int:
        """Bytes of the segment's files on disk (from its manifests), extra representations
        included (what the merge policy weighs and a merge must find room for)."""
        indexes = [self.index, *(p for p in self.extras.values() if isinstance(p, Index))]
        files = [f for ix in indexes for f in (ix.manifest or {}).get("files", {}).values()]
        dense = sum(p.file_bytes for p in self.extras.values() if not isinstance(p, Index))
        return int(sum(f.get("bytes", 0) for f in files) + dense)

    def warm(self) -> None:
        """Build the kernels' arrays (range maxima, dense rows) and the id table of the index
        now, not under the writer's lock at the first search or write that needs them."""
        self.index._postings  # noqa: B018 - a property that builds them
        self.index.has_doc("")

    def filter_mask(self, condition: Filter) -> np.ndarray:
        """The documents ``condition`` accepts (bool per document), computed once."""
        key = condition.key()
        with self._lock:
            cached = self._masks.get(key)
            if cached is not None:
                self._masks.move_to_end(key)
                return cached
        store = self.index.store
        mask = np.zeros(self.n_docs, bool) if store is None else condition.mask(store, self.n_docs)
        with self._lock:
            self._masks[key] = mask
            while len(self._masks) > FILTER_CACHE_SIZE:
                self._masks.popitem(last=False)
        return mask

    def documents(self, numbers: np.ndarray, fields: list[str] | None) -> list[dict]:
        """Stored records of documents ``numbers`` (just ``_id`` without a store)."""
        index = self.index
        if index.store is None:
            ids = index.doc_ids.take(pa.array(np.asarray(numbers, np.int64))).to_pylist()
            return [{ID_FIELD: d} for d in ids]
        return index.store.get(np.asarray(numbers).tolist(), fields)

    def __repr__(self) -> str:
        return f"Segment({self.name!r}, n_docs={self.n_docs})"
