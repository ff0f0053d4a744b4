"""Commit points: the files that name a collection's live segments, in the manner of Lucene's
``segments_N``.

A collection directory (format 4)::

    commit-000000000007.json  a commit point (generation 7): the live segments, each with its
                              deletion file, the last sequence number they reflect
                              (``applied_seq``), the log's checkpoint, the vocabulary, the
                              collection's quantization step, store setting and metadata,
                              sealed with a sha256 of its own fields. The highest generation
                              is the current one.
    vocab.json                the vocabulary (term strings by term id), shared by the segments
    segments/s00000003/       a segment: an index directory (``lsr.index.storage``) and its
                              deletion files (``deletes-000000000007.bits``, ``lsr.index.deletes``)
    wal.log                   the write-ahead log of the writes after ``applied_seq``
    encoder/                  the encoder the documents were encoded with

A commit point is written to a temporary file, fsynced, renamed to its final name and the
directory fsynced, so a reader finds the previous generation or the new one, never half of
one. No file is changed once a commit point names it: a flush or a merge writes new segments,
deletions a new deletion file, and a new commit point names them.

Readers hold a shared ``flock`` on the commit point they opened (a :class:`Lease`). The writer
removes an older commit point (and then the files that only it named) once it can take that
lock exclusively, that is once no reader holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from pathlib import Path

from lsr import __version__
from lsr.index.errors import IndexFormatError
from lsr.index.storage import fsync_dir, json_checksum, parse_sealed, write_file_atomically

FORMAT_NAME = "lsr-collection"
FORMAT_VERSION = 4  # formats 1-3 are single index directories (lsr.index.storage)
CHECKSUM = "commit_sha256"
VOCAB_FILE = "vocab.json"
SEGMENTS_DIR = "segments"
_NAME = re.compile(r"^commit-(\d{12})\.json$")
_REQUIRED = {
    "generation": int,
    "collection_id": str,
    "applied_seq": int,
    "next_segment": int,
    "segments": list,
    "vocab": dict,
    "quantization": dict,
}


def commit_name(generation: int) -> str:
    return f"commit-{generation:012d}.json"


def generations(root: Path) -> list[int]:
    """The generations of the commit points in ``root``, oldest first."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for m in map(_NAME.match, names) if m)


def is_collection(root: Path) -> bool:
    """Whether ``root`` holds a collection of format 4 (a commit point)."""
    return bool(generations(root))


def new_commit(
    generation: int,
    collection_id: str,
    vocab: dict,
    quantization: dict,
    store: dict,
    metadata: dict,
) -> dict:
    """The commit point of an empty collection (no segment, nothing applied)."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created_by": f"lsr-engine {__version__}",
        "generation": generation,
        "collection_id": collection_id,
        "vocab": vocab,
        "quantization": quantization,
        "store": store,
        "metadata": metadata,
        "applied_seq": 0,
        "next_segment": 0,
        "segments": [],
        "wal": {"seq": 0},
    }


def write_commit(root: Path, commit: dict) -> int:
    """Write ``commit`` as generation ``commit["generation"]`` (sealed, atomically); returns
    its size in bytes. The generation must be new."""
    root = Path(root)
    path = root / commit_name(commit["generation"])
    if path.exists():
        raise IndexFormatError(f"{path} exists already: two writers? Commit points are new files.")
    body = {**commit, "created_by": f"lsr-engine {__version__}"}
    data = json.dumps(
        {**body, CHECKSUM: json_checksum(body, CHECKSUM)}, indent=1, ensure_ascii=False
    ).encode("utf-8")
    write_file_atomically(path, data)
    return len(data)


def parse_commit(data: bytes, where: Path) -> dict:
    """The commit point in ``data`` (the bytes of file ``where``), after checking it."""
    commit = parse_sealed(
        data, where, FORMAT_NAME, FORMAT_VERSION, CHECKSUM, "commit point", _ADVICE
    )
    for key, kind in _REQUIRED.items():
        if not isinstance(commit.get(key), kind):
            raise IndexFormatError(f"{where} has no valid {key!r}; {_ADVICE}")
    match = _NAME.match(Path(where).name)
    if match and int(match.group(1)) != commit["generation"]:
        raise IndexFormatError(f"{where} names generation {commit['generation']}; {_ADVICE}")
    return commit


_ADVICE = "restore the collection from a backup or rebuild it"


def read_commit(root: Path, generation: int) -> dict:
    """Read and check commit point ``generation`` of ``root`` (without a lease)."""
    path = Path(root) / commit_name(generation)
    return parse_commit(path.read_bytes(), path)


class Lease:
    """A shared lock on one commit point, held by a reader for as long as it uses the files
    that commit point names; the writer removes none of them while it is held."""

    def __init__(self, fd: int, generation: int) -> None:
        self._fd = fd
        self.generation = generation

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.release()


def open_latest(root: Path, lease: bool = True, attempts: int = 20) -> tuple[dict, Lease | None]:
    """The current commit point of ``root`` and, with ``lease``, a :class:`Lease` on it. A
    commit point removed by the writer between listing and locking is skipped (the newest one
    is looked for again)."""
    root = Path(root)
    for _ in range(attempts):
        found = generations(root)
        if not found:
            raise IndexFormatError(f"{root} is not a collection: it has no commit point.")
        generation = found[-1]
        path, fd = _open(root, generation)
        if fd is None:
            continue
        try:
            if lease and not _lock_shared(fd, path):  # removed while we waited for the lock
                os.close(fd)
                continue
            commit = parse_commit(_read_fd(fd), path)
        except BaseException:
            os.close(fd)
            raise
        if not lease:
            os.close(fd)
            return commit, None
        return commit, Lease(fd, generation)
    raise IndexFormatError(f"{root}: the commit points kept changing while being opened.")


def _open(root: Path, generation: int) -> tuple[Path, int | None]:
    """The path of commit point ``generation`` and a read-only descriptor of it (None when
    it was removed meanwhile)."""
    path = root / commit_name(generation)
    try:
        return path, os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return path, None


def _lock_shared(fd: int, path: Path) -> bool:
    """Take a shared lock on the open file ``fd``; False when ``path`` no longer names it."""
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _read_fd(fd: int) -> bytes:
    chunks, offset = [], 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def remove_unheld(root: Path, keep: int) -> list[int]:
    """Remove the commit points older than generation ``keep`` that no reader holds; returns
    the generations still held (their files must stay)."""
    root = Path(root)
    held, removed = [], False
    for generation in generations(root):
        if generation >= keep:
            continue
        path, fd = _open(root, generation)
        if fd is None:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held.append(generation)
            os.close(fd)
            continue
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # while locked: a reader that opened it sees it is gone
                removed = True
        finally:
            os.close(fd)
    if removed:
        fsync_dir(root)
    return held
