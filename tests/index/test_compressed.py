"""The compressed index built in bounded memory (lsr.index.compressed): the exact results of
an Index, whatever the run and window sizes; clear errors; no half-written index."""

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.errors import InputError
from lsr.index import CompressedIndex, CompressedIndexWriter, Index, IndexBuilder
from lsr.index.errors import IndexFormatError, VocabularyMismatchError

N_DOCS, VOCAB = 6000, 300


def _corpus(seed=0, n_docs=N_DOCS):
    """Documents whose term frequencies fall off like text (a few terms in most documents,
    many rare ones) with some explicit zeros, and a few empty documents."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, VOCAB + 1) ** 0.8
    rows = []
    for d in range(n_docs):
        n = 0 if d % 997 == 5 else int(rng.integers(1, 60))
        terms = np.unique(rng.choice(VOCAB, size=n, p=p / p.sum()))
        rows.append((terms, rng.lognormal(0.0, 1.0, terms.size).astype(np.float32)))
    indptr = np.cumsum([0] + [t.size for t, _ in rows])
    data = np.concatenate([w for _, w in rows])
    data[::50] = 0.0  # explicit zeros are not postings
    m = sp.csr_array((data, np.concatenate([t for t, _ in rows]), indptr), shape=(n_docs, VOCAB))
    return m, [f"doc-{d}" for d in range(n_docs)]


VOCAB_TERMS = [f"t{i}" for i in range(VOCAB)]


def _write(path, docs, ids, batch=700, **options):
    with CompressedIndexWriter(path, VOCAB_TERMS, **options) as writer:
        for lo in range(0, docs.shape[0], batch):
            writer.add(docs[lo : lo + batch], ids[lo : lo + batch])
        writer.finish(metadata={"name": "test"})
    return CompressedIndex.load(path)


@pytest.fixture(scope="module")
def corpus():
    docs, ids = _corpus()
    index = IndexBuilder(VOCAB_TERMS).extend([(docs, ids)]).finish()
    rng = np.random.default_rng(1)
    queries = sp.random(40, VOCAB, density=0.05, random_state=rng, format="csr", dtype=np.float32)
    rare = sp.csr_array(  # a query of rare terms only: the kernel's sparse path
        (np.array([1.0, 2.0], np.float32), np.array([VOCAB - 2, VOCAB - 1]), np.array([0, 2])),
        shape=(1, VOCAB),
    )
    return docs, ids, index, sp.vstack([queries, rare], format="csr")


def _same(a, b):
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.docs, b.docs)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert [list(h.ids) for h in a] == [list(h.ids) for h in b]


@pytest.mark.parametrize(
    "options",
    [{}, {"run_postings": 5000, "merge_postings": 3000}, {"run_postings": 1, "block_size": 5}],
)
def test_search_equals_the_index_exactly(tmp_path, corpus, options):
    docs, ids, index, queries = corpus
    compressed = _write(tmp_path / "c", docs, ids, **options)
    assert (compressed.n_docs, compressed.n_postings) == (index.n_docs, index.n_postings)
    assert compressed.scale == index.scale
    # one range; ranges that cut blocks (some of 1 document: blocks straddle many)
    for compressed.range_docs in (1 << 17, 1000, 37, 1):
        for k in (1, 10, 10_000):
            expected = index.search(queries, k=k, algorithm="exhaustive")
            for threads in (1, 2):
                _same(compressed.search(queries, k=k, threads=threads), expected)
            for i in (0, 7, queries.shape[0] - 1):  # one query: the single-query path
                for threads in (1, 2):
                    _same(
                        compressed.search(queries[[i]], k=k, threads=threads),
                        index.search(queries[[i]], k=k, algorithm="exhaustive"),
                    )
    for t in range(VOCAB):
        got_docs, got_impacts = compressed.postings(t)
        lo, hi = index.offsets[t], index.offsets[t + 1]
        np.testing.assert_array_equal(got_docs, index.doc_numbers(lo, hi))
        np.testing.assert_array_equal(got_impacts, index.impact_values(lo, hi))
    assert compressed.metadata == {"name": "test"}


def test_allowed_documents_and_pruned_query_terms(tmp_path, corpus):
    docs, ids, index, queries = corpus
    compressed = _write(tmp_path / "c", docs, ids)
    allowed = np.random.default_rng(2).random(N_DOCS) < 0.3
    compressed.range_docs = 500
    for q in (queries, queries[[0]], queries[[queries.shape[0] - 1]]):
        _same(
            compressed.search(q, k=10, allowed=allowed),
            index.search(q, k=10, allowed=allowed, algorithm="exhaustive"),
        )
        _same(
            compressed.search(q, k=10, query_terms=3),
            index.search(q, k=10, query_terms=3, algorithm="exhaustive"),
        )


def test_the_files_do_not_depend_on_run_and_window_sizes(tmp_path, corpus):
    docs, ids, _, _ = corpus
    _write(tmp_path / "a", docs, ids)
    _write(tmp_path / "b", docs, ids, batch=333, run_postings=2000, merge_postings=1000)
    files = [json.loads((tmp_path / x / "manifest.json").read_text())["files"] for x in "ab"]
    assert files[0] == files[1]


def test_compression_beats_four_bytes_per_posting(tmp_path):
    docs, ids = _corpus(seed=3, n_docs=40_000)
    compressed = _write(tmp_path / "c", docs, ids, batch=10_000)
    assert compressed.bytes_per_posting < 2.5  # 1 byte impact + gaps of a few bits + blocks


def test_spill_files_are_removed_and_a_failed_build_leaves_nothing(tmp_path, corpus):
    docs, ids, _, _ = corpus
    _write(tmp_path / "c", docs, ids, run_postings=1000)
    assert sorted(os.listdir(tmp_path)) == ["c"]
    writer = CompressedIndexWriter(tmp_path / "d", VOCAB_TERMS, run_postings=1000)
    with pytest.raises(InputError, match="Duplicate document id"), writer:
        writer.add(docs[:2000], ids[:2000])
        writer.add(docs[:10], ids[:10])
    assert sorted(os.listdir(tmp_path)) == ["c"]


def test_bad_input_gets_clear_errors(tmp_path, corpus):
    docs, ids, _, queries = corpus
    writer = CompressedIndexWriter(tmp_path / "c", VOCAB_TERMS)
    with pytest.raises(InputError, match="3 document vectors but 2 doc ids"):
        writer.add(docs[:3], ids[:2])
    with pytest.raises(InputError, match="negative"):
        writer.add(sp.csr_array(-docs[:3].toarray()), ids[:3])
    with pytest.raises(InputError, match="columns|vocabulary|width"):
        writer.add(sp.csr_array(np.ones((1, VOCAB + 1), np.float32)), ["x"])
    writer.add(docs, ids)
    writer.finish()
    with pytest.raises(InputError, match="already finished"):
        writer.finish()
    with pytest.raises(FileExistsError, match="already exists"):
        CompressedIndexWriter(tmp_path / "c", VOCAB_TERMS)
    (tmp_path / "notes").mkdir()  # refused before a build, not after it
    with pytest.raises(FileExistsError, match="is not an index"):
        CompressedIndexWriter(tmp_path / "notes", VOCAB_TERMS, overwrite=True)
    with pytest.raises(InputError, match="run_postings"):
        CompressedIndexWriter(tmp_path / "e", VOCAB_TERMS, run_postings=0)
    with pytest.raises(InputError, match="vocabulary is empty"):
        CompressedIndexWriter(tmp_path / "e", [])
    index = CompressedIndex.load(tmp_path / "c")
    with pytest.raises(InputError, match="k must be"):
        index.search(queries, k=0)
    with pytest.raises(VocabularyMismatchError):
        index.search(queries, vocab=["other"] * VOCAB)
    with pytest.raises(InputError, match="term must be"):
        index.postings(VOCAB)
    with pytest.raises(IndexFormatError, match="compressed index: open it with"):
        Index.load(tmp_path / "c")


def test_damage_is_detected_on_open(tmp_path, corpus):
    docs, ids, _, _ = corpus
    _write(tmp_path / "c", docs, ids)
    words = tmp_path / "c" / "words.bin"
    data = bytearray(words.read_bytes())
    data[len(data) // 2] ^= 0xFF
    words.write_bytes(bytes(data))
    CompressedIndex.load(tmp_path / "c", verify=False)  # sizes are fine; only sha256 sees it
    with pytest.raises(IndexFormatError, match="fails its checksum"):
        CompressedIndex.load(tmp_path / "c")
    words.write_bytes(bytes(data[:-4]))
    with pytest.raises(IndexFormatError, match="truncated"):
        CompressedIndex.load(tmp_path / "c", verify=False)
    manifest = tmp_path / "c" / "manifest.json"
    body = json.loads(manifest.read_text())
    body["n_docs"] += 1
    manifest.write_text(json.dumps(body))
    with pytest.raises(IndexFormatError, match="fails its checksum"):
        CompressedIndex.load(tmp_path / "c")
    with pytest.raises(IndexFormatError, match="not an index"):
        CompressedIndex.load(tmp_path / "missing")


KILLED_BUILD = """
import sys
import numpy as np
sys.path.insert(0, "tests/index")
from test_compressed import _corpus, VOCAB_TERMS
from lsr.index import CompressedIndexWriter
docs, ids = _corpus(n_docs=2000)
w = CompressedIndexWriter(sys.argv[1], VOCAB_TERMS, run_postings=5000, overwrite=True)
w.add(docs, ids)
crash_from_here()
w.finish()
"""


def test_a_build_killed_at_any_step_leaves_the_old_index_or_the_new(tmp_path):
    """kill -9 at each file-system call of ``finish`` (over an existing index): the path holds
    the old index, whole, or the new one, never a mix; recovery removes the leftovers."""
    from lsr.index.storage import recover
    from tests.index.crash import CRASH_AT, ROOT

    old_docs, old_ids = _corpus(seed=5, n_docs=500)
    base = tmp_path / "base"
    _write(base / "idx", old_docs, old_ids)
    new_docs, new_ids = _corpus(n_docs=2000)
    crash_at, outcomes = 1, []
    while True:
        trial = tmp_path / f"crash{crash_at}"
        subprocess.run(["cp", "-r", str(base), str(trial)], check=True)
        done = subprocess.run(
            [sys.executable, "-c", CRASH_AT + KILLED_BUILD, str(trial / "idx"), str(crash_at)],
            capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode in (0, 9), done.stderr
        outcomes.append(done.returncode)
        recover(trial / "idx")
        index = CompressedIndex.load(trial / "idx")
        assert index.n_docs in (500, 2000)
        expected = new_docs if index.n_docs == 2000 else old_docs
        nnz = (expected.data != 0).sum()
        assert index.n_postings == nnz
        if done.returncode == 0:
            assert index.n_docs == 2000
            break
        crash_at += 1
    assert outcomes[-1] == 0 and len(outcomes) > 5


KILLED_SPILL = """
import os, sys
sys.path.insert(0, "tests/index")
from test_compressed import _corpus, VOCAB_TERMS
from lsr.index import CompressedIndexWriter
docs, ids = _corpus(n_docs=2000)
w = CompressedIndexWriter(sys.argv[1], VOCAB_TERMS, run_postings=5000)
w.add(docs, ids)  # spills runs
os._exit(9)  # killed while adding
"""


def test_spill_files_of_a_killed_build_are_removed_by_the_next_writer(tmp_path, corpus):
    from tests.index.crash import ROOT

    done = subprocess.run(
        [sys.executable, "-c", KILLED_SPILL, str(tmp_path / "c")],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 9, done.stderr
    [runs] = [p for p in tmp_path.iterdir() if p.name.startswith(".c.runs-")]
    assert (runs / "runs.docs").stat().st_size > 0
    docs, ids, index, queries = corpus
    compressed = _write(tmp_path / "c", docs, ids)
    assert sorted(os.listdir(tmp_path)) == ["c"]
    _same(compressed.search(queries, k=10), index.search(queries, k=10, algorithm="exhaustive"))


def test_a_full_disk_fails_the_build_cleanly_and_keeps_the_old_index(small_fs):
    """A real 3 MiB tmpfs: the spill or the merge meets ENOSPC; the error reaches the caller,
    the index already there is untouched and no spill files remain."""
    old_docs, old_ids = _corpus(seed=5, n_docs=300)
    before = _write(small_fs / "c", old_docs, old_ids)
    expected = before.search(old_docs[:20], k=5)
    docs, ids = _corpus(seed=6, n_docs=40_000)  # about 1M postings: 8 MB of runs
    writer = CompressedIndexWriter(small_fs / "c", VOCAB_TERMS, run_postings=50_000, overwrite=True)
    with pytest.raises(OSError) as caught:  # without a with block: the writer stops itself
        for lo in range(0, docs.shape[0], 5000):
            writer.add(docs[lo : lo + 5000], ids[lo : lo + 5000])
        writer.finish()
    assert caught.value.errno == errno.ENOSPC
    with pytest.raises(InputError, match="finished or failed"):
        writer.finish()  # a half-written run is never finished into an index
    assert sorted(os.listdir(small_fs)) == ["c"]
    _same(CompressedIndex.load(small_fs / "c").search(old_docs[:20], k=5), expected)
