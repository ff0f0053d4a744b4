"""A collection with extra representations: a second sparse one and a dense one in faiss.
Flat dense search equals a numpy brute force, over segments and the write buffer, with
deletes and filters; writes carry every representation through the log, flushes and
merges; damaged files are refused."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.errors import InputError
from lsr.index import IndexBuilder, LiveIndex
from lsr.index.check import check_collection
from lsr.index.collection import create_collection
from lsr.index.dense import DenseSpec, brute_force
from lsr.index.errors import IndexFormatError, WriteUnavailableError
from lsr.index.representations import NewExtra
from lsr.index.store import StoreSpec
from tests.conftest import fill_disk
from tests.index.crash import crash_loop

V1, V2, DIM = 40, 60, 12
EQ_ONE = {"field": "group", "eq": 1}


def _sparse(rng, n, vocab):
    m = sp.random(n, vocab, density=0.15, format="csr", random_state=rng, dtype=np.float32)
    m.data += 0.05
    return sp.csr_array(m)


def _dense(rng, n):
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class Model:
    """What the collection should hold: every live document's vectors and group."""

    def __init__(self):
        self.rows = {}

    def put(self, ids, a, b, c, groups):
        for i, d in enumerate(ids):
            self.rows[d] = (a[[i]].toarray()[0], b[[i]].toarray()[0], c[i], groups[i])

    def expected(self, name, q, k, group=None):
        ids = [d for d, r in self.rows.items() if group is None or r[3] == group]
        which = {"sp2": 1, "dn": 2}[name]
        matrix = np.stack([self.rows[d][which] for d in ids]).astype(np.float32)
        if name == "dn":
            numbers, scores = brute_force(matrix, q, k)
            return [[ids[j] for j in row if j >= 0] for row in numbers], scores
        s = (q.toarray() @ matrix.T).astype(np.float64)
        return s, ids


def _make(tmp_path, rng, n=150, spec=None):
    a, b, c = _sparse(rng, n, V1), _sparse(rng, n, V2), _dense(rng, n)
    ids = [f"d{i}" for i in range(n)]
    groups = [i % 3 for i in range(n)]
    builder = IndexBuilder([f"t{i}" for i in range(V1)], quantization="float32")
    builder.add(a, ids)
    extras = [
        NewExtra("sp2", b, vocab=[f"u{i}" for i in range(V2)], quantization="float32"),
        NewExtra("dn", c, index=spec or DenseSpec()),
    ]
    docs = [{"_id": d, "group": g} for d, g in zip(ids, groups, strict=True)]
    create_collection(tmp_path / "c", builder.finish(), docs, StoreSpec.parse("all"), {},
                      representations=extras, main="main")  # fmt: skip
    model = Model()
    model.put(ids, a, b, c, groups)
    return tmp_path / "c", model


def _check_dense(live, model, rng, k=8):
    q = _dense(rng, 4)
    for group, condition in ((None, None), (1, EQ_ONE)):
        got = live.search(q, k, filter=condition, representation="dn")
        want, scores = model.expected("dn", q, k, group)
        for i in range(len(q)):
            assert got[i].ids == want[i]
            assert np.allclose(got[i].scores, scores[i][: len(want[i])], atol=1e-5)


def _check_sparse_extra(live, model, rng, k=6):
    q = _sparse(rng, 3, V2)
    got = live.search(q, k, representation="sp2")
    s, ids = model.expected("sp2", q, k)
    for i in range(3):
        best = sorted((-s[i, j], j) for j in range(len(ids)) if s[i, j] > 0)[:k]
        assert got[i].scores == pytest.approx([-x for x, _ in best], rel=1e-5)
        assert set(got[i].ids) <= {ids[j] for j in range(len(ids)) if s[i, j] > 0}


