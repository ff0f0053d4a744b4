"""Collections of segments: every search (all algorithms, filters, deletes, across segments,
write buffer, flushed and merged states, before and after reopening, through readers) equals
a brute force over the live documents; deletion files, lossless merges, detection of torn or
corrupt files, readers' leases on old commit points, refreshes, empty collections and the
background flush and merges."""

import json
import os
import shutil
import time

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.index import Field, Index, IndexFormatError, LiveIndex, TieredMergePolicy, commit
from lsr.index.collection import create_collection
from lsr.index.errors import WriteUnavailableError
from lsr.index.store import StoreSpec
from tests.conftest import fill_disk, random_csr
from tests.index.crash import crash_loop
from tests.index.test_merge_concurrency import live_ids

V = 60
VOCAB = [f"t{i}" for i in range(V)]
ALGORITHMS = ("exhaustive", "maxscore", "bmw", "maxscore-taat", "ranges", "auto")
TAGS = ("red", "green", "blue")
FILTERS = [
    (None, lambda r: True),
    (Field("year") >= 2010, lambda r: r["year"] >= 2010),
    (Field("tag").isin(["red", "blue"]) & ~Field("lang").exists(),
     lambda r: r["tag"] in ("red", "blue") and "lang" not in r),
    (Field("tag").eq("green") | (Field("year") < 1995),
     lambda r: r["tag"] == "green" or r["year"] < 1995),
]  # fmt: skip
# small tiers, so that a few dozen documents make several segments and merges
SMALL_TIERS = TieredMergePolicy(segments_per_tier=3, max_merge_at_once=3, floor_segment_bytes=1)


def _record(rng, i):
    rec = {"title": f"doc {i}", "year": int(rng.integers(1990, 2025)),
           "tag": str(rng.choice(TAGS))}  # fmt: skip
    if rng.random() < 0.3:
        rec["lang"] = "de"
    return rec


def _collection(path, rng, n, quantization="float32"):
    vectors = random_csr(rng, n, V, 0.15, integer=True)
    ids = [f"d{i}" for i in range(n)]
    records = [{"_id": d, **_record(rng, i)} for i, d in enumerate(ids)]
    index = Index.build(vectors, ids, VOCAB, quantization=quantization)
    create_collection(path, index, records, StoreSpec("all"), {})
    return {d: (vectors[[i]].toarray()[0], records[i]) for i, d in enumerate(ids)}


def _dense(weights: dict) -> np.ndarray:
    out = np.zeros(V)
    for term, w in weights.items():
        out[int(term[1:])] = w
    return out


def assert_exact(live, model, queries, k=8):
    """Every algorithm and filter returns the exact top-k of the live documents: the scores
    a brute force over the stored vectors gives, each hit with its own score, no duplicates
    (ties may come in any order)."""
    assert live_ids(live) == set(model) and live.n_docs == len(model)
    stored = {d: _dense(live.get(d)) for d in model}
    for d, (vector, record) in model.items():
        np.testing.assert_allclose(stored[d], vector, rtol=0.01, atol=0.02)  # uint8 steps
        assert live.document(d) == {"_id": d, **record}
    dense_q = queries.toarray()
    for condition, predicate in FILTERS:
        allowed = [d for d in sorted(model) if predicate(model[d][1])]
        scores = dense_q @ np.stack([stored[d] for d in allowed]).T if allowed else None
        for algorithm in ALGORITHMS:
            got = live.search(queries, k, filter=condition, algorithm=algorithm, fields=["tag"])
            for i, hits in enumerate(got):
                row = scores[i] if allowed else np.zeros(0)
                expected = np.sort(row[row > 0])[::-1][:k]
                assert len(set(hits.ids)) == len(hits.ids) == len(expected), algorithm
                np.testing.assert_allclose(hits.scores, expected, rtol=1e-5, atol=1e-5)
                by_id = dict(zip(allowed, row, strict=True))
                for hit in hits.hits:
                    assert by_id[hit.id] == pytest.approx(hit.score, rel=1e-5, abs=1e-5)
                    assert hit.document == {"_id": hit.id, "tag": model[hit.id][1]["tag"]}


