"""The write-ahead log: framed, checksummed records, fsynced before a write is acknowledged.

File layout (little endian)::

    header   b"LSRH" | length u32 | seq u64 | crc32 u32 | JSON {format, version, base_id,
                                                              start_seq}
    record   b"LSRR" | length u32 | seq u64 | crc32 u32 | payload       (repeated)

The CRC32 covers the length, the sequence number and the payload. Records carry consecutive
sequence numbers from the header's ``start_seq`` (the base index holds everything before it).
:func:`scan` reads up to the last complete, valid record: what follows it is a *torn tail*
(an append cut short by a crash or a full disk, never acknowledged) as long as no valid record
follows; a bad record with valid ones after it, a gap in the sequence numbers or a damaged
header is an error that names the byte offset. :class:`LogWriter` appends at the end of the
last good record and cuts the file back to it when an append fails, so a failed append never
leaves bytes that the next record would be glued to.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lsr.errors import InputError
from lsr.index.errors import IndexFormatError
from lsr.index.storage import write_file_atomically

FORMAT = "lsr-wal"
VERSION = 1
FRAME = struct.Struct("<4sIQI")  # magic, payload length, sequence number, crc32
HEADER_MAGIC = b"LSRH"
RECORD_MAGIC = b"LSRR"
MAX_RECORD_BYTES = 1 << 30
_LENGTH = struct.Struct("<I")
_CRC_PREFIX = struct.Struct("<IQ")


def frame(magic: bytes, seq: int, payload: bytes) -> bytes:
    """One framed record: header fields, their checksum, then the payload."""
    crc = zlib.crc32(payload, zlib.crc32(_CRC_PREFIX.pack(len(payload), seq)))
    return FRAME.pack(magic, len(payload), seq, crc) + payload


def _parse(data: bytes, pos: int, magic: bytes) -> tuple[int, bytes, int] | None:
    """``(seq, payload, next offset)`` of a complete, valid record at ``pos``, else None."""
    if pos + FRAME.size > len(data):
        return None
    found, length, seq, crc = FRAME.unpack_from(data, pos)
    end = pos + FRAME.size + length
    if found != magic or length > MAX_RECORD_BYTES or end > len(data):
        return None
    payload = data[pos + FRAME.size : end]
    if zlib.crc32(payload, zlib.crc32(_CRC_PREFIX.pack(length, seq))) != crc:
        return None
    return seq, payload, end


def _next_valid(data: bytes, start: int) -> int | None:
    """Offset of the first valid record at or after ``start``, if any."""
    pos = data.find(RECORD_MAGIC, start)
    while pos != -1:
        if _parse(data, pos, RECORD_MAGIC) is not None:
            return pos
        pos = data.find(RECORD_MAGIC, pos + 1)
    return None


@dataclass(frozen=True)
class LogRecord:
    seq: int
    payload: bytes
    offset: int


@dataclass(frozen=True)
class LogScan:
    """What :func:`scan` found: the header, the valid records and where they end."""

    header: dict
    records: list[LogRecord]
    end: int  # offset just past the last valid record
    size: int  # file size; ``size - end`` bytes of torn tail (or of damage)
    damage: str | None = None  # with ``strict=False``: why the records stop before a valid one

    @property
    def base_id(self) -> str:
        return self.header["base_id"]

    @property
    def last_seq(self) -> int:
        return self.records[-1].seq if self.records else self.header["start_seq"] - 1

    @property
    def torn_bytes(self) -> int:
        return self.size - self.end


REPAIR_HINT = (
    "restore the log from a backup, or run `lsr check DIR --repair` to keep the records before "
    "the damage"
)


class LogDamagedError(IndexFormatError):
    """The log cannot be replayed as it is; ``problem`` says why (without the advice)."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"{problem}; {REPAIR_HINT}.")
        self.problem = problem