def test_flat_equals_brute_force_through_writes_flush_merge_and_reopen(tmp_path):
    rng = np.random.default_rng(1)
    path, model = _make(tmp_path, rng)
    with LiveIndex(path, flush_threshold=40, background=False) as live:
        assert live.representations == {"main": "sparse", "sp2": "sparse", "dn": "dense"}
        _check_dense(live, model, rng)
        for step in range(5):
            ids = [f"n{step}-{i}" for i in range(20)] + [f"d{step * 7}"]  # one replaces
            a, b, c = _sparse(rng, 21, V1), _sparse(rng, 21, V2), _dense(rng, 21)
            groups = [1] * 21
            live.upsert(a, ids, [{"group": 1}] * 21, extras={"sp2": b, "dn": c})
            model.put(ids, a, b, c, groups)
            gone = [f"d{step * 11 + 1}"]
            live.delete(gone)
            for d in gone:
                model.rows.pop(d, None)
            _check_dense(live, model, rng)  # buffer and segments
            _check_sparse_extra(live, model, rng)
            if step % 2:
                live.flush()
        live.flush()
        live.force_merge(1)
        assert live.stats()["segments"] == 1
        _check_dense(live, model, rng)
        _check_sparse_extra(live, model, rng)
    with LiveIndex(path, read_only=True) as reader:
        _check_dense(reader, model, rng)


def test_log_replay_restores_every_representation(tmp_path):
    rng = np.random.default_rng(2)
    path, model = _make(tmp_path, rng)
    live = LiveIndex(path, background=False)
    a, b, c = _sparse(rng, 5, V1), _sparse(rng, 5, V2), _dense(rng, 5)
    ids = [f"w{i}" for i in range(5)]
    live.upsert(a, ids, [{"group": 2}] * 5, extras={"sp2": b, "dn": c})
    model.put(ids, a, b, c, [2] * 5)
    live._wal.close()  # a crash: no flush, no close; the log holds the write
    live._release()
    with LiveIndex(path, background=False) as again:
        _check_dense(again, model, rng)
        _check_sparse_extra(again, model, rng)
        assert again.search(c[:1], 1, representation="dn")[0].ids == ["w0"]


def test_writes_must_carry_every_representation(tmp_path):
    rng = np.random.default_rng(3)
    path, _ = _make(tmp_path, rng)
    with LiveIndex(path, background=False) as live:
        a, b, c = _sparse(rng, 2, V1), _sparse(rng, 2, V2), _dense(rng, 2)
        with pytest.raises(InputError, match="also indexes dense representation 'dn'"):
            live.upsert(a, ["x", "y"], extras={"sp2": b})
        with pytest.raises(InputError, match="unknown representation 'zz'"):
            live.upsert(a, ["x", "y"], extras={"sp2": b, "dn": c, "zz": c})
        with pytest.raises(InputError, match="have 5 dimensions; this collection.s have 12"):
            live.upsert(a, ["x", "y"], extras={"sp2": b, "dn": np.ones((2, 5), np.float32)})
        with pytest.raises(InputError, match="NaN"):
            bad = c.copy()
            bad[0, 0] = np.nan
            live.upsert(a, ["x", "y"], extras={"sp2": b, "dn": bad})
        with pytest.raises(InputError, match="1 'dn' vectors for 2"):
            live.upsert(a, ["x", "y"], extras={"sp2": b, "dn": c[:1]})
        assert live.stats()["last_seq"] == 0  # nothing was logged
        with pytest.raises(InputError, match="has no representation 'nope'"):
            live.search(c, 3, representation="nope")
        with pytest.raises(InputError, match="unknown dense search option"):
            live.search(c, 3, representation="dn", algorithm="maxscore")


@pytest.mark.parametrize("spec", ["hnsw:m=16,ef_search=64", "ivf:nlist=4,nprobe=4"])
def test_approximate_indexes_find_the_exact_neighbours_here(tmp_path, spec):
    rng = np.random.default_rng(4)
    path, model = _make(tmp_path, rng, n=400, spec=DenseSpec.parse(spec))
    with LiveIndex(path, background=False) as live:
        q = _dense(rng, 10)
        got = live.search(q, 10, representation="dn", filter=EQ_ONE)
        want, _ = model.expected("dn", q, 10, group=1)
        recall = np.mean([len(set(g.ids) & set(w)) / 10 for g, w in zip(got, want, strict=True)])
        assert recall >= 0.9  # with nprobe = nlist IVF is exact; HNSW on 400 documents nearly
        assert all(live.document(d)["group"] == 1 for g in got for d in g.ids)


def test_dense_spec_parsing():
    assert DenseSpec.parse("hnsw:m=8,ef_search=20") == DenseSpec("hnsw", m=8, ef_search=20)
    for bad in ("annoy", "hnsw:m=0", "ivf:nlist", "hnsw:size=3", "flat:m=x"):
        with pytest.raises(InputError):
            DenseSpec.parse(bad)