@pytest.mark.parametrize("quantization", ["float32", "uint8"])
def test_search_equals_brute_force_through_flushes_merges_and_reopens(tmp_path, quantization):
    rng = np.random.default_rng(11)
    path = tmp_path / "c"
    model = _collection(path, rng, 120, quantization)
    options = {"flush_threshold": 15, "background": False, "merge_policy": SMALL_TIERS}
    live = LiveIndex(path, **options)
    queries = random_csr(rng, 6, V, 0.2)
    seen_segments = set()
    for round_ in range(12):
        for _ in range(int(rng.integers(3, 7))):
            kind = rng.random()
            if kind < 0.5:  # new documents, or new versions of live ones
                n = int(rng.integers(1, 6))
                ids = [f"n{round_}-{j}" if rng.random() < 0.6 else str(rng.choice(sorted(model)))
                       for j in range(n)]  # fmt: skip
                ids = list(dict.fromkeys(ids))
                vectors = random_csr(rng, len(ids), V, 0.2, integer=True).toarray()
                vectors[vectors.sum(axis=1) == 0, 1] = 1.0  # no empty document
                vectors = sp.csr_array(vectors)
                records = [_record(rng, j) for j in range(len(ids))]
                live.upsert(vectors, ids, records)
                for i, d in enumerate(ids):
                    model[d] = (vectors[[i]].toarray()[0], {"_id": d, **records[i]})
                    model[d][1].pop("_id")
            else:
                ids = list(rng.choice(sorted(model), size=int(rng.integers(1, 5)), replace=False))
                live.delete([*ids, "never-was"])
                for d in ids:
                    del model[d]
        step = round_ % 4
        if step == 1:
            live.maintain()  # a flush when the buffer is full, then the policy's merges
        elif step == 2:
            live.close()
            live = LiveIndex(path, **options)
        elif step == 3:
            live.flush()
            live.merge()
            if round_ == 11:
                live.force_merge(1)
                assert live.stats()["segments"] == 1 and live.stats()["deleted_docs"] == 0
        seen_segments.add(live.stats()["segments"])
        assert_exact(live, model, queries)
        with LiveIndex(path, read_only=True) as reader:
            assert_exact(reader, model, queries)
    live.close()
    assert max(seen_segments) >= 3  # the states above did span several segments
    with LiveIndex(path) as again:
        assert_exact(again, model, queries)


def test_a_flush_writes_deletion_files_and_trims_the_log(tmp_path, rng):
    path = tmp_path / "c"
    _collection(path, rng, 50)
    with LiveIndex(path, background=False) as live:
        live.upsert(random_csr(rng, 3, V, 0.3, integer=True), ["x", "y", "d1"])
        live.delete(["d2", "d3", "x"])
        assert live.stats()["log_records"] == 2
        generation = live.flush()
        current = commit.read_commit(path, generation)
        first, second = current["segments"]
        assert first["deletes"]["count"] == 3  # d1 replaced, d2 and d3 deleted
        assert second["n_docs"] == 2 and second["deletes"] is None  # y and d1, not x
        assert current["applied_seq"] == 2 and live.stats()["log_records"] == 0
    from lsr.index import wal

    assert wal.scan(path / "wal.log").records == []
    with LiveIndex(path, read_only=True) as reader:
        assert reader.get("d2") is None and reader.get("y") is not None and reader.n_docs == 49


def test_merges_copy_impacts_exactly_when_segments_share_the_step(tmp_path, rng):
    path = tmp_path / "c"
    _collection(path, rng, 80, quantization="uint8")
    queries = random_csr(rng, 5, V, 0.3)
    with LiveIndex(path, background=False) as live:
        for i in range(3):
            live.upsert(random_csr(rng, 10, V, 0.2, integer=True), [f"n{i}-{j}" for j in range(10)])
            live.flush()
        before = [h.items() for h in live.search(queries, 20)]
        steps = {index.scale for index in live.segments}
        live.force_merge()
        assert len(steps) == 1 and live.segments[0].scale == steps.pop()
        assert [h.items() for h in live.search(queries, 20)] == before  # not one digit moved


def _first_segment(path):
    return path / "segments" / commit.read_commit(path, commit.generations(path)[-1])[
        "segments"][0]["name"]  # fmt: skip


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-7])


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x08
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: _truncate(_first_segment(p) / "postings.arrow"), "is truncated or was modified"),
        (lambda p: _flip(_first_segment(p) / "postings.arrow"), "postings.arrow fails its"),
        (lambda p: _flip(_first_segment(p) / "store.arrow"), "store.arrow fails its checksum"),
        (lambda p: _flip(next(_first_segment(p).glob("deletes-*"))), "deletes-.* fails its"),
        (lambda p: _truncate(next(_first_segment(p).glob("deletes-*"))), "deletes-.* is .* bytes"),
        (lambda p: _truncate(p / "vocab.json"), "vocab.json fails its checksum"),
        (lambda p: shutil.rmtree(_first_segment(p)), "s00000000.* does not exist|is not an index"),
        (lambda p: (p / commit.commit_name(commit.generations(p)[-1])).write_text("{"),
         "commit-.*is corrupt"),
    ],
)  # fmt: skip
def test_a_torn_or_corrupt_file_is_detected_on_open(tmp_path, rng, damage, message):
    path = tmp_path / "c"
    _collection(path, rng, 40)
    with LiveIndex(path, background=False) as live:
        live.delete(["d1"])
        live.flush()
    damage(path)
    for read_only in (True, False):
        with pytest.raises(IndexFormatError, match=message):
            LiveIndex(path, read_only=read_only)


