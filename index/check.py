"""``lsr check``: verify a collection on disk, and repair a damaged write-ahead log.

Checking reads everything a writer's open reads (the current commit point and its checksum,
the vocabulary, every segment's manifest and files with their sha256, every deletion file,
the log's header, records and checkpoint; for an index directory of formats 1 to 3 its
manifest and files) and reports each problem instead of stopping at the first. Repairing
takes the writer lock and makes a damaged log openable again, in the manner of Lucene's
CheckIndex ``-exorcise``: it keeps every record before the damage, drops the rest, and says
exactly which acknowledged sequence numbers that loses. The damaged log is never deleted: it
is kept beside the new one (``wal.log.damaged-TIME``) for whoever wants to recover more by
hand. A damaged commit point, segment or deletion file cannot be repaired from what is on
disk: it is reported, and must be restored or rebuilt.
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lsr.index import wal
from lsr.index.collection import WAL_NAME, read_vocab
from lsr.index.commit import SEGMENTS_DIR, is_collection, open_latest, write_commit
from lsr.index.deletes import read_deletes
from lsr.index.errors import IndexFormatError
from lsr.index.inverted import Index
from lsr.index.lock import WriterLock
from lsr.index.representations import SPARSE, extras_of, load_extras
from lsr.index.storage import update_manifest


@dataclass
class CheckReport:
    """What :func:`check_collection` found and, with ``repair``, did."""

    path: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_docs: int | None = None
    segments: int | None = None
    flushed_seq: int | None = None  # the last sequence number the segments hold
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
        if self.n_docs is None:
            docs = "base unreadable"
        else:
            docs = f"{self.n_docs:,} documents"
            if self.segments is not None:
                docs += f" in {self.segments} segment{'s' if self.segments != 1 else ''}"
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
class _Log:
    """What the log applies to: the id its header must name, the last sequence number the
    segments (or base) hold, and the acknowledged checkpoint."""

    log_id: str | None
    applied: int
    mark: dict


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
        if is_collection(path):
            target, commit = _check_segments(path, report)
        else:
            target, commit = _check_legacy_base(path, report), None
        if target is None:
            return report
        report.flushed_seq = target.applied
        damaged = bool(report.problems)  # a segment: the log is not repaired over it
        verdict = _check_log(path, target, report)
        if repair and verdict is not None and not damaged:
            _repair_log(path, target, commit, report, verdict)
        return report
    finally:
        if lock is not None:
            lock.release()


def _check_segments(path: Path, report: CheckReport) -> tuple[_Log | None, dict | None]:
    """Check the current commit point, the vocabulary, each segment and deletion file."""
    try:
        commit, lease = open_latest(path, lease=True)
    except IndexFormatError as e:
        report.problems.append(f"{e} (a commit point cannot be repaired: restore or rebuild)")
        return None, None
    try:
        try:
            vocab = read_vocab(path, commit["vocab"])
        except (IndexFormatError, ValueError) as e:
            report.problems.append(str(e))
            return None, None
        live, damaged = 0, False
        try:
            extras = extras_of(commit)
            extra_vocabs = {r.name: read_vocab(path, r.vocab) for r in extras if r.kind == SPARSE}
        except (IndexFormatError, ValueError) as e:
            report.problems.append(str(e))
            return None, None
        for entry in commit["segments"]:
            segment_dir = path / SEGMENTS_DIR / entry["name"]
            try:
                index = Index.load(segment_dir, verify=True, vocab=vocab)
                load_extras(segment_dir, extras, index.n_docs, extra_vocabs, verify=True)
                deleted = 0
                if entry.get("deletes"):
                    deleted = int(read_deletes(segment_dir, entry["deletes"], index.n_docs).sum())
                live += index.n_docs - deleted
            except IndexFormatError as e:
                report.problems.append(f"segment {entry['name']}: {e}")
                damaged = True
        report.segments = len(commit["segments"])
        report.n_docs = None if damaged else live
        mark = commit.get("wal") or {}
        return _Log(commit["collection_id"], int(commit["applied_seq"]), mark), commit
    finally:
        lease.release()


def _check_legacy_base(path: Path, report: CheckReport) -> _Log | None:
    """Check an index directory of formats 1 to 3 (its manifest and files)."""
    try:
        base = Index.load(path, verify=True)
    except IndexFormatError as e:
        report.problems.append(f"{e} (a base index cannot be repaired: restore or rebuild it)")
        return None
    manifest = base.manifest
    report.n_docs, report.segments = base.n_docs, None
    applied = int(base.metadata.get("applied_seq", 0))
    return _Log(manifest.get("base_id"), applied, manifest.get("wal") or {})


def _check_log(path: Path, target: _Log, report: CheckReport) -> _LogVerdict | None:
    """Record the log's problems in ``report``; the repair to make, or None if none is due."""
    log, applied = path / WAL_NAME, target.applied
    state = wal.inspect(log, target.log_id, applied + 1, target.mark)
    report.last_seq = applied
    if state.kind == wal.ABSENT:
        report.notes.append(f"{log.name} does not exist yet (no write since the last flush)")
        return None
    if state.kind in (wal.MISSING, wal.UNREADABLE):
        report.problems.append(state.problem)
        gone = max(state.acknowledged, applied + 1)
        return _LogVerdict([], gone, open_ended=state.kind == wal.UNREADABLE)
    records = [r for r in state.scan.records if r.seq > applied]
    payloads, problems = [], []
    for record in records:
        try:
            wal.decode(record.payload, f"{log} record {record.seq}")
        except IndexFormatError as e:
            problems.append(str(e))
            break
        payloads.append(record.payload)
    report.log_records, report.last_seq = len(payloads), applied + len(payloads)
    if state.problem is not None:
        problems.append(state.problem)
    report.problems += problems
    if state.kind == wal.TRUNCATED and len(payloads) == len(records):
        return _LogVerdict(payloads, state.acknowledged, open_ended=False)
    if problems:
        last_valid = applied + len(records)
        return _LogVerdict(payloads, max(state.acknowledged, last_valid, report.last_seq + 1))
    if state.scan.torn_bytes:
        report.notes.append(
            f"{state.scan.torn_bytes} bytes of an append interrupted before it was acknowledged "
            "(cut off when a writer opens the collection)"
        )
    return None


def _repair_log(
    path: Path, target: _Log, commit: dict | None, report: CheckReport, verdict: _LogVerdict
) -> None:
    log, start = path / WAL_NAME, target.applied + 1
    if log.is_file():
        kept = log.with_name(f"{WAL_NAME}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        shutil.copy2(log, kept)
        report.repaired.append(f"kept the damaged log as {kept.name}")
    log_id = target.log_id or uuid.uuid4().hex  # none in a format 1-2 manifest
    size = wal.create(log, log_id, start, verdict.keep)
    last = target.applied + len(verdict.keep)
    if commit is not None:
        write_commit(path, {**commit, "generation": commit["generation"] + 1, "wal": {"seq": last}})
    else:
        update_manifest(path, {"base_id": log_id, "wal": {"seq": last, "bytes": size}})
    report.repaired.append(
        f"wrote {log.name} with the {len(verdict.keep)} records before the damage"
    )
    report.log_records, report.last_seq = len(verdict.keep), last
    if verdict.lost_to > last:
        report.lost, report.lost_more = [last + 1, verdict.lost_to], verdict.open_ended
