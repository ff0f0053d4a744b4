"""Deletion files: which documents of a segment are deleted, as of one commit point.

A segment's postings are never rewritten to delete a document; its number is set in a
bitmap instead, and each commit point that changes a segment's deletions names a new file
(``deletes-GENERATION.bits``) inside the segment's directory. Layout (little endian)::

    b"LSRD" | version u16 | pad u16 | n_docs u64 | count u64 | crc32 u32 | bits

``bits`` is one bit per document (``numpy.packbits``, little bit order), 1 = deleted; the
CRC32 covers them. The commit point lists the file with its size and sha256 as well, so a
torn or altered file is refused on open.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from lsr.index.errors import IndexFormatError
from lsr.index.storage import file_sha256

MAGIC = b"LSRD"
VERSION = 1
_HEADER = struct.Struct("<4sHxxQQI")


def deletes_name(generation: int) -> str:
    return f"deletes-{generation:012d}.bits"


def write_deletes(segment_dir: Path, generation: int, deleted: np.ndarray) -> dict:
    """Write the bitmap ``deleted`` (bool per document) as the deletion file of commit point
    ``generation`` (fsynced); returns its entry for the commit point."""
    path = Path(segment_dir) / deletes_name(generation)
    bits = np.packbits(np.asarray(deleted, dtype=bool), bitorder="little").tobytes()
    count = int(np.count_nonzero(deleted))
    data = _HEADER.pack(MAGIC, VERSION, len(deleted), count, zlib.crc32(bits)) + bits
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view, written = memoryview(data), 0
        while written < len(data):
            written += os.write(fd, view[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    return {"file": path.name, "count": count, "bytes": len(data), "sha256": file_sha256(path)}


def read_deletes(segment_dir: Path, entry: dict, n_docs: int, verify: bool = True) -> np.ndarray:
    """The deleted documents (bool per document) of the deletion file ``entry`` names, after
    checking it against the entry (size, sha256 when ``verify``) and its own header."""
    path = Path(segment_dir) / str(entry.get("file", ""))
    if not path.is_file():
        raise IndexFormatError(f"{path} is missing; restore the collection or rebuild it.")
    data = path.read_bytes()
    if len(data) != entry.get("bytes"):
        raise IndexFormatError(
            f"{path} is {len(data)} bytes, the commit point says {entry.get('bytes')}: the "
            "file is truncated or was modified; restore the collection or rebuild it."
        )
    if verify and file_sha256(path) != entry.get("sha256"):
        raise IndexFormatError(f"{path} fails its checksum: the file is corrupt.")
    if len(data) < _HEADER.size:
        raise IndexFormatError(f"{path} is too short to be a deletion file.")
    magic, version, n, count, crc = _HEADER.unpack_from(data)
    bits = data[_HEADER.size :]
    if magic != MAGIC or version != VERSION or zlib.crc32(bits) != crc:
        raise IndexFormatError(f"{path} is not a valid deletion file (bad header or CRC).")
    if n != n_docs or len(bits) != (n_docs + 7) // 8:
        raise IndexFormatError(f"{path} covers {n} documents, the segment has {n_docs}.")
    deleted = np.unpackbits(np.frombuffer(bits, np.uint8), count=n_docs, bitorder="little")
    deleted = deleted.astype(bool)
    if int(deleted.sum()) != count or count != entry.get("count"):
        raise IndexFormatError(f"{path}: its count of deleted documents disagrees with its bits.")
    return deleted
