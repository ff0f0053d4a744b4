"""Durability of LiveIndex writes: torn and corrupt log records, failed appends (injected
and on a real, full tmpfs), checksummed manifests, the writer lock and document ids."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from lsr.index import Index, IndexFormatError, LiveIndex, commit, wal
from lsr.index import live as live_module
from lsr.index.errors import (
    CollectionLockedError,
    InvalidDocumentIdError,
    ReadOnlyError,
    WriteUnavailableError,
)
from lsr.index.lock import lock_path
from tests.conftest import fill_disk, random_csr
from tests.index.crash import crash_loop

V = 40  # the vocabulary of the ``base`` fixture (tests/index/conftest.py)
NEVER = float("inf")  # checkpoint_seconds: the checkpoint is written at open and close only


def _write(index, rng, ids):
    return index.upsert(random_csr(rng, len(ids), V, 0.3, integer=True), ids)


def _log(path):
    return path / "wal.log"


def _crashed_after_writes(base, rng, dst, n=3):
    """The directory as a crash leaves it after ``n`` writes (``n0``...): copied while the
    writer still has it open, its checkpoint written at open only."""
    index = LiveIndex(base, checkpoint_seconds=NEVER)
    for i in range(n):
        _write(index, rng, [f"n{i}"])
    shutil.copytree(base, dst)
    index.close()
    return dst


def test_a_reader_reads_the_logs_tail_record_by_record(base, rng, tmp_path):
    """``wal.read_from``, a reader's refresh: the records after an offset; one cut at any
    byte is left for the next read; a file replaced (trimmed), a gap in the numbers, or a
    bad record with valid ones after it sends the reader back to a whole read."""
    crashed = _crashed_after_writes(base, rng, tmp_path / "crashed", n=4)
    log = _log(crashed)
    records = wal.scan(log).records
    inode = log.stat().st_ino
    first = records[1]
    tail, end = wal.read_from(log, first.offset, first.seq, inode)
    assert [r.seq for r in tail] == [r.seq for r in records[1:]] and end == log.stat().st_size
    for cut in range(records[2].offset, records[3].offset):  # every byte of one record
        cut_log = tmp_path / "cut.log"
        shutil.copyfile(log, cut_log)
        os.truncate(cut_log, cut + 1 if cut + 1 < records[3].offset else cut)
        got, end = wal.read_from(cut_log, first.offset, first.seq, cut_log.stat().st_ino)
        assert [r.seq for r in got] == [first.seq] and end == records[2].offset
    assert wal.read_from(log, first.offset, first.seq + 1, inode) is None  # not the next one
    assert wal.read_from(log, first.offset, first.seq, inode + 1) is None  # another file
    damaged = tmp_path / "damaged.log"
    data = bytearray(log.read_bytes())
    data[records[2].offset + 30] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert wal.read_from(damaged, first.offset, first.seq, damaged.stat().st_ino) is None


def test_torn_tail_at_every_offset_replays_complete_records_and_accepts_writes(base, rng, tmp_path):
    crashed = _crashed_after_writes(base, rng, tmp_path / "crashed")
    records = wal.scan(_log(crashed)).records
    last = records[-1].offset
    size = _log(crashed).stat().st_size
    for cut in range(last, size):  # every byte offset of the last record
        trial = tmp_path / f"cut{cut}"
        shutil.copytree(crashed, trial)
        os.truncate(_log(trial), cut)
        again = LiveIndex(trial, checkpoint_seconds=NEVER)
        assert again.get("n1") is not None and again.get("n2") is None
        assert again.stats()["last_seq"] == 2 and _log(trial).stat().st_size == last
        _write(again, rng, ["after"])  # not glued onto the torn bytes
        again.close()
        reopened = LiveIndex(trial)
        assert reopened.stats()["last_seq"] == 3 and reopened.get("after") is not None
        reopened.close()
        shutil.rmtree(trial)


def test_corrupt_record_followed_by_valid_ones_is_an_error_naming_the_offset(base, rng, tmp_path):
    crashed = _crashed_after_writes(base, rng, tmp_path / "crashed")
    second = wal.scan(_log(crashed)).records[1].offset
    data = bytearray(_log(crashed).read_bytes())
    data[second + wal.FRAME.size + 3] ^= 0x01
    _log(crashed).write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=f"record at byte {second}.*valid records follow"):
        LiveIndex(crashed)


def test_every_flipped_log_byte_is_detected_after_a_clean_close(base, rng, tmp_path):
    with LiveIndex(base) as index:
        _write(index, rng, ["x1"])
        index.delete(["b3"])
    data = _log(base).read_bytes()
    for offset in range(len(data)):
        trial = tmp_path / "trial"
        shutil.copytree(base, trial)
        flipped = bytearray(data)
        flipped[offset] ^= 0x20
        _log(trial).write_bytes(bytes(flipped))
        with pytest.raises(IndexFormatError):
            LiveIndex(trial)
        shutil.rmtree(trial)


def test_a_log_cut_short_or_deleted_after_acknowledged_writes_is_an_error(base, rng, tmp_path):
    with LiveIndex(base) as index:
        for i in range(20):
            _write(index, rng, [f"n{i}"])
    half = tmp_path / "half"
    shutil.copytree(base, half)
    os.truncate(_log(half), _log(half).stat().st_size // 2)
    with pytest.raises(IndexFormatError, match="acknowledged: the log was truncated"):
        LiveIndex(half)
    _log(base).unlink()
    with pytest.raises(IndexFormatError, match="wal.log is missing but writes up to sequence"):
        LiveIndex(base)


def test_a_log_with_no_records_may_be_recreated(base, rng):
    LiveIndex(base).close()
    _log(base).unlink()
    with LiveIndex(base) as index:
        _write(index, rng, ["n0"])
    with LiveIndex(base) as index:
        assert index.get("n0") is not None


def test_gaps_foreign_logs_and_bad_headers_are_errors(base, rng, tmp_path):
    with LiveIndex(base) as index:
        for i in range(3):
            _write(index, rng, [f"n{i}"])
    scan = wal.scan(_log(base))
    gap = tmp_path / "gap"
    shutil.copytree(base, gap)
    kept = [r.payload for r in scan.records]
    blob = wal.header(scan.base_id, 1) + b"".join(
        wal.frame(wal.RECORD_MAGIC, seq, p)
        for seq, p in zip((1, 3), (kept[0], kept[2]), strict=True)
    )
    _log(gap).write_bytes(blob)
    with pytest.raises(IndexFormatError, match="sequence number 3, expected 2"):
        LiveIndex(gap)
    foreign = tmp_path / "foreign"
    shutil.copytree(base, foreign)
    wal.create(_log(foreign), "another-base", 1, kept)
    with pytest.raises(IndexFormatError, match="belongs to another collection"):
        LiveIndex(foreign)
    _log(foreign).write_bytes(b"LSRH" + b"\0" * 40)
    with pytest.raises(IndexFormatError, match="header is missing or corrupt"):
        LiveIndex(foreign)


def _commit_file(path):
    """The current commit point's file."""
    return path / commit.commit_name(commit.generations(path)[-1])


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c["quantization"].update(scale=c["quantization"]["scale"] * 2),
        lambda c: c.update(applied_seq=7),
        lambda c: c["wal"].update(seq=0),
        lambda c: c["segments"][0].update(n_docs=49),
        lambda c: c.update(collection_id="0" * 32),
    ],
)
def test_a_changed_commit_point_field_is_detected(base, rng, edit):
    with LiveIndex(base) as index:
        _write(index, rng, ["n0"])
    path = _commit_file(base)
    edited = json.loads(path.read_text())
    edit(edited)
    path.write_text(json.dumps(edited, indent=1))
    for read_only in (False, True):
        with pytest.raises(IndexFormatError, match=f"{path.name} fails its checksum"):
            LiveIndex(base, read_only=read_only)


