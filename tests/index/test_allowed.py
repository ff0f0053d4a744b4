"""Searches restricted to allowed documents (deletes, filters) inside the kernels: every
algorithm returns exactly the top-k of the allowed documents, in one pass."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsr.errors import InputError, InputTypeError
from lsr.index import ClusteredIndex
from tests.conftest import random_csr
from tests.index.test_pruning import EXACT, _zipf_index

ALGORITHMS = (*EXACT, "auto")


def _reference(idx, queries, k, allowed):
    """The top-k of the allowed documents: the unrestricted exhaustive ranking of every
    document, with the excluded ones dropped (ties keep their doc-number order)."""
    full = idx.search(queries, idx.n_docs, algorithm="exhaustive")
    out = []
    for i in range(len(full)):
        n = full.counts[i]
        docs, scores = full.docs[i, :n], full.scores[i, :n]
        keep = allowed[docs]
        out.append((docs[keep][:k].tolist(), scores[keep][:k].tolist()))
    return out


def _assert_matches(results, reference):
    assert len(results) == len(reference)
    for i, (docs, scores) in enumerate(reference):
        n = results.counts[i]
        assert results.docs[i, :n].tolist() == docs, i
        assert results.scores[i, :n].tolist() == scores, i


@pytest.mark.parametrize("quantization", ["uint8", "float32"])
@pytest.mark.parametrize("fraction", [0.0, 0.03, 0.5, 0.97, 1.0])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_every_algorithm_returns_the_allowed_top_k(rng, quantization, fraction, k):
    _, idx = _zipf_index(rng, quantization=quantization)
    allowed = rng.random(idx.n_docs) < fraction
    for n_terms in (2, 8, 60):  # sparse and dense term-at-a-time paths, short and long DAAT
        queries = random_csr(rng, 12, 400, n_terms / 400)
        ref = _reference(idx, queries, k, allowed)
        for algo in ALGORITHMS:
            _assert_matches(idx.search(queries, k, algorithm=algo, allowed=allowed), ref)
            single = idx.search(queries[[5]], k, algorithm=algo, allowed=allowed)
            _assert_matches(single, ref[5:6])


def test_half_deleted_still_returns_k_hits(rng):
    """With half the documents excluded a query still gets k hits (no k + deleted re-ask)."""
    _, idx = _zipf_index(rng)
    allowed = np.arange(idx.n_docs) % 2 == 0
    queries = random_csr(rng, 10, 400, 30 / 400)
    for algo in ALGORITHMS:
        res = idx.search(queries, 10, algorithm=algo, allowed=allowed)
        assert (res.counts == 10).all()
        assert (res.docs % 2 == 0).all()


def test_large_collection_taat_maxscore_with_mask(rng):
    """From 100k documents exact auto runs term-at-a-time MaxScore, whose floors must count
    allowed documents only (a list-based estimate would count excluded ones)."""
    n_docs, vocab = 100_000, 50
    docs = random_csr(rng, n_docs, vocab, 0.2)
    from lsr.index import Index

    idx = Index.build(docs, [f"d{i}" for i in range(n_docs)], [f"t{i}" for i in range(vocab)])
    queries = random_csr(rng, 6, vocab, 0.3)
    # exclude exactly the documents the unrestricted search ranks first
    top = idx.search(queries, 200, algorithm="exhaustive")
    allowed = np.ones(n_docs, dtype=bool)
    allowed[top.docs[top.docs >= 0]] = False
    ref = _reference(idx, queries, 10, allowed)
    for algo in ("auto", "maxscore-taat", "maxscore", "bmw", "ranges"):
        _assert_matches(idx.search(queries, 10, algorithm=algo, allowed=allowed), ref)


def test_approximate_search_returns_allowed_documents_only(rng):
    _, idx = _zipf_index(rng)
    allowed = rng.random(idx.n_docs) < 0.3
    queries = random_csr(rng, 10, 400, 20 / 400)
    for algo in ("maxscore", "bmw", "auto"):
        res = idx.search(queries, 10, algorithm=algo, theta=1.5, allowed=allowed)
        assert allowed[res.docs[res.docs >= 0]].all()


def test_clustered_exact_settings_over_allowed_documents(rng):
    _, idx = _zipf_index(rng, n_docs=1500)
    clustered = ClusteredIndex.build(idx, cluster_size=8, postings_per_term=None, summary_mass=1.0)
    allowed = rng.random(idx.n_docs) < 0.4
    queries = random_csr(rng, 15, 400, 20 / 400)
    ref = _reference(idx, queries, 10, allowed)
    _assert_matches(clustered.search(queries, 10, heap_factor=1.0, allowed=allowed), ref)
    _assert_matches(clustered.search(queries[[2]], 10, heap_factor=1.0, allowed=allowed), ref[2:3])
    approx = clustered.search(queries, 10, heap_factor=0.7, allowed=allowed)
    assert allowed[approx.docs[approx.docs >= 0]].all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_property_masked_equals_reference(data):
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_docs = data.draw(st.integers(1, 300))
    _, idx = _zipf_index(rng, n_docs=n_docs, vocab=40, nnz=6, integer=data.draw(st.booleans()))
    allowed = rng.random(n_docs) < data.draw(st.floats(0, 1))
    k = data.draw(st.integers(1, 20))
    queries = random_csr(rng, 4, 40, 0.15)
    ref = _reference(idx, queries, k, allowed)
    algo = data.draw(st.sampled_from(ALGORITHMS))
    _assert_matches(idx.search(queries, k, algorithm=algo, allowed=allowed), ref)


@pytest.mark.parametrize(
    ("allowed", "error", "message"),
    [
        ([True, False], InputTypeError, "numpy array"),
        (np.ones((2, 2), bool), InputTypeError, "1-D"),
        (np.ones(3, bool), InputError, "3 entries"),
        (np.ones(2, np.float64), InputTypeError, "dtype float64"),
    ],
)
def test_bad_masks_are_refused(allowed, error, message):
    from lsr.index import Index

    idx = Index.build(sp.csr_array(np.eye(2, dtype=np.float32)), ["a", "b"], ["x", "y"])
    with pytest.raises(error, match=message):
        idx.search(sp.csr_array(np.ones((1, 2), np.float32)), 1, allowed=allowed)
