"""Write an index as CIFF, the Common Index File Format (Lin et al., 2020) that PISA, Anserini
and BMP read: one file of length-delimited protocol-buffer messages, a ``Header``, one
``PostingsList`` per term and one ``DocRecord`` per document.

The postings carry our 8-bit impacts as the ``tf`` values, exactly as stored (a float32 index
is quantized to 8 bits with one scale, as ``lsr index`` does), so an engine that scores
impacts by a dot product ranks documents as we do; a weight is ``impact * scale``, and the
scale is written in the header's description. Terms are written in the byte order of their
UTF-8 strings (Lucene's, as Anserini's exports are), terms without postings left out; a
document's length is the sum of its impacts, as in impact indexes exported by Anserini.
"""

from __future__ import annotations

import os
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsr import __version__
from lsr.errors import InputError
from lsr.index.inverted import Index
from lsr.index.storage import fsync_dir
from lsr.kernels.protobuf import ciff_postings
from lsr.kernels.quantize import dequantize_scale, quantize_uint8

CIFF_VERSION = 1


@dataclass(frozen=True)
class CiffSummary:
    """What an export wrote: the file, its documents, postings lists and postings, and the
    scale that turns an impact back into our weight."""

    path: Path
    n_docs: int
    n_lists: int
    n_postings: int
    scale: float
    bytes: int

    def to_json(self) -> dict:
        return {**self.__dict__, "path": str(self.path)}


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def _int_field(number: int, value: int) -> bytes:
    """A varint field (proto3: nothing when zero)."""
    return _varint(number << 3) + _varint(value) if value else b""


def _bytes_field(number: int, value: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(value)) + value


def _delimited(message: bytes) -> bytes:
    return _varint(len(message)) + message


def impacts_of(index: Index) -> tuple[np.ndarray, np.ndarray, float]:
    """The index's postings as (doc numbers uint32, impacts uint8, scale): as stored for a
    uint8 index, quantized with the scale ``lsr index`` would choose for a float32 one."""
    docs = index.doc_numbers()
    values = index.impact_values()
    if values.dtype == np.uint8:
        return docs, values, index.scale
    weights = values.astype(np.float32) * np.float32(index.scale)
    scale = dequantize_scale(float(weights.max()) if weights.size else 0.0)
    return docs, quantize_uint8(weights, scale), scale


def write_ciff(index: Index, path: str | Path, description: str = "") -> CiffSummary:
    """Write ``index`` to ``path`` as CIFF (atomically: a crash leaves no partial file under
    that name). Raises :class:`InputError` if two terms of the vocabulary are the same string
    (a CIFF term names one list)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory: give the CIFF file to write, e.g. index.ciff.")
    vocab = index.vocab
    encoded = [term.encode("utf-8") for term in vocab]
    if len(set(encoded)) != len(encoded):
        raise InputError(
            "The vocabulary has two terms with the same string; CIFF names each postings list "
            "by its term, so this index cannot be exported to it."
        )
    docs, impacts, scale = impacts_of(index)
    offsets = np.asarray(index.offsets, dtype=np.int64)
    data, starts = ciff_postings(offsets, docs, impacts)
    lengths = np.diff(offsets)
    running = np.concatenate([[0], np.cumsum(impacts, dtype=np.int64)])
    cf = running[offsets[1:]] - running[offsets[:-1]]  # each list's sum of impacts
    doc_lengths = np.bincount(docs, weights=impacts, minlength=index.n_docs).astype(np.int64)
    terms = sorted((t for t in range(len(vocab)) if lengths[t]), key=encoded.__getitem__)
    total = int(doc_lengths.sum())
    note = (
        f"lsr {__version__}: learned sparse impacts as tf (uint8); "
        f"weight = tf * {scale!r}. {description}"
    ).strip()
    header = b"".join([
        _int_field(1, CIFF_VERSION),
        _int_field(2, len(terms)),
        _int_field(3, index.n_docs),
        _int_field(4, len(terms)),
        _int_field(5, index.n_docs),
        _int_field(6, total),
        _varint((7 << 3) | 1) + struct.pack("<d", total / max(index.n_docs, 1)),
        _bytes_field(8, note.encode("utf-8")),
    ])  # fmt: skip
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(_delimited(header))
            for t in terms:
                postings = data[starts[t] : starts[t + 1]]
                head = b"".join(
                    [_bytes_field(1, encoded[t]), _int_field(2, int(lengths[t])),
                     _int_field(3, int(cf[t]))]
                )  # fmt: skip
                f.write(_varint(len(head) + postings.size) + head)
                f.write(postings.tobytes())
            ids = index.doc_ids.to_pylist()
            for number, doc_id in enumerate(ids):
                f.write(_delimited(
                    _int_field(1, number) + _bytes_field(2, doc_id.encode("utf-8"))
                    + _int_field(3, int(doc_lengths[number]))
                ))  # fmt: skip
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return CiffSummary(
        path=path,
        n_docs=index.n_docs,
        n_lists=len(terms),
        n_postings=int(docs.size),
        scale=float(scale),
        bytes=path.stat().st_size,
    )