def scan(path: Path, strict: bool = True) -> LogScan:
    """Read the log at ``path`` up to its last complete, valid record (see module docstring).

    Damage (a bad record with valid ones after it, a gap in the sequence numbers) raises
    :class:`LogDamagedError`; with ``strict=False`` the records before it are returned and
    ``damage`` says what follows them (for ``lsr check --repair``). A bad header always raises.
    """
    data = Path(path).read_bytes()
    head = _parse(data, 0, HEADER_MAGIC)
    header = None
    if head is not None:
        with contextlib.suppress(ValueError):
            header = json.loads(head[1])
    if (
        not isinstance(header, dict)
        or header.get("format") != FORMAT
        or not isinstance(header.get("start_seq"), int)
        or not isinstance(header.get("base_id"), str)
    ):
        raise LogDamagedError(f"{path}: the write-ahead log header is missing or corrupt")
    if header.get("version") != VERSION:
        raise IndexFormatError(
            f"{path}: write-ahead log version {header.get('version')}, this version of lsr "
            f"reads {VERSION}; open it with the lsr version that wrote it and merge."
        )
    pos, expected, records, damage = head[2], header["start_seq"], [], None
    while pos < len(data):
        rec = _parse(data, pos, RECORD_MAGIC)
        if rec is None:
            later = _next_valid(data, pos + 1)
            if later is not None:
                damage = (
                    f"{path}: the record at byte {pos} (after sequence number {expected - 1}) "
                    f"is corrupt and valid records follow at byte {later}: the log is damaged"
                )
            break
        seq, payload, nxt = rec
        if seq != expected:
            damage = (
                f"{path}: the record at byte {pos} has sequence number {seq}, expected "
                f"{expected}: records are missing or out of order"
            )
            break
        records.append(LogRecord(seq, payload, pos))
        expected, pos = expected + 1, nxt
    if damage is not None and strict:
        raise LogDamagedError(damage)
    return LogScan(header, records, end=pos, size=len(data), damage=damage)