def test_old_commit_points_are_kept_while_a_reader_holds_them(tmp_path, rng):
    path = tmp_path / "c"
    _collection(path, rng, 40)
    queries = random_csr(rng, 4, V, 0.3)
    writer = LiveIndex(path, background=False)
    writer.upsert(random_csr(rng, 5, V, 0.3, integer=True), [f"n{i}" for i in range(5)])
    writer.flush()
    reader = LiveIndex(path, read_only=True)
    held = set(os.listdir(path / "segments"))
    expected = [h.items() for h in reader.search(queries, 10)]
    writer.delete(["d0", "n0"])
    writer.force_merge()  # replaces both segments
    assert held <= set(os.listdir(path / "segments"))  # the reader still holds them
    assert len(commit.generations(path)) >= 2
    assert [h.items() for h in reader.search(queries, 10)] == expected
    assert reader.document("n0") is not None  # the reader's point in time
    reader.close()
    writer.upsert(random_csr(rng, 1, V, 0.3, integer=True), ["late"])
    writer.flush()  # the next commit removes what no reader holds
    assert not held & set(os.listdir(path / "segments"))
    assert len(commit.generations(path)) == 1
    writer.close()


def test_a_reader_refreshes_to_the_writers_latest_state(tmp_path, rng):
    path = tmp_path / "c"
    _collection(path, rng, 40)
    writer = LiveIndex(path, background=False)
    reader = LiveIndex(path, read_only=True)
    assert reader.refresh() is False  # nothing changed
    kept = reader.segments[0]
    writer.upsert(random_csr(rng, 2, V, 0.3, integer=True), ["a", "b"])
    assert reader.get("a") is None and reader.refresh() is True and reader.get("a") is not None
    writer.flush()
    writer.delete(["d5"])
    assert reader.refresh() is True
    assert reader.get("d5") is None and reader.get("b") is not None and reader.n_docs == 41
    assert reader.segments[0] is kept  # segments it already had are not read again
    assert reader.refresh() is False
    writer.close()
    reader.close()


@pytest.mark.parametrize("checkpoint_seconds", [float("inf"), 0.0])
def test_a_reader_applies_new_log_records_without_reading_the_log_again(
    tmp_path, rng, monkeypatch, checkpoint_seconds
):
    """Also when the writer records a log checkpoint (a new commit point) at every write:
    the reader moves to it and still reads only the log's new records."""
    path = tmp_path / "c"
    _collection(path, rng, 40)
    writer = LiveIndex(path, background=False, checkpoint_seconds=checkpoint_seconds)
    reader = LiveIndex(path, read_only=True)
    loads = []
    whole = LiveIndex._load
    monkeypatch.setattr(LiveIndex, "_load", lambda self: loads.append(1) or whole(self))
    queries = random_csr(rng, 4, V, 0.3)
    for i in range(6):
        vector = random_csr(rng, 1, V, 0.3, integer=True).toarray()
        vector[0, i] = 1.0
        writer.upsert(sp.csr_array(vector), [f"t{i}"], [_record(rng, i)])
        if i == 3:
            writer.delete(["d3", "t0"])
        assert reader.refresh() is True
        assert reader.document(f"t{i}") == writer.document(f"t{i}")
        for a, b in zip(reader.search(queries, 7), writer.search(queries, 7), strict=True):
            assert a.ids == b.ids and a.scores == b.scores
    assert loads == []  # each refresh read only the records appended since the last one
    if checkpoint_seconds == 0:  # the reader's lease moved along: old commit points went
        assert reader.stats()["generation"] == writer.stats()["generation"] > 1
        assert len(commit.generations(path)) <= 2
    assert reader.get("d3") is None and reader.get("t0") is None and reader.n_docs == 44
    writer.flush()  # a new commit point (and a trimmed log): read again, whole
    assert reader.refresh() is True and loads == [1] and reader.n_docs == 44
    writer.close()
    reader.close()


def test_an_emptied_collection_has_no_segments_and_takes_writes_again(tmp_path, rng):
    path = tmp_path / "c"
    model = _collection(path, rng, 30)
    queries = random_csr(rng, 3, V, 0.3)
    with LiveIndex(path, background=False) as live:
        live.delete(sorted(model))
        live.force_merge()
        assert live.stats()["segments"] == 0 and live.n_docs == 0
        results = live.search(queries, 5, filter=Field("year") > 0, fields=["*"])
        assert [list(h.ids) for h in results] == [[], [], []]
    with LiveIndex(path) as live:
        assert live.n_docs == 0
        live.upsert(random_csr(rng, 2, V, 0.5, integer=True), ["again", "more"],
                    [{"year": 2000}, {"year": 1980}])  # fmt: skip
        assert live.search(queries, 5, filter=Field("year") > 1990)[0].ids in (["again"], [])
        live.flush()
    with LiveIndex(path, read_only=True) as reader:
        assert reader.n_docs == 2 and reader.document("again") == {"_id": "again", "year": 2000}


