"""Several representations of the same documents in one collection, for hybrid search.

A collection has one *main* sparse representation (the postings, vocabulary and quantization
its commit point has always described, with the stored documents) and may have *extra*
ones, each named: more sparse representations (BM25 beside SPLADE: another vocabulary,
another set of postings) and dense ones (:mod:`lsr.index.dense`). The commit point lists them
under ``representations``::

    {"main": "bm25",
     "extras": [{"name": "splade-tiny", "kind": "sparse", "vocab": {...vocab file entry...},
                 "quantization": {"dtype": "uint8", "scale": null}},
                {"name": "wordllama", "kind": "dense", "dim": 256,
                 "index": {"type": "flat", ...}}]}

Every representation covers every document: a write carries one vector per representation,
logged in one record (:mod:`lsr.index.wal`), applied to one write buffer row each, and a
flush or a merge writes them all into the same segment, in the same document order, so a
document number means the same document everywhere and one deletion or filter mask serves
them all. Inside a segment directory an extra sparse representation is an index directory
``rep-NAME/`` (:mod:`lsr.index.storage`, with its own checksummed manifest) and a dense one a
faiss file ``dense-NAME.faiss``; ``representations.json`` lists them with their sizes and
checksums (sealed), and is written inside the segment's temporary directory, so a segment
appears with all its representations or not at all.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lsr.errors import InputError
from lsr.index.dense import DenseSpec, DenseVectors, check_vectors, write_dense
from lsr.index.errors import IndexFormatError
from lsr.index.inverted import Index, IndexBuilder
from lsr.index.storage import file_sha256, fsync_file, json_checksum
from lsr.index.validation import as_sparse_batch

SPARSE, DENSE = "sparse", "dense"
EXTRAS_FILE = "representations.json"
_CHECKSUM = "sha256"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str) -> str:
    """A representation name: letters, digits, ``.``, ``_`` and ``-``, at most 64."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(
            f"bad representation name {name!r}: use letters, digits, '.', '_' or '-' "
            "(at most 64, starting with a letter or digit)."
        )
    return name


def vocab_file(name: str) -> str:
    """The root file holding an extra sparse representation's vocabulary."""
    return f"vocab.{name}.json"


@dataclass(frozen=True)
class Representation:
    """One extra representation as the commit point describes it."""

    name: str
    kind: str
    vocab: dict | None = None  # sparse: the vocabulary file's commit entry
    quantization: dict | None = None  # sparse
    dim: int | None = None  # dense
    index: DenseSpec = field(default_factory=DenseSpec)  # dense

    def to_dict(self) -> dict:
        if self.kind == SPARSE:
            return {"name": self.name, "kind": SPARSE, "vocab": self.vocab,
                    "quantization": self.quantization}  # fmt: skip
        return {"name": self.name, "kind": DENSE, "dim": self.dim, "index": self.index.to_dict()}

    @classmethod
    def from_dict(cls, entry: dict) -> Representation:
        try:
            if entry["kind"] == SPARSE:
                return cls(entry["name"], SPARSE, vocab=dict(entry["vocab"]),
                           quantization=dict(entry["quantization"]))  # fmt: skip
            if entry["kind"] == DENSE:
                return cls(entry["name"], DENSE, dim=int(entry["dim"]),
                           index=DenseSpec.parse(entry["index"]))  # fmt: skip
        except (KeyError, TypeError, ValueError, InputError) as e:
            raise IndexFormatError(f"a representation entry is malformed ({e}).") from None
        raise IndexFormatError(f"unknown representation kind {entry.get('kind')!r}.")


@dataclass
class NewExtra:
    """An extra representation of a collection being created, with its documents' rows."""

    name: str
    rows: sp.csr_array | np.ndarray  # in the main index's document order
    vocab: list[str] | None = None  # sparse
    quantization: str = "uint8"  # sparse
    index: DenseSpec = field(default_factory=DenseSpec)  # dense

    @property
    def kind(self) -> str:
        return SPARSE if self.vocab is not None else DENSE


def main_name(commit: dict) -> str | None:
    """The name of a collection's main (sparse) representation, when it was given one."""
    return (commit.get("representations") or {}).get("main")


def extras_of(commit: dict) -> tuple[Representation, ...]:
    """The extra representations a commit point lists (none for a plain collection)."""
    entries = (commit.get("representations") or {}).get("extras") or []
    return tuple(Representation.from_dict(e) for e in entries)


def check_extra_vectors(
    extras: tuple[Representation, ...],
    given: Mapping[str, object] | None,
    n_rows: int,
) -> dict[str, sp.csr_array | np.ndarray]:
    """The vectors of an upsert for each extra representation, checked: every one present
    (a document without one could not be found by it), of the right shape, finite."""
    given = dict(given or {})
    unknown = sorted(set(given) - {r.name for r in extras})
    if unknown:
        known = ", ".join(r.name for r in extras) or "none"
        raise InputError(
            f"unknown representation {unknown[0]!r} (this collection's extras: {known})."
        )
    out: dict[str, sp.csr_array | np.ndarray] = {}
    for rep in extras:
        if rep.name not in given:
            raise InputError(
                f"this collection also indexes {rep.kind} representation {rep.name!r}: every "
                "write needs its vectors too (encode the documents with all its encoders)."
            )
        what = f"{rep.name!r} vectors"
        if rep.kind == DENSE:
            value = check_vectors(given[rep.name], rep.dim, f"The {what}")
        else:
            value = as_sparse_batch(given[rep.name], rep.vocab["size"], f"The {what}")
        if value.shape[0] != n_rows:
            raise InputError(f"Got {value.shape[0]} {what} for {n_rows} documents.")
        out[rep.name] = value
    return out


