"""Index top-k equals the scipy brute-force top-k, and bad input is refused clearly."""

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.index import Index, IndexBuilder, VocabularyMismatchError
from tests.conftest import brute_force_topk, random_csr

N_DOCS, VOCAB = 700, 300


def _index(rng, quantization="float32", integer=True, chunk_size=97):
    docs = random_csr(rng, N_DOCS, VOCAB, 0.03, integer=integer)
    ids = [f"doc-{i}" for i in range(N_DOCS)]
    vocab = [f"term{t}" for t in range(VOCAB)]
    idx = Index.build(docs, ids, vocab, quantization=quantization, chunk_size=chunk_size)
    return docs, idx


def _as_numbers(hits):
    return [int(d.split("-")[1]) for d in hits.ids]


@pytest.mark.parametrize("k", [1, 10, 100])
def test_exact_topk_with_ties_matches_brute_force(rng, k):
    docs, idx = _index(rng)
    queries = random_csr(rng, 60, VOCAB, 0.02, integer=True, max_value=3)
    ref = brute_force_topk(docs, queries, k + 1)
    results = idx.search(queries, k)
    ties = 0
    for i, (order, scores) in enumerate(ref):
        assert _as_numbers(results[i]) == order[:k]
        assert results[i].scores == scores[:k].tolist()
        ties += len(scores) - len(set(scores.tolist()))  # ties inside or at the edge of the top k
    assert ties > 0, "the data must contain ties for this test to check tie-breaking"


def test_single_query_path_equals_batch_path(rng):
    _, idx = _index(rng, integer=False)
    queries = random_csr(rng, 20, VOCAB, 0.05)
    batch = idx.search(queries, 15)
    for i in range(20):
        assert idx.search(queries[[i]], 15)[0] == batch[i]


def test_float_weights_match_brute_force_up_to_rounding(rng):
    docs, idx = _index(rng, integer=False)
    queries = random_csr(rng, 40, VOCAB, 0.05)
    ref = brute_force_topk(docs, queries, 20)
    for i, (order, scores) in enumerate(ref):
        got = idx.search(queries[[i]], 20)[0]
        assert np.allclose(got.scores, scores, rtol=1e-5)
        # identical sets except where two reference scores are within rounding of each other
        assert set(_as_numbers(got)) == set(order) or np.any(
            np.isclose(np.diff(scores), 0, atol=1e-5)
        )


def test_uint8_index_matches_brute_force_on_dequantized_weights(rng):
    docs, idx = _index(rng, quantization="uint8", integer=False)
    assert idx.quantization == "uint8" and idx.packed and idx.impact_values().dtype == np.uint8
    assert idx.docs.nbytes == 4 * idx.n_postings  # one word per posting
    dequant = sp.csr_array(docs)
    dequant.data = np.clip(
        np.floor(dequant.data / np.float32(idx.scale) + 0.5), 1, 255
    ) * np.float32(idx.scale)
    queries = random_csr(rng, 30, VOCAB, 0.05)
    ref = brute_force_topk(dequant, queries, 10)
    for i, (order, scores) in enumerate(ref):
        got = idx.search(queries[[i]], 10)[0]
        assert np.allclose(got.scores, scores, rtol=1e-4)
        assert _as_numbers(got)[:3] == order[:3] or np.any(
            np.isclose(np.diff(scores[:4]), 0, rtol=1e-4)
        )


def test_empty_queries_and_unknown_terms_return_no_hits(rng):
    docs, idx = _index(rng)
    unused = np.flatnonzero(np.diff(sp.csc_array(docs).indptr) == 0)
    rows, cols = [], []
    if unused.size:
        rows, cols = [1], [int(unused[0])]  # a term no document has
    q = sp.csr_array((np.ones(len(rows), np.float32), (rows, cols)), shape=(3, VOCAB))
    res = idx.search(q, 10)
    assert res[0] == ([], []) and res[1] == ([], []) and res[2] == ([], [])
    assert idx.search(sp.csr_array((1, VOCAB), dtype=np.float32), 5)[0] == ([], [])