def test_every_flipped_commit_point_byte_is_detected(base, rng):
    with LiveIndex(base) as index:
        _write(index, rng, ["n0"])
    path = _commit_file(base)
    data = path.read_bytes()
    for offset in range(len(data)):
        flipped = bytearray(data)
        flipped[offset] ^= 0x01
        path.write_bytes(bytes(flipped))
        with pytest.raises(IndexFormatError):
            commit.open_latest(base)
    path.write_bytes(data)
    LiveIndex(base, read_only=True).close()


def test_a_segment_manifest_is_checksummed_like_an_index_manifest(base, rng):
    LiveIndex(base).close()
    manifest_path = base / "segments" / "s00000000" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["n_docs"] = 49
    manifest_path.write_text(json.dumps(manifest, indent=2))
    with pytest.raises(IndexFormatError, match="manifest.json fails its checksum"):
        LiveIndex(base, read_only=True)


def test_an_index_of_format_2_is_read_as_it_is_and_converted_by_the_writer(base, rng):
    """Index directories written before collections existed (lsr 0.1) still open: readers
    read them as one segment, the first writer turns them into a collection."""
    manifest = json.loads((base / "manifest.json").read_text())
    del manifest["manifest_sha256"], manifest["base_id"]
    manifest["format_version"] = 2
    (base / "manifest.json").write_text(json.dumps(manifest))
    before = sorted(p.name for p in base.iterdir())
    queries = random_csr(rng, 4, V, 0.3)
    with LiveIndex(base, read_only=True) as reader:
        expected = [h.items() for h in reader.search(queries, 5)]
        assert reader.stats()["n_docs"] == 50
    assert sorted(p.name for p in base.iterdir()) == before  # a reader changes nothing
    with LiveIndex(base) as index:
        assert [h.items() for h in index.search(queries, 5)] == expected
        _write(index, rng, ["n0"])
    assert commit.is_collection(base) and not (base / "manifest.json").exists()
    assert sorted(p.name for p in (base / "segments" / "s00000000").iterdir()) == sorted(
        ["blocks.arrow", "docs.arrow", "manifest.json", "postings.arrow", "terms.arrow"]
    )
    with LiveIndex(base) as index:
        assert index.get("n0") is not None and index.stats()["n_docs"] == 51


