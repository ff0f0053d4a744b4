"""Merges build the new base without the write lock: writes made while a merge runs are
acknowledged at once, kept in the new base's log, and survive a crash at any step."""

import threading

import pytest

from lsr.index import LiveIndex
from lsr.index.inverted import IndexBuilder
from tests.conftest import random_csr
from tests.index.crash import crash_loop
from tests.index.test_wal import V, _write


def _state(live):
    """Every live document's vector, by id (what a brute force over live documents reads)."""
    return {d: live.get(d) for d in sorted(_ids(live)) if live.get(d) is not None}


def _ids(live):
    return {*live.base.doc_ids.to_pylist(), *live._buffer.row_of}


def test_writes_go_on_while_a_merge_builds(base, rng, monkeypatch):
    live = LiveIndex(base, merge_threshold=10**9)
    _write(live, rng, [f"a{i}" for i in range(5)])
    live.delete(["b3"])
    building, release = threading.Event(), threading.Event()
    finish = IndexBuilder.finish

    def slow_finish(self, metadata=None):
        building.set()
        assert release.wait(30)
        return finish(self, metadata)

    monkeypatch.setattr(IndexBuilder, "finish", slow_finish)
    merger = threading.Thread(target=live.merge)
    merger.start()
    assert building.wait(30)
    # the merge is stuck in its build: writes and searches must not wait for it
    seqs = [_write(live, rng, [f"c{i}"]) for i in range(4)]
    live.delete(["b5", "a1"])
    _write(live, rng, ["a2"])  # replaces a version the merge is folding in
    q = random_csr(rng, 3, V, 0.3)
    during = live.search(q, 10)
    expected = _state(live)
    release.set()
    merger.join(30)
    assert not merger.is_alive()
    stats = live.stats()
    assert stats["log_records"] == 6 and stats["merged_seq"] == seqs[0] - 1
    assert _state(live) == expected
    after = live.search(q, 10)
    assert [h.ids for h in after] == [h.ids for h in during]
    live.close()
    with LiveIndex(base) as again:
        assert _state(again) == expected
        again.merge()
        assert again.stats()["log_records"] == 0 and _state(again) == expected


CRASH_WITH_WRITES_DURING_MERGE = """
import numpy as np
from lsr.index import LiveIndex
from lsr.index.inverted import IndexBuilder
from tests.conftest import random_csr

index = LiveIndex(sys.argv[1])
rng = np.random.default_rng(7)
index.upsert(random_csr(rng, 5, 40, 0.3, integer=True), [f"m{i}" for i in range(5)])
index.delete(["b1"])
finish = IndexBuilder.finish

def finish_with_writes(self, metadata=None):  # writes acknowledged while the merge builds
    index.upsert(random_csr(rng, 3, 40, 0.3, integer=True), ["w0", "w1", "m0"])
    index.delete(["b2", "m1"])
    print("acked", flush=True)
    return finish(self, metadata)

IndexBuilder.finish = finish_with_writes
crash_from_here()
index.merge()
print("merged", calls)
"""


@pytest.mark.slow
def test_a_crash_at_every_step_of_a_merge_keeps_the_writes_made_during_it(base, tmp_path):
    def check(trial, done):
        with LiveIndex(trial) as again:
            assert again.get("m2") is not None and again.get("b1") is None
            if "acked" in done.stdout:  # the writes during the merge were acknowledged
                assert again.get("w0") is not None and again.get("w1") is not None
                assert again.get("b2") is None and again.get("m1") is None
                assert again.stats()["n_docs"] == 50 + 5 - 1 + 2 - 2

    outcomes = crash_loop(base, tmp_path, CRASH_WITH_WRITES_DURING_MERGE, check)
    assert outcomes.count(9) >= 5 and outcomes[-1] == 0
    assert all(code == 9 for code in outcomes[:-1])
