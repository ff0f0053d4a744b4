"""Flushes and merges build their segment without the write lock: writes made meanwhile are
acknowledged at once, carried into the new state (deletions of documents being flushed or
merged included), and survive a crash at any step."""

import threading

import numpy as np
import pytest

from lsr.index import LiveIndex
from lsr.index.inverted import IndexBuilder
from tests.conftest import random_csr
from tests.index.crash import crash_loop
from tests.index.test_wal import V, _write


def live_ids(live):
    """Every live document id: the segments' and the write buffer's."""
    ids = {d for index in live.segments for d in index.doc_ids.to_pylist()}
    ids.update(live._state.buffer.row_of)
    return {d for d in ids if live.get(d) is not None}


def _state(live):
    """Every live document's vector, by id (what a brute force over live documents reads)."""
    return {d: live.get(d) for d in sorted(live_ids(live))}


def _held_build(monkeypatch):
    """Make the next IndexBuilder.finish wait until released (a slow build)."""
    building, release = threading.Event(), threading.Event()
    finish = IndexBuilder.finish

    def slow_finish(self, metadata=None):
        building.set()
        assert release.wait(30)
        return finish(self, metadata)

    monkeypatch.setattr(IndexBuilder, "finish", slow_finish)
    return building, release


def _same_hits(got, expected):
    for g, e in zip(got, expected, strict=True):
        assert g.ids == e.ids
        np.testing.assert_allclose(g.scores, e.scores, rtol=1e-5)


def test_writes_go_on_while_a_flush_builds(base, rng, monkeypatch):
    live = LiveIndex(base, background=False)
    _write(live, rng, [f"a{i}" for i in range(5)])
    live.delete(["b3"])
    flushed_seq = live.stats()["last_seq"]
    building, release = _held_build(monkeypatch)
    flusher = threading.Thread(target=live.flush)
    flusher.start()
    assert building.wait(30)
    # the flush is stuck in its build: writes and searches must not wait for it
    seqs = [_write(live, rng, [f"c{i}"]) for i in range(4)]
    live.delete(["b5", "a1"])  # a1 is being flushed
    _write(live, rng, ["a2"])  # replaces a version being flushed
    q = random_csr(rng, 3, V, 0.3)
    during = live.search(q, 10)
    expected = _state(live)
    release.set()
    flusher.join(30)
    assert not flusher.is_alive()
    stats = live.stats()
    assert stats["log_records"] == 6 and stats["flushed_seq"] == flushed_seq == seqs[0] - 1
    assert stats["segments"] == 2 and stats["buffer_docs"] == 5  # c0..c3, a2
    assert _state(live) == expected
    _same_hits(live.search(q, 10), during)  # the buffer's float scores, now quantized ones
    live.close()
    with LiveIndex(base) as again:
        assert _state(again) == expected
        again.flush()
        assert again.stats()["log_records"] == 0 and _state(again) == expected


def test_writes_go_on_while_a_merge_builds(base, rng, monkeypatch):
    live = LiveIndex(base, background=False)
    _write(live, rng, [f"a{i}" for i in range(5)])
    live.delete(["b3"])
    live.flush()
    building, release = _held_build(monkeypatch)
    names = sorted(t.name for t in live._state.segments)
    merger = threading.Thread(target=live.merge_segments, args=(names,))
    merger.start()
    assert building.wait(30)
    _write(live, rng, [f"c{i}" for i in range(3)])
    live.delete(["b5", "a1"])  # both in segments being merged
    _write(live, rng, ["a2", "b7"])  # replace versions being merged
    q = random_csr(rng, 3, V, 0.3)
    during = live.search(q, 10)
    expected = _state(live)
    release.set()
    merger.join(30)
    assert not merger.is_alive()
    stats = live.stats()
    assert stats["segments"] == 1 and stats["deleted_docs"] == 4  # b5, a1, a2, b7: carried
    assert _state(live) == expected
    _same_hits(live.search(q, 10), during)
    live.close()
    with LiveIndex(base) as again:
        assert _state(again) == expected
        again.force_merge()
        assert again.stats()["deleted_docs"] == 0 and _state(again) == expected