def test_k_larger_than_corpus_returns_every_matching_doc(rng):
    docs, idx = _index(rng)
    queries = random_csr(rng, 5, VOCAB, 0.3, integer=True)
    ref = brute_force_topk(docs, queries, 10_000)
    res = idx.search(queries, 10_000)
    for i, (order, _) in enumerate(ref):
        assert _as_numbers(res[i]) == order
        assert len(order) <= N_DOCS


def test_builder_streams_batches_like_one_build(rng):
    docs, idx = _index(rng, chunk_size=N_DOCS)
    builder = IndexBuilder(idx.vocab, quantization="float32")
    for lo in range(0, N_DOCS, 64):
        builder.add(docs[lo : lo + 64], [f"doc-{i}" for i in range(lo, min(lo + 64, N_DOCS))])
    other = builder.finish()
    assert np.array_equal(other.offsets, idx.offsets)
    assert np.array_equal(other.docs, idx.docs)
    assert np.array_equal(other.impacts, idx.impacts)


def test_document_vector_round_trips(rng):
    docs, idx = _index(rng)
    d = 17
    row = docs[[d]]
    expect = {f"term{t}": float(w) for t, w in zip(row.indices, row.data, strict=True)}
    assert idx.document_vector(d) == expect
    assert idx.doc_index("doc-17") == 17


def test_vocabulary_mismatch_is_refused(rng):
    _, idx = _index(rng)
    with pytest.raises(VocabularyMismatchError, match="columns but the index vocabulary"):
        idx.search(sp.csr_array((1, VOCAB + 1), dtype=np.float32), 5)
    with pytest.raises(VocabularyMismatchError, match="differs from the index"):
        idx.search(
            sp.csr_array((1, VOCAB), dtype=np.float32), 5, vocab=[f"x{t}" for t in range(VOCAB)]
        )
    idx.search(sp.csr_array((1, VOCAB), dtype=np.float32), 5, vocab=idx.vocab)


@pytest.mark.parametrize(
    ("query", "k", "error", "message"),
    [
        (np.ones((1, VOCAB)), 5, TypeError, "scipy.sparse CSR"),
        (sp.csr_array(-np.ones((1, VOCAB), np.float32)), 5, ValueError, "negative weights"),
        (sp.csr_array(np.full((1, VOCAB), np.nan, np.float32)), 5, ValueError, "NaN"),
        (sp.csr_array((1, VOCAB), dtype=np.float32), 0, ValueError, "positive integer"),
        (sp.csr_array((1, VOCAB), dtype=np.float32), 2.5, ValueError, "positive integer"),
    ],
)
def test_bad_queries_get_clear_errors(rng, query, k, error, message):
    _, idx = _index(rng)
    with pytest.raises(error, match=message):
        idx.search(query, k)


def test_bad_build_input_gets_clear_errors(rng):
    docs = random_csr(rng, 4, 10, 0.5)
    vocab = [str(i) for i in range(10)]
    with pytest.raises(ValueError, match="Duplicate document id 'a'"):
        Index.build(docs, ["a", "b", "a", "c"], vocab)
    with pytest.raises(ValueError, match="4 document vectors but 3 doc ids"):
        Index.build(docs, ["a", "b", "c"], vocab)
    with pytest.raises(VocabularyMismatchError):
        Index.build(docs, list("abcd"), vocab[:5])
    with pytest.raises(ValueError, match="quantization must be one of"):
        Index.build(docs, list("abcd"), vocab, quantization="int4")
    with pytest.raises(ValueError, match="vocabulary is empty"):
        IndexBuilder([])
    builder = IndexBuilder(vocab)
    builder.add(docs[:2], ["a", "b"])
    with pytest.raises(ValueError, match="Duplicate document id 'b'"):
        builder.add(docs[2:], ["b", "z"])


def test_empty_index_searches_to_nothing():
    idx = IndexBuilder(["a", "b"]).finish()
    assert idx.n_docs == 0
    assert idx.search(sp.csr_array(np.ones((2, 2), np.float32)), 3)[1] == ([], [])


