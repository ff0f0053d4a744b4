"""LiveIndex: updates are searchable at once, survive reopening, and merge without loss."""

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.index import Index, LiveIndex
from lsr.index.segment import Segment
from tests.conftest import brute_force_topk, random_csr

V = 50


@pytest.fixture
def live(tmp_path, rng):
    docs = random_csr(rng, 200, V, 0.1, integer=True)
    Index.build(
        docs, [f"b{i}" for i in range(200)], [f"t{i}" for i in range(V)], quantization="float32"
    ).save(tmp_path / "idx")
    (tmp_path / "idx" / "encoder").mkdir()
    (tmp_path / "idx" / "encoder" / "encoder.json").write_text('{"type": "bm25"}')
    return tmp_path / "idx", docs


def _expected(docs: dict, queries, k):
    ids = list(docs)
    matrix = sp.vstack([docs[d] for d in ids], format="csr")
    return [[ids[j] for j in order] for order, _ in brute_force_topk(matrix, queries, k)]


def _state(base_docs):
    return {f"b{i}": base_docs[[i]] for i in range(base_docs.shape[0])}


def test_updates_are_searchable_and_survive_reopen_and_merge(live, rng):
    path, base_docs = live
    index = LiveIndex(path)
    state = _state(base_docs)
    new = random_csr(rng, 30, V, 0.2, integer=True)
    index.upsert(new, [f"n{i}" for i in range(30)])
    state.update({f"n{i}": new[[i]] for i in range(30)})
    replaced = random_csr(rng, 5, V, 0.3, integer=True)
    index.upsert(replaced, ["b0", "b1", "b2", "n0", "n1"])
    state.update({d: replaced[[i]] for i, d in enumerate(["b0", "b1", "b2", "n0", "n1"])})
    seq, gone = index.delete(["b3", "n2", "never-existed"])
    assert gone == ["b3", "n2"] and seq == 3
    del state["b3"], state["n2"]
    queries = random_csr(rng, 15, V, 0.2, integer=True)

    def check(ix):
        got = ix.search(queries, 10)
        want = _expected(state, queries, 10)
        for g, w in zip(got, want, strict=True):
            assert sorted(g.ids) == sorted(w)  # equal sets; equal scores may order differently
        assert ix.stats()["n_docs"] == len(state)
        assert ix.get("b3") is None and ix.get("n2") is None
        assert ix.get("n0") == {
            f"t{t}": float(w)
            for t, w in zip(replaced[[3]].indices, replaced[[3]].data, strict=True)
        }

    check(index)
    index.close()
    reopened = LiveIndex(path)  # replays the write-ahead log
    check(reopened)
    reopened.flush()  # the buffer becomes a second segment, the base's deletions a bitmap
    stats = reopened.stats()
    assert stats["buffer_docs"] == 0 and stats["log_records"] == 0 and stats["segments"] == 2
    assert stats["deleted_docs"] == 4  # b0, b1, b2 replaced, b3 deleted
    check(reopened)
    reopened.close()
    reopened = LiveIndex(path)  # from the commit point alone: the log holds nothing
    check(reopened)
    reopened.force_merge()
    stats = reopened.stats()
    assert stats["segments"] == 1 and stats["deleted_docs"] == 0
    assert (path / "encoder" / "encoder.json").is_file()  # what lives beside the index is kept
    check(reopened)
    reopened.close()
    check(LiveIndex(path))


def test_a_failed_flush_or_merge_keeps_the_last_commit_and_the_log(live, rng, monkeypatch):
    path, _ = live
    index = LiveIndex(path, background=False)
    index.upsert(random_csr(rng, 3, V, 0.3), ["y1", "y2", "y3"])
    generation = index.stats()["generation"]

    def boom(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(Segment, "write", boom)
        with pytest.raises(OSError, match="disk full"):
            index.flush()
    stats = index.stats()
    assert stats["flushes"]["failures"] == 1 and not index.needs_flush()
    assert stats["log_records"] == 1 and stats["buffer_docs"] == 3
    index.upsert(random_csr(rng, 1, V, 0.3), ["y4"])  # still writable after the failed flush
    index.flush()
    assert index.stats()["segments"] == 2 and index.stats()["flushes"]["failures"] == 0
    generation = index.stats()["generation"]
    with monkeypatch.context() as m:
        m.setattr(Segment, "write", boom)
        with pytest.raises(OSError, match="disk full"):
            index.force_merge()
    assert index.stats()["generation"] == generation and index.stats()["segments"] == 2
    assert index.stats()["merges"]["failures"] == 1
    committed = sorted(t.name for t in index._state.segments)
    index.close()
    assert sorted(p.name for p in (path / "segments").iterdir()) == committed  # no leftovers
    again = LiveIndex(path)
    assert again.get("y2") is not None and again.get("y4") is not None
    assert again.stats()["n_docs"] == 204


def test_bad_updates(live, rng):
    path, _ = live
    index = LiveIndex(path)
    with pytest.raises(ValueError, match="one id per vector"):
        index.upsert(random_csr(rng, 2, V, 0.3), ["a"])
    with pytest.raises(ValueError, match="unique"):
        index.upsert(random_csr(rng, 2, V, 0.3), ["a", "a"])
    with pytest.raises(ValueError, match="negative"):
        index.upsert(sp.csr_array(-np.ones((1, V), np.float32)), ["a"])
    assert index.stats()["last_seq"] == 0  # nothing was logged


def test_crash_between_renames_is_recovered_on_open(live, rng):
    path, _ = live
    index = LiveIndex(path)
    index.upsert(random_csr(rng, 2, V, 0.3), ["z1", "z2"])
    index.close()
    # the state a crash leaves between "old index moved aside" and "new index moved in"
    path.rename(path.parent / f".{path.name}.old-12345678")
    (path.parent / f".{path.name}.tmp-87654321").mkdir()
    again = LiveIndex(path)
    assert again.get("z1") is not None and again.stats()["n_docs"] == 202
    again.close()  # and with it the writer's lock file beside the directory
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_postings_of_counts_every_list_a_search_may_score(live, rng):
    """What an exhaustive search of some terms costs: their lists in every segment (deleted
    documents included) plus every posting of the write buffer."""
    path, base_docs = live
    with LiveIndex(path, background=False) as index:
        new = random_csr(rng, 20, V, 0.2, integer=True)
        index.upsert(new[:10], [f"n{i}" for i in range(10)])
        index.flush()
        index.upsert(new[10:], [f"n{i}" for i in range(10, 20)])
        index.delete(["b3"])
        terms = np.array([0, 7, 7, 31])
        in_base = sum(int((base_docs[:, [t]] != 0).sum()) for t in terms)
        in_flushed = sum(int((new[:10][:, [t]] != 0).sum()) for t in terms)
        assert index.postings_of(terms) == in_base + in_flushed + new[10:].nnz