def test_a_legacy_json_lines_log_is_migrated(base, rng):
    vec = random_csr(rng, 1, V, 0.3, integer=True)
    lines = [
        {"seq": 1, "op": "upsert", "ids": ["old1"], "indptr": vec.indptr.tolist(),
         "indices": vec.indices.tolist(), "data": vec.data.tolist()},
        {"seq": 2, "op": "delete", "ids": ["b0"]},
    ]  # fmt: skip
    text = "".join(json.dumps(r) + "\n" for r in lines) + '{"seq": 3, "op": "del'  # torn
    (base / "wal.jsonl").write_text(text)
    with LiveIndex(base) as index:
        assert index.get("old1") is not None and index.get("b0") is None
        assert index.stats()["last_seq"] == 2 and not (base / "wal.jsonl").exists()
        _write(index, rng, ["new"])
    with LiveIndex(base) as index:
        assert index.stats()["last_seq"] == 3 and index.get("old1") is not None


def _fail_pwrite(monkeypatch, code, after_bytes):
    """os.pwrite that writes ``after_bytes`` of the record, then fails with ``code`` (what a
    filling disk does to a write)."""
    real = os.pwrite

    def pwrite(fd, data, offset):
        if after_bytes:
            real(fd, bytes(data[:after_bytes]), offset)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "pwrite", pwrite)


@pytest.mark.parametrize(
    ("code", "after_bytes"), [(errno.ENOSPC, 0), (errno.ENOSPC, 11), (errno.EIO, 30)]
)
def test_failed_append_is_cut_back_refused_and_retried_after_backoff(
    base, rng, monkeypatch, code, after_bytes
):
    index = LiveIndex(base)
    _write(index, rng, ["ok1"])
    size = _log(base).stat().st_size
    with monkeypatch.context() as m:
        _fail_pwrite(m, code, after_bytes)
        with pytest.raises(WriteUnavailableError) as failed:
            _write(index, rng, ["lost"])
    assert failed.value.errno == code and failed.value.retry_after > 0
    assert _log(base).stat().st_size == size  # the partial record was cut off
    assert index.get("lost") is None and index.stats()["last_seq"] == 1
    assert not index.writable and index.stats()["writes"]["failures"] == 1
    with pytest.raises(WriteUnavailableError, match="writes are paused"):
        _write(index, rng, ["refused"])  # within the back-off: refused, nothing touched
    assert index.search(random_csr(rng, 2, V, 0.3), 5)  # reads keep working
    index.write_backoff._until = 0.0  # the back-off has passed
    assert _write(index, rng, ["ok2"]) == 2 and index.writable
    index.close()
    with LiveIndex(base) as again:
        assert again.get("ok1") is not None and again.get("ok2") is not None
        assert again.get("lost") is None and again.stats()["last_seq"] == 2


