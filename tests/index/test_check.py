"""``lsr check``: every kind of log damage is reported, and ``--repair`` keeps what precedes
it, says what is lost, keeps the damaged log, and leaves a collection that opens."""

import json
import os

import pytest

from lsr.index import Index, IndexFormatError, LiveIndex, commit, wal
from lsr.index.check import check_collection
from lsr.service.cli import main
from tests.conftest import random_csr

V = 30


@pytest.fixture
def collection(tmp_path, rng):
    """A collection with 6 acknowledged writes (n0..n5) after its base, closed cleanly."""
    path = tmp_path / "idx"
    docs = random_csr(rng, 20, V, 0.2, integer=True)
    Index.build(docs, [f"b{i}" for i in range(20)], [f"t{i}" for i in range(V)]).save(path)
    with LiveIndex(path) as index:
        for i in range(6):
            index.upsert(random_csr(rng, 1, V, 0.3, integer=True), [f"n{i}"])
    return path


def _log(path):
    return path / "wal.log"


def _flip_record(path, number):
    record = wal.scan(_log(path)).records[number]
    data = bytearray(_log(path).read_bytes())
    data[record.offset + wal.FRAME.size + 2] ^= 0x10
    _log(path).write_bytes(bytes(data))


def _cut_half(path):
    os.truncate(_log(path), _log(path).stat().st_size // 2)


def _delete(path):
    _log(path).unlink()


def _foreign(path):
    wal.create(_log(path), "0" * 32, 1)


def test_a_sound_collection_checks_ok(collection, capsys):
    report = check_collection(collection)
    assert report.ok and not report.problems and report.log_records == 6
    assert main(["check", str(collection)]) == 0
    assert capsys.readouterr().out.strip().endswith("ok")


@pytest.mark.parametrize(
    ("damage", "kept", "lost", "message"),
    [
        (lambda p: _flip_record(p, 2), 2, [3, 6], "is corrupt and valid records follow"),
        (_cut_half, None, None, "the log was truncated"),
        (_delete, 0, [1, 6], "is missing"),
        (_foreign, 0, [1, 6], "belongs to another collection"),
    ],
)
def test_damage_is_reported_then_repaired(collection, rng, capsys, damage, kept, lost, message):
    damage(collection)
    with pytest.raises(IndexFormatError):
        LiveIndex(collection)
    assert main(["check", str(collection), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"] and message in " ".join(report["problems"])
    assert main(["check", str(collection), "--repair"]) == 0
    out = capsys.readouterr().out
    assert "repaired: wrote wal.log" in out
    with LiveIndex(collection) as index:
        present = [i for i in range(6) if index.get(f"n{i}") is not None]
        assert present == list(range(len(present)))  # a prefix of the acknowledged writes
        if kept is not None:
            assert len(present) == kept
        assert index.stats()["last_seq"] == len(present)
        index.upsert(random_csr(rng, 1, V, 0.3), ["later"])  # writable again
    expected_lost = lost or [len(present) + 1, 6]
    assert f"sequence numbers {expected_lost[0]} to {expected_lost[1]}" in out
    assert check_collection(collection).ok
    if damage is not _delete:
        assert [p.name for p in collection.glob("wal.log.damaged-*")]


def test_a_damaged_segment_or_commit_point_is_reported_not_repaired(collection, capsys):
    with LiveIndex(collection, background=False) as index:
        index.delete(["b0"])
        index.flush()  # a second segment and a deletion file
    assert check_collection(collection).ok
    segment = collection / "segments" / "s00000001"
    postings = segment / "postings.arrow"
    data = bytearray(postings.read_bytes())
    data[len(data) // 2] ^= 0x40
    postings.write_bytes(bytes(data))
    report = check_collection(collection, repair=True)
    assert not report.ok and not report.repaired and report.n_docs is None
    assert "segment s00000001" in report.problems[0] and "fails its checksum" in report.problems[0]
    postings.write_bytes(bytes(data[:-1]))
    assert main(["check", str(collection)]) == 1
    assert "is truncated or was modified" in capsys.readouterr().out
    data[len(data) // 2] ^= 0x40
    postings.write_bytes(bytes(data))
    (deletes,) = (collection / "segments" / "s00000000").glob("deletes-*.bits")
    deletes.write_bytes(deletes.read_bytes()[:-1])
    report = check_collection(collection)
    assert not report.ok and "segment s00000000" in report.problems[0]
    commit_file = collection / commit.commit_name(commit.generations(collection)[-1])
    edited = json.loads(commit_file.read_text())
    edited["applied_seq"] += 1
    commit_file.write_text(json.dumps(edited))
    report = check_collection(collection, repair=True)
    assert not report.ok and "cannot be repaired" in report.problems[0] and not report.repaired


def test_a_damaged_index_of_format_3_is_reported_not_repaired(tmp_path, rng):
    path = tmp_path / "old"
    docs = random_csr(rng, 20, V, 0.2, integer=True)
    Index.build(docs, [f"b{i}" for i in range(20)], [f"t{i}" for i in range(V)]).save(path)
    assert check_collection(path).ok and check_collection(path).n_docs == 20
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["n_docs"] = 3
    (path / "manifest.json").write_text(json.dumps(manifest))
    report = check_collection(path, repair=True)
    assert not report.ok and "cannot be repaired" in report.problems[0] and not report.repaired


def test_a_torn_tail_is_a_note_and_repair_needs_the_lock(collection, tmp_path, capsys):
    with open(_log(collection), "ab") as f:
        f.write(b"LSRR\x05")
    report = check_collection(collection)
    assert report.ok and "interrupted before it was acknowledged" in report.notes[0]
    writer = LiveIndex(collection)
    assert main(["check", str(collection), "--repair"]) == 2
    assert "open for writing" in capsys.readouterr().err
    writer.close()
    assert main(["check", str(tmp_path / "nope")]) == 2