def write_extras(
    folder: Path,
    extras: tuple[Representation, ...],
    data: Mapping[str, sp.csr_array | np.ndarray],
    doc_ids: list[str],
    vocabs: Mapping[str, list[str]],
    scales: Mapping[str, list[float]] | None = None,
) -> None:
    """Write every extra representation of a segment's documents (``data``, rows in the
    segment's document order) into the segment folder being built, and the sealed list.
    ``scales[name]``: the quantization steps of the segments merged (the largest is kept, so
    merged impacts are not quantized twice)."""
    folder = Path(folder)
    entries = {}
    for rep in extras:
        rows = data[rep.name]
        if rows.shape[0] != len(doc_ids):
            raise InputError(f"{rep.name!r} has {rows.shape[0]} rows for {len(doc_ids)} documents.")
        if rep.kind == SPARSE:
            scale = max([rep.quantization.get("scale") or 0.0, *(scales or {}).get(rep.name, [])])
            builder = IndexBuilder(
                vocabs[rep.name], quantization=rep.quantization["dtype"], scale=scale or None
            )
            builder.add(rows, doc_ids)
            name = f"rep-{rep.name}"
            builder.finish().save(folder / name)
            manifest = folder / name / "manifest.json"
            entries[rep.name] = {
                "kind": SPARSE,
                "path": name,
                "manifest_sha256": file_sha256(manifest),
            }
        else:
            name = f"dense-{rep.name}.faiss"
            write_dense(folder / name, check_vectors(rows, rep.dim), rep.index)
            fsync_file(folder / name)
            entries[rep.name] = {
                "kind": DENSE,
                "path": name,
                "bytes": (folder / name).stat().st_size,
                "sha256": file_sha256(folder / name),
            }
    body = {"format": "lsr-representations", "n_docs": len(doc_ids), "entries": entries}
    data_bytes = json.dumps({**body, _CHECKSUM: json_checksum(body, _CHECKSUM)}, indent=1).encode()
    with open(folder / EXTRAS_FILE, "wb") as f:
        f.write(data_bytes)
        f.flush()
        os.fsync(f.fileno())


def load_extras(
    folder: Path,
    extras: tuple[Representation, ...],
    n_docs: int,
    vocabs: Mapping[str, tuple[list[str], str]],
    verify: bool = True,
) -> dict[str, Index | DenseVectors]:
    """Open a segment's extra representations (checked against its list and the commit's)."""
    if not extras:
        return {}
    path = Path(folder) / EXTRAS_FILE
    if not path.is_file():
        raise IndexFormatError(f"{path} is missing: the segment lacks its extra representations.")
    listing = json.loads(path.read_text(encoding="utf-8"))
    if (
        listing.get(_CHECKSUM) != json_checksum(listing, _CHECKSUM)
        or listing.get("n_docs") != n_docs
    ):
        raise IndexFormatError(f"{path} fails its checksum or disagrees with the segment.")
    out: dict[str, Index | DenseVectors] = {}
    for rep in extras:
        entry = listing["entries"].get(rep.name)
        if entry is None or entry.get("kind") != rep.kind:
            raise IndexFormatError(f"{path} lists no {rep.kind} representation {rep.name!r}.")
        target = Path(folder) / entry["path"]
        if rep.kind == SPARSE:
            if verify and file_sha256(target / "manifest.json") != entry["manifest_sha256"]:
                raise IndexFormatError(f"{target} does not hold the index its segment lists.")
            index = Index.load(target, verify=verify, vocab=vocabs[rep.name])
            if index.n_docs != n_docs:
                raise IndexFormatError(f"{target} has {index.n_docs} documents, not {n_docs}.")
            out[rep.name] = index
        else:
            if not target.is_file() or target.stat().st_size != entry["bytes"]:
                raise IndexFormatError(f"{target} is missing or truncated; rebuild the collection.")
            if verify and file_sha256(target) != entry["sha256"]:
                raise IndexFormatError(f"{target} fails its checksum: the file is corrupt.")
            out[rep.name] = DenseVectors(target, rep.index, n_docs, rep.dim)
    return out


def extra_rows(part: Index | DenseVectors, numbers: np.ndarray) -> sp.csr_array | np.ndarray:
    """The vectors of documents ``numbers`` of one representation of a segment (a merge)."""
    if isinstance(part, DenseVectors):
        return part.vectors(numbers)
    return part.rows(numbers)[0]


def stack(parts: list) -> sp.csr_array | np.ndarray:
    """Rows of one representation from several sources, in order."""
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts, axis=0)
    return sp.vstack(parts, format="csr")