def test_threads_limit_the_batch_and_are_validated(rng):
    import numba

    docs = random_csr(rng, 300, 40, 0.2)
    idx = Index.build(docs, [f"d{i}" for i in range(300)], [f"t{i}" for i in range(40)])
    queries = random_csr(rng, 20, 40, 0.3)
    before = numba.get_num_threads()
    one = idx.search(queries, 5, threads=1)
    assert numba.get_num_threads() == before  # the caller's setting is restored
    all_threads = idx.search(queries, 5)
    assert np.array_equal(one.docs, all_threads.docs)
    assert np.array_equal(one.docs, idx.search(queries, 5, threads=64).docs)  # capped
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            idx.search(queries, 5, threads=bad)


def test_single_query_pads_missing_hits(rng):
    """The single-query path fills the slots after the hits with -1 and 0."""
    docs, idx = _index(rng)
    term = int(np.argmax(np.diff(sp.csc_array(docs).indptr) > 0))
    q = sp.csr_array((np.ones(1, np.float32), ([0], [term])), shape=(1, VOCAB))
    res = idx.search(q, N_DOCS + 5)
    n = int(res.counts[0])
    assert 0 < n < N_DOCS + 5 and res.docs.shape == (1, N_DOCS)
    assert (res.docs[0, n:] == -1).all() and (res.scores[0, n:] == 0).all()
    assert (res.docs[0, :n] >= 0).all() and (res.scores[0, :n] > 0).all()


@pytest.mark.parametrize("quantization", ["uint8", "float32"])
def test_dense_rows_leave_results_unchanged(rng, monkeypatch, quantization):
    """Frequent terms scored through dense rows give bit-identical hits to their postings."""
    import lsr.index.inverted as inverted

    docs = random_csr(rng, 400, VOCAB, 0.25)
    ids, vocab = [f"d{i}" for i in range(400)], [f"t{i}" for i in range(VOCAB)]
    queries = random_csr(rng, 40, VOCAB, 0.3)
    with_rows = Index.build(docs, ids, vocab, quantization=quantization)
    res = with_rows.search(queries, 10, algorithm="exhaustive")  # rows are built on first use
    monkeypatch.setattr(inverted, "DENSE_ROWS_MAX_DOCS", 0)
    without = Index.build(docs, ids, vocab, quantization=quantization)
    ref = without.search(queries, 10, algorithm="exhaustive")
    assert with_rows._postings.dense_table.shape[0] > 0
    assert without._postings.dense_table.shape[0] == 0
    assert np.array_equal(ref.docs, res.docs) and np.array_equal(ref.scores, res.scores)
    for i in range(5):
        single = with_rows.search(queries[[i]], 10, algorithm="exhaustive")
        assert np.array_equal(single.docs[0], ref.docs[i])
        assert np.array_equal(single.scores[0], ref.scores[i])


def test_dense_rows_on_a_collection_where_auto_learns(rng, monkeypatch):
    """Above ``AUTO_TAAT_MIN_DOCS`` documents rows are built too, and every exact kernel that
    adds them (exhaustive, ranges' fallback) or not (term-at-a-time MaxScore) returns the same
    hits as the index without rows."""
    import lsr.index.inverted as inverted
    from lsr.kernels.dispatch import AUTO_TAAT_MIN_DOCS

    n_docs, vocab_size = AUTO_TAAT_MIN_DOCS + 3_000, 60
    docs = random_csr(rng, n_docs, vocab_size, 0.2)  # every term in 1/5 of the documents
    ids, vocab = [f"d{i}" for i in range(n_docs)], [f"t{i}" for i in range(vocab_size)]
    queries = random_csr(rng, 12, vocab_size, 0.3)
    with_rows = Index.build(docs, ids, vocab)
    table = with_rows._postings.dense_table
    assert table.shape[0] > 0 and table.shape[1] == n_docs
    monkeypatch.setattr(inverted, "DENSE_ROWS_MAX_DOCS", n_docs - 1)
    without = Index.build(docs, ids, vocab)
    assert without._postings.dense_table.shape[0] == 0
    ref = without.search(queries, 10, algorithm="exhaustive")
    for algorithm in ("exhaustive", "maxscore-taat", "ranges", "auto"):
        res = with_rows.search(queries, 10, algorithm=algorithm)
        assert np.array_equal(ref.docs, res.docs) and np.array_equal(ref.scores, res.scores)
        single = with_rows.search(queries[[0]], 10, algorithm=algorithm)
        assert single[0] == ref[0]