def test_failed_fsync_is_not_acknowledged(base, rng, monkeypatch):
    index = LiveIndex(base)
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
        with pytest.raises(WriteUnavailableError):
            _write(index, rng, ["lost"])
    index.write_backoff._until = 0.0
    _write(index, rng, ["ok"])
    index.close()
    with LiveIndex(base) as again:
        assert again.get("lost") is None and again.get("ok") is not None


def test_real_disk_full_loses_no_acknowledged_write(small_fs, rng):
    path = small_fs / "idx"
    docs = random_csr(rng, 50, V, 0.2, integer=True)
    Index.build(docs, [f"b{i}" for i in range(50)], [f"t{i}" for i in range(V)]).save(path)
    index = LiveIndex(path, flush_threshold=10**9)
    generation = index.stats()["generation"]
    filler = fill_disk(small_fs, chunk=256)
    acked, refused = [], 0
    for i in range(400):
        try:
            _write(index, rng, [f"w{i}"])
            acked.append(f"w{i}")
        except WriteUnavailableError as e:
            assert e.errno in (errno.ENOSPC, errno.EAGAIN)
            refused += 1
            index.write_backoff._until = 0.0  # probe the disk again at once
    assert refused > 0
    with pytest.raises(WriteUnavailableError):
        index.flush()  # no room for a segment either; the last commit point is untouched
    assert index.flush_backoff.failures == 1 and not index.needs_flush()
    assert index.stats()["generation"] == generation
    filler.unlink()  # space comes back
    index.write_backoff._until = 0.0
    for i in range(20):
        _write(index, rng, [f"later{i}"])
        acked.append(f"later{i}")
    index.close()
    with LiveIndex(path) as again:
        assert [d for d in acked if again.get(d) is None] == []
        assert again.stats()["last_seq"] == len(acked)
        again.force_merge()
    with LiveIndex(path) as merged:
        assert merged.stats()["n_docs"] == 50 + len(acked) and merged.stats()["segments"] == 1


def test_second_writer_is_refused_readers_are_not(base, rng):
    writer = LiveIndex(base)
    with pytest.raises(
        CollectionLockedError, match=f"already in this process \\(pid {os.getpid()}"
    ):
        LiveIndex(base)
    _write(writer, rng, ["n0"])
    reader = LiveIndex(base, read_only=True)
    assert reader.get("n0") is not None and reader.stats()["read_only"]
    with pytest.raises(ReadOnlyError):
        _write(reader, rng, ["no"])
    writer.close()
    assert not lock_path(base).exists()
    with pytest.raises(ValueError, match="was closed"):
        _write(writer, rng, ["late"])
    LiveIndex(base).close()


