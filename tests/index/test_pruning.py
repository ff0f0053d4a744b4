"""MaxScore (both kinds) and block-max WAND return exactly the exhaustive top-k (ids, scores)."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsr.index import Index
from tests.conftest import random_csr

EXACT = ("exhaustive", "maxscore", "maxscore-taat", "bmw", "ranges")
PRUNED = EXACT[1:]


def _zipf_index(rng, n_docs=3000, vocab=400, nnz=30, quantization="uint8", integer=False):
    """Documents with a Zipfian term distribution, so postings lists are long and skewed."""
    p = 1.0 / np.arange(1, vocab + 1) ** 1.1
    p /= p.sum()
    rows, cols = [], []
    for d in range(n_docs):
        terms = np.unique(rng.choice(vocab, size=nnz, p=p))
        rows += [d] * len(terms)
        cols += terms.tolist()
    data = (
        rng.integers(1, 6, len(rows)).astype(np.float32)
        if integer
        else rng.gamma(2.0, 1.0, len(rows)).astype(np.float32)
    )
    docs = sp.csr_array((data, (rows, cols)), shape=(n_docs, vocab))
    return docs, Index.build(
        docs,
        [f"d{i}" for i in range(n_docs)],
        [f"t{i}" for i in range(vocab)],
        quantization=quantization,
    )


def _same(results_a, results_b):
    assert np.array_equal(results_a.counts, results_b.counts)
    for i in range(len(results_a)):
        n = results_a.counts[i]
        assert np.array_equal(results_a.docs[i, :n], results_b.docs[i, :n]), i
        assert np.array_equal(results_a.scores[i, :n], results_b.scores[i, :n]), i


@pytest.mark.parametrize("quantization", ["uint8", "float32"])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_pruned_equals_exhaustive_on_skewed_data(rng, quantization, k):
    _, idx = _zipf_index(rng, quantization=quantization)
    for n_terms in (2, 5, 40):
        queries = random_csr(rng, 30, 400, n_terms / 400)
        ref = idx.search(queries, k, algorithm="exhaustive")
        for algo in (*PRUNED, "auto"):
            _same(ref, idx.search(queries, k, algorithm=algo))
            single = idx.search(queries[[3]], k, algorithm=algo)
            assert single[0] == ref[3]


def test_pruned_equals_exhaustive_across_many_windows(rng):
    _, idx = _zipf_index(rng, n_docs=12_000, vocab=300, nnz=12)  # several MaxScore windows
    queries = random_csr(rng, 20, 300, 25 / 300)
    ref = idx.search(queries, 10, algorithm="exhaustive")
    for algo in PRUNED:
        _same(ref, idx.search(queries, 10, algorithm=algo))


def test_ties_are_broken_identically(rng):
    _, idx = _zipf_index(rng, integer=True, quantization="float32")
    queries = sp.csr_array(np.ones((1, 400), np.float32) * (np.arange(400) < 3))
    ref = idx.search(queries, 50, algorithm="exhaustive")
    scores = ref.scores[0, : ref.counts[0]]
    assert len(set(scores.tolist())) < len(scores)  # many equal scores
    for algo in PRUNED:
        _same(ref, idx.search(queries, 50, algorithm=algo))


@st.composite
def index_and_queries(draw):
    n_docs = draw(st.integers(1, 60))
    vocab = draw(st.integers(1, 12))
    density = draw(st.floats(0.05, 0.9))
    seed = draw(st.integers(0, 2**31))
    integer = draw(st.booleans())
    rng = np.random.default_rng(seed)
    docs = random_csr(rng, n_docs, vocab, density, integer=integer, max_value=3)
    queries = random_csr(
        rng, draw(st.integers(1, 6)), vocab, draw(st.floats(0.1, 1.0)), integer=integer
    )
    k = draw(st.integers(1, 70))
    quant = draw(st.sampled_from(["uint8", "float32"]))
    return docs, queries, k, quant


def build_numbered(docs: sp.csr_array, quantization: str) -> Index:
    """An index whose doc ids and terms are the row and column numbers."""
    return Index.build(
        docs,
        [str(i) for i in range(docs.shape[0])],
        [str(t) for t in range(docs.shape[1])],
        quantization=quantization,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index_and_queries())
def test_property_all_exact_algorithms_agree(case):
    docs, queries, k, quant = case
    idx = build_numbered(docs, quant)
    ref = idx.search(queries, k, algorithm="exhaustive")
    for algo in PRUNED:
        _same(ref, idx.search(queries, k, algorithm=algo))
        for i in range(queries.shape[0]):
            assert idx.search(queries[[i]], k, algorithm=algo)[0] == ref[i]


def test_approximate_modes(rng):
    _, idx = _zipf_index(rng)
    queries = random_csr(rng, 40, 400, 30 / 400)
    ref = idx.search(queries, 10, algorithm="exhaustive")
    # with pruning off, approximate settings are exact
    for algo in PRUNED:
        _same(ref, idx.search(queries, 10, algorithm=algo, theta=1.0))
    with pytest.raises(ValueError, match="exact only"):
        idx.search(queries, 10, algorithm="maxscore-taat", theta=1.5)
    _same(ref, idx.search(queries, 10, query_terms=10_000))
    for algo in ("maxscore", "bmw", "ranges"):
        loose = idx.search(queries, 10, algorithm=algo, theta=1.5)
        recall = np.mean(
            [len(set(loose[i].ids) & set(ref[i].ids)) / max(len(ref[i].ids), 1) for i in range(40)]
        )
        assert 0.3 < recall <= 1.0, algo
    few = idx.search(queries, 10, query_terms=3)
    assert all(len(few[i].ids) <= 10 for i in range(40))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"algorithm": "wand2"}, "algorithm must be one of"),
        ({"theta": 0.5}, "theta must be a number >= 1"),
        ({"algorithm": "exhaustive", "theta": 2.0}, "needs maxscore, bmw or ranges"),
        ({"query_terms": 0}, "query_terms must be a positive integer"),
    ],
)
def test_bad_search_options(rng, kwargs, message):
    _, idx = _zipf_index(rng, n_docs=50)
    with pytest.raises(ValueError, match=message):
        idx.search(random_csr(rng, 1, 400, 0.05), 5, **kwargs)


def test_blocks_survive_save_and_load(rng, tmp_path):
    _, idx = _zipf_index(rng, n_docs=500)
    idx.save(tmp_path / "i")
    again = Index.load(tmp_path / "i")
    assert np.array_equal(again.blocks.max, idx.blocks.max)
    assert np.array_equal(again.blocks.offsets, idx.blocks.offsets)
    queries = random_csr(rng, 10, 400, 0.05)
    _same(idx.search(queries, 10, algorithm="bmw"), again.search(queries, 10, algorithm="bmw"))


def test_auto_picks_term_at_a_time_maxscore_on_large_collections():
    from lsr.kernels.dispatch import (
        AUTO,
        AUTO_TAAT_MIN_DOCS,
        EXHAUSTIVE,
        MAXSCORE,
        MAXSCORE_TAAT,
        resolve,
    )

    terms = np.arange(5, dtype=np.int32)
    assert resolve(AUTO, terms, 1.0, AUTO_TAAT_MIN_DOCS) == MAXSCORE_TAAT
    assert resolve(AUTO, terms, 1.0, AUTO_TAAT_MIN_DOCS - 1) == EXHAUSTIVE
    assert resolve(AUTO, terms, 1.5, AUTO_TAAT_MIN_DOCS) == MAXSCORE
    assert resolve(EXHAUSTIVE, terms, 1.0, AUTO_TAAT_MIN_DOCS) == EXHAUSTIVE


def test_term_at_a_time_maxscore_with_heavy_rare_and_light_common_terms(rng):
    """Light terms in every document and heavy rare ones: most lists become non-essential,
    short and long ones (bounded per posting and per block), and still nothing changes."""
    n_docs, vocab = 20_000, 60
    common = rng.random((n_docs, 10)) < 0.9
    rare = rng.random((n_docs, 50)) < 0.01
    light = common * rng.uniform(0.1, 0.5, (n_docs, 10))
    heavy = rare * rng.uniform(1.0, 9.0, (n_docs, 50))
    weights = np.hstack([light, heavy]).astype(np.float32)
    idx = build_numbered(sp.csr_array(weights), "uint8")
    queries = random_csr(rng, 25, vocab, 0.6)
    for k in (1, 10, 1000):
        _same(
            idx.search(queries, k, algorithm="exhaustive"),
            idx.search(queries, k, algorithm="maxscore-taat"),
        )


def test_range_pruning_on_a_reordered_topical_collection():
    """On topical documents renumbered by bisection, range bounds prune whole ranges: the
    range search and term-at-a-time MaxScore (whose lazy lists are read in candidate ranges
    only) still return exactly the exhaustive top-k, batched and one query at a time, and
    the approximate range search only ever returns documents it scored."""
    from lsr.index.reorder import reorder
    from tests.index.test_reorder import _index, _topical

    m, queries = _topical(n_docs=6000)
    idx, _ = reorder(_index(m, "float32"))
    for k in (1, 10, 200):
        ref = idx.search(queries, k, algorithm="exhaustive")
        for algo in ("ranges", "maxscore-taat"):
            _same(ref, idx.search(queries, k, algorithm=algo))
            assert idx.search(queries[[7]], k, algorithm=algo)[0] == ref[7]
    every = idx.search(queries, idx.n_docs, algorithm="exhaustive")
    loose = idx.search(queries, 10, algorithm="ranges", theta=2.0)
    recall = []
    for i in range(queries.shape[0]):
        n = every.counts[i]
        exact = dict(zip(every.docs[i, :n].tolist(), every.scores[i, :n].tolist(), strict=True))
        got = loose.docs[i, : loose.counts[i]].tolist()
        assert [exact[d] for d in got] == loose.scores[i, : len(got)].tolist()
        recall.append(len(set(got) & set(every.docs[i, :10].tolist())) / 10)
    assert 0.3 < np.mean(recall) <= 1.0