def test_a_damaged_dense_file_is_refused(tmp_path):
    rng = np.random.default_rng(5)
    path, _ = _make(tmp_path, rng)
    target = next(path.glob("segments/*/dense-dn.faiss"))
    data = bytearray(target.read_bytes())
    data[-5] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="checksum"):
        LiveIndex(path, read_only=True)
    report = check_collection(path)  # lsr check names it too
    assert any("dense-dn.faiss fails its checksum" in p for p in report.problems)
    target.write_bytes(bytes(data[:-10]))
    with pytest.raises(IndexFormatError, match="truncated"):
        LiveIndex(path, read_only=True)


CRASH_DURING_HYBRID_FLUSH_AND_MERGE = """
import numpy as np
from lsr.index import LiveIndex
from tests.index.test_dense_collection import _dense, _sparse, V1, V2

index = LiveIndex(sys.argv[1], background=False)
rng = np.random.default_rng(7)
ids = [f"m{i}" for i in range(10)]
index.upsert(_sparse(rng, 10, V1), ids, [{"group": 2}] * 10,
             extras={"sp2": _sparse(rng, 10, V2), "dn": _dense(rng, 10)})
index.delete(["d1", "d2"])
crash_from_here()
index.force_merge()
print("merged", calls)
"""


@pytest.mark.slow
def test_a_crash_at_every_step_of_a_hybrid_flush_and_merge_loses_nothing(tmp_path):
    """kill -9 equivalents at each file-system call of a flush and merge of a collection with
    extra representations: every acknowledged write is in every representation after."""
    rng = np.random.default_rng(8)
    (tmp_path / "base").mkdir()
    base, _ = _make(tmp_path / "base", rng, n=40)

    def check(trial, done):
        with LiveIndex(trial, background=False) as again:
            assert again.stats()["n_docs"] == 48
            for rep, query in (("dn", np.ones((1, DIM), np.float32)),
                               ("sp2", sp.csr_array(np.ones((1, V2), np.float32)))):  # fmt: skip
                found = set(again.search(query, 100, representation=rep)[0].ids)
                assert {f"m{i}" for i in range(10)} <= found and not {"d1", "d2"} & found
        assert not check_collection(trial).problems

    outcomes = crash_loop(base, tmp_path, CRASH_DURING_HYBRID_FLUSH_AND_MERGE, check)
    assert outcomes.count(9) >= 10 and outcomes[-1] == 0


def test_a_full_disk_during_a_hybrid_flush_and_merge_loses_nothing(small_fs, monkeypatch):
    """A real ENOSPC while a flush or a merge writes the extra representations: the commit
    point stays as it was, nothing half written is left, and once there is room again every
    representation holds every write."""
    rng = np.random.default_rng(9)
    path, model = _make(small_fs, rng, n=60)
    monkeypatch.setattr(LiveIndex, "_check_space", lambda self, needed, work: None)
    live = LiveIndex(path, background=False)
    for step in range(2):
        a, b, c = _sparse(rng, 20, V1), _sparse(rng, 20, V2), _dense(rng, 20)
        ids = [f"f{step}-{i}" for i in range(20)]
        live.upsert(a, ids, [{"group": 1}] * 20, extras={"sp2": b, "dn": c})
        model.put(ids, a, b, c, [1] * 20)
        if step == 0:
            live.flush()
    committed = sorted(os.listdir(path / "segments"))
    generation = live.stats()["generation"]
    filler = fill_disk(small_fs, chunk=512)
    with pytest.raises(WriteUnavailableError, match="disk is full"):
        live.flush()
    with pytest.raises(WriteUnavailableError, match="the merge was not written"):
        live.merge_segments(committed)
    assert live.stats()["generation"] == generation
    assert sorted(os.listdir(path / "segments")) == committed
    _check_dense(live, model, rng)  # the buffer still answers
    filler.unlink()
    live.flush()
    live.force_merge()
    live.close()
    with LiveIndex(path, read_only=True) as again:
        assert again.stats()["segments"] == 1
        _check_dense(again, model, rng)
        _check_sparse_extra(again, model, rng)
    assert not check_collection(path).problems