def test_writer_in_another_process_is_refused_and_its_stale_lock_taken_over(base, rng):
    script = textwrap.dedent(
        f"""
        import sys, time
        from lsr.index import LiveIndex
        index = LiveIndex({str(base)!r})
        print("ready", flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(CollectionLockedError, match=f"pid {proc.pid}"):
            LiveIndex(base)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert lock_path(base).exists()  # left behind by kill -9, but no longer held
    with LiveIndex(base) as index:
        _write(index, rng, ["after"])


def test_bad_ids_are_refused_before_anything_is_written(base, rng):
    index = LiveIndex(base)
    for bad, message in [
        ("\ud800", "lone surrogate"),
        ("", "is empty"),
        ("a\nb", "control character"),
        ("x" * 513, "more than 512"),
        (7, "not a string"),
    ]:
        with pytest.raises(InvalidDocumentIdError, match=message):
            _write(index, rng, [bad])
        with pytest.raises(InvalidDocumentIdError, match=message):
            index.delete([bad])
    odd = ["a/b", ".", "..", "%2F", "é ü", "?x#y"]
    _write(index, rng, ["fine"] + odd[:5])
    index.delete([odd[0]])
    assert index.stats()["last_seq"] == 2
    index.close()
    with LiveIndex(base) as again:
        assert all(again.get(d) is not None for d in odd[1:5]) and again.get("a/b") is None


def test_checkpoint_is_written_while_writing(base, rng):
    with LiveIndex(base, checkpoint_seconds=0.0) as index:
        _write(index, rng, ["n0"])
        assert json.loads(_commit_file(base).read_text())["wal"] == {"seq": 1}
        _write(index, rng, ["n1"])
        assert json.loads(_commit_file(base).read_text())["wal"] == {"seq": 2}
        assert len(commit.generations(base)) == 1  # the older ones are removed


CRASH_DURING_FLUSH_AND_MERGE = """
import numpy as np
from lsr.index import LiveIndex
from tests.conftest import random_csr

index = LiveIndex(sys.argv[1], background=False)
rng = np.random.default_rng(7)
ids = [f"m{i}" for i in range(10)]
index.upsert(random_csr(rng, 10, 40, 0.3, integer=True), ids)
index.delete(["b1", "b2"])
crash_from_here()
index.force_merge()
print("merged", calls)
"""


@pytest.mark.slow
def test_a_crash_at_every_step_of_a_flush_and_merge_loses_nothing(base, tmp_path):
    """kill -9 equivalents (os._exit) at each file-system call of a flush and of the merge
    after it, in a loop."""

    def check(trial, done):
        with LiveIndex(trial) as again:
            assert all(again.get(f"m{i}") is not None for i in range(10))
            assert again.get("b1") is None and again.get("b0") is not None
            assert again.stats()["n_docs"] == 58

    outcomes = crash_loop(base, tmp_path, CRASH_DURING_FLUSH_AND_MERGE, check)
    assert outcomes.count(9) >= 10 and outcomes[-1] == 0


def test_a_write_larger_than_a_log_record_may_be_is_refused(base, rng, monkeypatch):
    monkeypatch.setattr(wal, "MAX_RECORD_BYTES", 1000)
    with LiveIndex(base) as index:
        with pytest.raises(ValueError, match="split it into smaller batches"):
            _write(index, rng, [f"n{i}" for i in range(40)])
        assert index.stats()["last_seq"] == 0 and index.writable
        _write(index, rng, ["small"])
    with LiveIndex(base) as again:
        assert again.get("small") is not None and again.get("n0") is None


def test_a_reader_opening_during_a_flush_tries_again(base, rng, monkeypatch):
    """A reader that read a commit point just before the writer committed a flush and
    trimmed the log finds the log starting past it, and looks again."""
    writer = LiveIndex(base, background=False)
    _write(writer, rng, ["x"])
    before = commit.open_latest(base, lease=False)  # what a reader had read
    writer.flush()
    _write(writer, rng, ["y"])
    real, calls = commit.open_latest, []

    def open_latest(path, lease=True, **kwargs):
        calls.append(path)
        return before if len(calls) == 1 else real(path, lease=lease, **kwargs)

    monkeypatch.setattr(live_module, "open_latest", open_latest)
    reader = LiveIndex(base, read_only=True)
    assert len(calls) == 2 and reader.get("x") is not None and reader.get("y") is not None
    writer.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"flush_threshold": 0}, "flush_threshold must be a positive integer"),
        ({"flush_threshold": True}, "flush_threshold must be a positive integer"),
        ({"merge_policy": "tiered"}, "merge_policy must be a TieredMergePolicy"),
        ({"checkpoint_seconds": -1.0}, "checkpoint_seconds must be a number >= 0"),
        ({"checkpoint_seconds": float("nan")}, "checkpoint_seconds must be a number >= 0"),
    ],
)
def test_bad_options_are_refused_before_the_lock_is_taken(base, options, message):
    with pytest.raises(ValueError, match=message):
        LiveIndex(base, **options)
    LiveIndex(base).close()  # nothing was left locked
