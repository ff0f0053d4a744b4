"""``lsr check``: verify a collection on disk, and repair a damaged write-ahead log.

Checking reads everything a writer's open reads (manifest checksum, every Arrow file's
sha256, the log's header, records and checkpoint) and reports each problem instead of
stopping at the first. Repairing takes the writer lock and makes a damaged log openable
again, in the manner of Lucene's CheckIndex ``-exorcise``: it keeps every record before the
damage, drops the rest, and says exactly which acknowledged sequence numbers that loses. The
damaged log is never deleted: it is kept beside the new one (``wal.log.damaged-TIME``) for
whoever wants to recover more by hand. A damaged base index (manifest or Arrow files) cannot
be repaired from what is on disk: it is reported, and must be restored or rebuilt.
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lsr.index import wal
from lsr.index.errors import IndexFormatError
from lsr.index.inverted import Index
from lsr.index.live import WAL_NAME
from lsr.index.lock import WriterLock
from lsr.index.storage import update_manifest


@dataclass
class CheckReport:
    """What :func:`check_collection` found and, with ``repair``, did."""

    path: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_docs: int | None = None
    merged_seq: int | None = None
    log_records: int = 0
    last_seq: int | None = None
    lost: list[int] | None = None  # [first, last] acknowledged sequence numbers given up
    lost_more: bool = False  # and whatever later records the damaged log held
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems or bool(self.repaired)

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def lines(self) -> list[str]:
        docs = f"{self.n_docs:,} documents" if self.n_docs is not None else "base unreadable"
        head = f"{self.path}: {docs}, {self.log_records} log records"
        if self.last_seq is not None:
            head += f" (sequence numbers up to {self.last_seq})"
        out = [head]
        out += [f"problem: {p}" for p in self.problems]
        out += [f"note: {n}" for n in self.notes]
        out += [f"repaired: {r}" for r in self.repaired]
        if self.lost:
            more = " and any later ones in the kept log" if self.lost_more else ""
            out.append(
                f"lost: acknowledged writes with sequence numbers {self.lost[0]} to "
                f"{self.lost[1]}{more}"
            )
        out.append("ok" if self.ok else "damaged: run with --repair, or restore from a backup")
        return out


@dataclass
class _LogVerdict:
    keep: list[bytes]  # payloads of the records to keep, from the base's next sequence number
    lost_to: int  # the last sequence number known acknowledged that would be given up
    open_ended: bool = True  # the damaged log may hold later ones (unknown how many)


def check_collection(path: str | Path, repair: bool = False) -> CheckReport:
    """Verify the collection at ``path``; with ``repair``, rewrite a damaged log as the
    records before the damage (under the writer lock; the damaged log is kept)."""
    path = Path(path)
    if not path.is_dir():
        raise IndexFormatError(f"No index at {path}: the directory does not exist.")
    report = CheckReport(str(path))
    lock = WriterLock(path).acquire() if repair else None
    try:
        try:
            base = Index.load(path, verify=True)
        except IndexFormatError as e:
            report.problems.append(f"{e} (a base index cannot be repaired: restore or rebuild it)")
            return report
        manifest = base.manifest
        report.n_docs, report.merged_seq = base.n_docs, int(base.metadata.get("applied_seq", 0))
        verdict = _check_log(path, manifest, report)
        if repair and verdict is not None:
            _repair_log(path, manifest, report, verdict)
        return report
    finally:
        if lock is not None:
            lock.release()


def _check_log(path: Path, manifest: dict, report: CheckReport) -> _LogVerdict | None:
    """Record the log's problems in ``report``; the repair to make, or None if none is due."""
    log, applied = path / WAL_NAME, report.merged_seq
    state = wal.inspect(log, manifest.get("base_id"), applied + 1, manifest.get("wal") or {})
    report.last_seq = applied
    if state.kind == wal.ABSENT:
        report.notes.append(f"{log.name} does not exist yet (no write since the base)")
        return None
    if state.kind in (wal.MISSING, wal.UNREADABLE):
        report.problems.append(state.problem)
        gone = max(state.acknowledged, applied + 1)
        return _LogVerdict([], gone, open_ended=state.kind == wal.UNREADABLE)
    payloads = []
    for record in state.scan.records:
        try:
            wal.decode(record.payload, f"{log} record {record.seq}")
        except IndexFormatError as e:
            report.problems.append(str(e))
            break
        payloads.append(record.payload)
    report.log_records, report.last_seq = len(payloads), applied + len(payloads)
    if state.problem is not None:
        report.problems.append(state.problem)
    if state.kind == wal.TRUNCATED and len(payloads) == len(state.scan.records):
        return _LogVerdict(payloads, state.acknowledged, open_ended=False)
    if report.problems:
        last_valid = applied + len(state.scan.records)
        return _LogVerdict(payloads, max(state.acknowledged, last_valid, report.last_seq + 1))
    if state.scan.torn_bytes:
        report.notes.append(
            f"{state.scan.torn_bytes} bytes of an append interrupted before it was acknowledged "
            "(cut off when a writer opens the collection)"
        )
    return None


def _repair_log(path: Path, manifest: dict, report: CheckReport, verdict: _LogVerdict) -> None:
    log, start = path / WAL_NAME, report.merged_seq + 1
    if log.is_file():
        kept = log.with_name(f"{WAL_NAME}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        shutil.copy2(log, kept)
        report.repaired.append(f"kept the damaged log as {kept.name}")
    base_id = manifest.get("base_id") or uuid.uuid4().hex  # none in a format 1-2 manifest
    size = wal.create(log, base_id, start, verdict.keep)
    last = report.merged_seq + len(verdict.keep)
    update_manifest(path, {"base_id": base_id, "wal": {"seq": last, "bytes": size}})
    report.repaired.append(
        f"wrote {log.name} with the {len(verdict.keep)} records before the damage"
    )
    report.log_records, report.last_seq = len(verdict.keep), last
    if verdict.lost_to > last:
        report.lost, report.lost_more = [last + 1, verdict.lost_to], verdict.open_ended