def read_from(
    path: Path, offset: int, next_seq: int, inode: int
) -> tuple[list[LogRecord], int] | None:
    """The complete records from ``offset`` on (a reader's refresh: what the writer appended
    since it last read), numbered from ``next_seq``, and the offset after them. A record
    still being appended ends the list (the next read takes it). None when the file at
    ``path`` is no longer the one read before (``inode``: the writer trimmed it), a record
    there has another number, or valid records follow a bad one: the caller reads the
    commit point and the whole log again (which reports damage)."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_ino != inode:
                return None
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return None
    pos, records = 0, []
    while pos < len(data):
        found = _parse(data, pos, RECORD_MAGIC)
        if found is None:  # being appended, unless valid records follow (damage)
            return None if _next_valid(data, pos + 1) is not None else (records, offset + pos)
        seq, payload, after = found
        if seq != next_seq:
            return None
        records.append(LogRecord(seq, payload, offset + pos))
        next_seq, pos = next_seq + 1, after
    return records, offset + pos


# what inspect found: the log replays as it is, is absent (nothing lost), or is damaged with
# its valid records usable (DAMAGED: what precedes a bad record; TRUNCATED: all of them, but
# fewer than the checkpoint vouches for), or is not usable at all (MISSING, UNREADABLE)
OK, ABSENT, DAMAGED, TRUNCATED, MISSING, UNREADABLE = (
    "ok", "absent", "damaged", "truncated", "missing", "unreadable"
)  # fmt: skip


@dataclass(frozen=True)
class LogState:
    kind: str
    scan: LogScan | None = None  # for OK, DAMAGED, TRUNCATED
    problem: str | None = None  # for every kind but OK and ABSENT
    acknowledged: int = 0  # the last sequence number the checkpoint vouches for


def inspect(path: Path, base_id: str | None, start_seq: int, mark: dict) -> LogState:
    """Judge the log at ``path`` against what it applies to (``base_id``: a collection's id or
    a format 3 base's, which holds the records up to ``start_seq - 1``) and the checkpoint
    ``mark`` (``{seq}``, and ``bytes`` in format 3 manifests): the one place for the rules a
    writer's open enforces and ``lsr check`` reports. A log may begin before ``start_seq``
    (a flush committed its records but had not trimmed them off yet): those records are
    skipped by whoever replays it."""
    path = Path(path)
    acknowledged = int(mark.get("seq", start_seq - 1))
    if not path.is_file():
        if acknowledged < start_seq:
            return LogState(ABSENT, acknowledged=acknowledged)
        problem = (
            f"{path} is missing but writes up to sequence number {acknowledged} were "
            "acknowledged after the base index"
        )
        return LogState(MISSING, problem=problem, acknowledged=acknowledged)
    try:
        found = scan(path, strict=False)
    except LogDamagedError as e:
        return LogState(UNREADABLE, problem=e.problem, acknowledged=acknowledged)
    if base_id is not None and found.base_id != base_id:
        problem = (
            f"{path} belongs to another collection or base index (its id {found.base_id} is "
            f"not {base_id})"
        )
        return LogState(UNREADABLE, problem=problem, acknowledged=acknowledged)
    if found.header["start_seq"] > start_seq:
        problem = (
            f"{path} starts at sequence number {found.header['start_seq']} but the segments "
            f"hold sequence numbers up to {start_seq - 1} only"
        )
        return LogState(UNREADABLE, problem=problem, acknowledged=acknowledged)
    if found.damage is not None:
        return LogState(DAMAGED, found, found.damage, acknowledged)
    if found.end < mark.get("bytes", 0) or found.last_seq < acknowledged:
        problem = (
            f"{path} ends at sequence number {found.last_seq} (byte {found.end}) but writes up "
            f"to sequence number {acknowledged} ({mark.get('bytes')} bytes) were acknowledged: "
            "the log was truncated"
        )
        return LogState(TRUNCATED, found, problem, acknowledged)
    return LogState(OK, found, acknowledged=acknowledged)


def trim(path: Path, base_id: str, start_seq: int, offset: int, end: int) -> int:
    """Rewrite the log at ``path`` atomically as a header for ``start_seq`` followed by its
    records in bytes ``offset:end`` (the first of which must be ``start_seq``): the records
    before are in a committed segment. Returns the new log's size in bytes."""
    path = Path(path)
    with open(path, "rb") as f:
        f.seek(offset)
        rest = f.read(end - offset)
    first = _parse(rest, 0, RECORD_MAGIC) if rest else None
    if rest and (first is None or first[0] != start_seq):
        raise IndexFormatError(f"{path}: no record {start_seq} at byte {offset}; not trimmed.")
    data = header(base_id, start_seq) + rest
    write_file_atomically(path, data)
    return len(data)


def header(base_id: str, start_seq: int) -> bytes:
    """The framed header of a log whose first record will be ``start_seq``."""
    head = {"format": FORMAT, "version": VERSION, "base_id": base_id, "start_seq": start_seq}
    return frame(HEADER_MAGIC, start_seq - 1, json.dumps(head).encode())


def create(path: Path, base_id: str, start_seq: int, records: Sequence[bytes] = ()) -> int:
    """Write a new log (header, then ``records`` numbered from ``start_seq``) at ``path``
    atomically (temp file, fsync, rename, directory fsync); returns its size in bytes."""
    data = header(base_id, start_seq) + b"".join(
        frame(RECORD_MAGIC, start_seq + i, payload) for i, payload in enumerate(records)
    )
    write_file_atomically(Path(path), data)
    return len(data)


class LogWriter:
    """Appends records at ``end``, the end of the last good one (bytes past it, a torn tail,
    are cut off on open); each append is fsynced before it returns, and a failed append
    (ENOSPC, EIO, ...) cuts the file back before raising."""

    def __init__(self, path: Path, end: int) -> None:
        self.path = Path(path)
        self.end = end
        self._fd = os.open(self.path, os.O_RDWR)
        self._dirty = False
        if os.fstat(self._fd).st_size != end:
            try:
                self._cut()  # a torn tail: cut off before anything is appended
            except BaseException:
                self.close()
                raise

    def append(self, seq: int, payload: bytes) -> None:
        if len(payload) > MAX_RECORD_BYTES:  # scan would not take it back: refuse it now
            raise InputError(
                f"A write of {len(payload):,} bytes is larger than a log record may be "
                f"({MAX_RECORD_BYTES:,}); split it into smaller batches."
            )
        data = memoryview(frame(RECORD_MAGIC, seq, payload))
        if self._dirty:
            self._cut()  # an earlier failed append: remove its bytes first (raises if it can't)
        try:
            written = 0
            while written < len(data):
                n = os.pwrite(self._fd, data[written:], self.end + written)
                if n <= 0:
                    raise OSError(errno.ENOSPC, "short write")
                written += n
            os.fsync(self._fd)
        except OSError:
            self._dirty = True
            with contextlib.suppress(OSError):
                self._cut()
            raise
        self.end += len(data)

    def _cut(self) -> None:
        os.ftruncate(self._fd, self.end)
        os.fsync(self._fd)
        self._dirty = False

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# ---- payloads ---------------------------------------------------------------------------


def encode(op: dict) -> bytes:
    """The payload of an operation (the inverse of :func:`decode`): a JSON head (op, ids and,
    for an upsert, nnz, the stored records ``docs`` when there are any and the layout of its
    extra representations), then for an upsert its CSR rows as raw little-endian arrays:
    indptr (int64), term ids (int32), weights (float32); then each extra representation's
    rows the same way (sparse) or as one float32 matrix (dense)."""
    ids = list(op["ids"])
    if op["op"] == "delete":
        head = json.dumps({"op": "delete", "ids": ids}).encode()
        return _LENGTH.pack(len(head)) + head
    indices = np.ascontiguousarray(op["indices"], dtype="<i4")
    head = {"op": "upsert", "ids": ids, "nnz": int(indices.shape[0])}
    if op.get("docs") is not None:  # the stored records, one per id
        head["docs"] = op["docs"]
    arrays = [op["indptr"], indices, np.ascontiguousarray(op["data"], dtype="<f4")]
    extras = []
    for name, rows in (op.get("extras") or {}).items():
        if isinstance(rows, np.ndarray):
            extras.append({"name": name, "dim": int(rows.shape[1])})
            arrays.append(np.ascontiguousarray(rows, dtype="<f4"))
        else:
            extras.append({"name": name, "nnz": int(rows.indices.shape[0])})
            arrays += [np.ascontiguousarray(rows.indptr, dtype="<i8"),
                       np.ascontiguousarray(rows.indices, dtype="<i4"),
                       np.ascontiguousarray(rows.data, dtype="<f4")]  # fmt: skip
    if extras:
        head["extras"] = extras
    head = json.dumps(head, ensure_ascii=False, allow_nan=False).encode()
    arrays[0] = np.ascontiguousarray(arrays[0], dtype="<i8")
    return b"".join((_LENGTH.pack(len(head)), head, *(a.tobytes() for a in arrays)))


def decode(payload: bytes, where: str) -> dict:
    """The operation of a payload: ``op``, ``ids`` and, for upserts, ``indptr``, ``indices``
    and ``data`` arrays (and ``extras``: name -> CSR rows or a float32 matrix). ``where``
    names the record in errors."""
    try:
        (n,) = _LENGTH.unpack_from(payload, 0)
        rec = json.loads(payload[_LENGTH.size : _LENGTH.size + n])
        rest = memoryview(payload)[_LENGTH.size + n :]
        if rec.get("op") == "upsert":
            rows, nnz = len(rec["ids"]), int(rec["nnz"])
            rec["indptr"], rec["indices"], rec["data"], pos = _csr_arrays(rest, 0, rows, nnz)
            extras = {}
            for entry in rec.pop("extras", None) or []:
                if "dim" in entry:
                    dim = int(entry["dim"])
                    _need(rest, pos + 4 * rows * dim)
                    extras[entry["name"]] = np.frombuffer(rest, "<f4", rows * dim, pos).reshape(
                        rows, dim
                    )
                    pos += 4 * rows * dim
                else:
                    indptr, indices, data, pos = _csr_arrays(rest, pos, rows, int(entry["nnz"]))
                    extras[entry["name"]] = _Rows(indptr, indices, data)
            if pos != len(rest):
                raise ValueError("array lengths disagree with the record head")
            if extras:
                rec["extras"] = extras
            docs = rec.get("docs")
            if docs is not None and (not isinstance(docs, list) or len(docs) != rows):
                raise ValueError("the stored records disagree with the ids")
        elif rec.get("op") != "delete":
            raise ValueError(f"unknown operation {rec.get('op')!r}")
    except (ValueError, KeyError, TypeError, struct.error) as e:
        raise IndexFormatError(f"{where} cannot be decoded ({e}); restore the log.") from e
    return rec


class _Rows(NamedTuple):
    """CSR rows of an extra sparse representation, as a logged upsert holds them."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray


def _need(rest: memoryview, end: int) -> None:
    if end > len(rest):
        raise ValueError("array lengths disagree with the record head")


def _csr_arrays(rest: memoryview, pos: int, rows: int, nnz: int) -> tuple:
    """indptr, indices and data of ``rows`` CSR rows with ``nnz`` entries from ``pos``."""
    _need(rest, pos + 8 * (rows + 1) + 8 * nnz)
    indptr = np.frombuffer(rest, "<i8", rows + 1, pos)
    indices = np.frombuffer(rest, "<i4", nnz, pos + 8 * (rows + 1))
    data = np.frombuffer(rest, "<f4", nnz, pos + 8 * (rows + 1) + 4 * nnz)
    return indptr, indices, data, pos + 8 * (rows + 1) + 8 * nnz


def read_legacy_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines log written by lsr 0.1 (``wal.jsonl``), converted to the
    operations :func:`decode` returns; a torn last line is ignored, a bad line before it is
    an error."""
    lines = Path(path).read_bytes().split(b"\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i >= len(lines) - 2:
                break
            raise IndexFormatError(f"{path}: record {i + 1} is corrupt ({e}).") from e
        if rec.get("op") == "upsert":
            rec["indptr"] = np.asarray(rec["indptr"], np.int64)
            rec["indices"] = np.asarray(rec["indices"], np.int32)
            rec["data"] = np.asarray(rec["data"], np.float32)
        out.append(rec)
    return out