CRASH_WITH_WRITES_DURING_FLUSH_AND_MERGE = """
import numpy as np
from lsr.index import LiveIndex
from lsr.index.inverted import IndexBuilder
from tests.conftest import random_csr

index = LiveIndex(sys.argv[1], background=False)
rng = np.random.default_rng(7)
index.upsert(random_csr(rng, 5, 40, 0.3, integer=True), [f"m{i}" for i in range(5)])
index.delete(["b1"])
finish, builds = IndexBuilder.finish, []

def finish_with_writes(self, metadata=None):  # writes acknowledged while a segment builds
    builds.append(1)
    if len(builds) == 1:  # the flush
        index.upsert(random_csr(rng, 3, 40, 0.3, integer=True), ["w0", "w1", "m0"])
        index.delete(["b2", "m1"])
        print("acked during flush", flush=True)
    else:  # the merge
        index.upsert(random_csr(rng, 2, 40, 0.3, integer=True), ["w2", "m2"])
        index.delete(["b3", "w0"])
        print("acked during merge", flush=True)
    return finish(self, metadata)

IndexBuilder.finish = finish_with_writes
crash_from_here()
index.force_merge()
print("merged", calls)
"""


@pytest.mark.slow
def test_a_crash_at_every_step_keeps_the_writes_made_during_a_flush_and_a_merge(base, tmp_path):
    """Writes acknowledged (printed) before the crash are all there; a write that crashed
    before its acknowledgement may be there or not, but whole."""

    def check(trial, done):
        with LiveIndex(trial) as again:
            assert again.get("m3") is not None and again.get("b1") is None
            if "acked during flush" in done.stdout:
                assert again.get("w1") is not None and again.get("m1") is None
                assert again.get("b2") is None
            if "acked during merge" in done.stdout:
                assert again.get("w2") is not None and again.get("w0") is None
                assert again.get("b3") is None
                assert again.stats()["n_docs"] == 50 + 5 - 1 + 2 - 2 + 1 - 2
            assert again.stats()["n_docs"] == len(live_ids(again))

    outcomes = crash_loop(base, tmp_path, CRASH_WITH_WRITES_DURING_FLUSH_AND_MERGE, check)
    assert outcomes.count(9) >= 10 and outcomes[-1] == 0
    assert all(code == 9 for code in outcomes[:-1])


def test_closing_gives_a_merge_up_at_a_safe_point(base, rng, monkeypatch):
    """``close()`` (SIGTERM to the server) does not wait for a long merge to commit: the
    merge stops at its next safe point, nothing of it is committed, its files go."""
    from lsr.index.maintenance import MergeAbandoned

    live = LiveIndex(base, background=False)
    _write(live, rng, [f"a{i}" for i in range(5)])
    live.flush()
    expected = _state(live)
    names = sorted(t.name for t in live._state.segments)
    building, release = _held_build(monkeypatch)
    raised = []

    def merge():
        try:
            live.merge_segments(names)
        except MergeAbandoned as e:
            raised.append(e)

    merger = threading.Thread(target=merge)
    merger.start()
    assert building.wait(30)
    closer = threading.Thread(target=live.close)
    closer.start()
    for _ in range(300):
        if live._closing:
            break
        threading.Event().wait(0.01)
    release.set()
    merger.join(30)
    closer.join(30)
    assert raised and not closer.is_alive()
    assert live.merges == 0 and live.merge_backoff.to_dict()["failures"] == 0
    on_disk = sorted(p.name for p in (base / "segments").iterdir())
    assert on_disk == names  # the merged segment's files are gone
    with LiveIndex(base, background=False) as again:
        assert sorted(t.name for t in again._state.segments) == names
        assert _state(again) == expected