def test_background_flushes_and_merges_keep_the_segment_count_small(tmp_path, rng):
    path = tmp_path / "c"
    _collection(path, rng, 20)
    live = LiveIndex(path, flush_threshold=20, merge_policy=SMALL_TIERS)
    written = []
    for i in range(60):
        ids = [f"w{i}-{j}" for j in range(5)]
        live.upsert(random_csr(rng, 5, V, 0.3, integer=True) + sp.csr_array(np.eye(5, V)), ids)
        written += ids
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stats = live.stats()
        if live._state.buffer.n_rows < 20 and not live.find_merges() and not stats["merges"][
                "running"]:  # fmt: skip
            break
        time.sleep(0.05)
    stats = live.stats()
    assert stats["flushes"]["count"] >= 2 and stats["log_records"] < 20
    assert stats["segments"] <= SMALL_TIERS.allowed_segments(
        [t.info() for t in live._state.segments]
    )
    assert all(live.get(d) is not None for d in written) and live.n_docs == 320
    live.close()  # waits for the background work
    with LiveIndex(path, read_only=True) as reader:
        assert reader.n_docs == 320


CONVERT = """
from lsr.index import LiveIndex
crash_from_here()
index = LiveIndex(sys.argv[1], background=False)
print("opened", calls)
"""


@pytest.mark.slow
def test_converting_an_index_of_format_3_survives_a_crash_at_every_step(base, rng, tmp_path):
    """An index directory with a log (format 3), converted by its first writer: a crash at
    any step leaves either the old layout or the new one, with every write."""
    with LiveIndex(base, background=False) as live:
        live.upsert(random_csr(rng, 4, 40, 0.3, integer=True), [f"n{i}" for i in range(4)])
        live.delete(["b0"])
    old = tmp_path / "old"  # the same state written as format 3
    shutil.copytree(base / "segments" / "s00000000", old)
    shutil.copy(base / "wal.log", old / "wal.log")
    manifest = json.loads((old / "manifest.json").read_text())
    from lsr.index.commit import read_commit
    from lsr.index.storage import update_manifest

    current = read_commit(base, commit.generations(base)[-1])
    update_manifest(old, {"base_id": current["collection_id"], "wal": {"seq": 2}})
    assert manifest["format_version"] == 3

    def check(trial, done):
        with LiveIndex(trial) as again:
            assert all(again.get(f"n{i}") is not None for i in range(4))
            assert again.get("b0") is None and again.n_docs == 53
        assert commit.is_collection(trial) and not (trial / "manifest.json").exists()

    outcomes = crash_loop(old, tmp_path / "loop", CONVERT, check)
    assert outcomes.count(9) >= 5 and outcomes[-1] == 0


def test_a_real_full_disk_during_a_flush_or_a_merge_keeps_the_last_commit(
    small_fs, rng, monkeypatch
):
    """On a real, full tmpfs, a flush and a merge fail part way (their free-space estimate is
    switched off, so the writes themselves meet ENOSPC): the last commit point stays, no
    half-written segment is left, the log keeps every write, and both succeed once there is
    room again."""
    path = small_fs / "c"
    model = _collection(path, rng, 150)
    monkeypatch.setattr(LiveIndex, "_check_space", lambda self, needed, work: None)
    live = LiveIndex(path, background=False)
    ids = [f"n{i}" for i in range(60)]
    live.upsert(random_csr(rng, 60, V, 0.3, integer=True) + sp.csr_array(np.eye(60, V)), ids)
    live.flush()  # two segments to merge later
    live.upsert(random_csr(rng, 30, V, 0.3, integer=True) + sp.csr_array(np.eye(30, V)),
                [f"m{i}" for i in range(30)])  # fmt: skip
    generation = live.stats()["generation"]
    committed = sorted(os.listdir(path / "segments"))
    filler = fill_disk(small_fs, chunk=512)
    with pytest.raises(WriteUnavailableError, match="the flush was not written .*disk is full"):
        live.flush()
    with pytest.raises(WriteUnavailableError, match="the merge was not written"):
        live.merge_segments(committed)
    assert live.stats()["generation"] == generation
    assert sorted(os.listdir(path / "segments")) == committed  # nothing half written is left
    assert live.stats()["flushes"]["failures"] == 1 and live.stats()["merges"]["failures"] == 1
    assert live.get("m3") is not None  # still searched from the buffer
    filler.unlink()
    live.flush()
    live.force_merge()
    live.close()
    with LiveIndex(path, read_only=True) as again:
        assert again.n_docs == len(model) + 90 and again.stats()["segments"] == 1
