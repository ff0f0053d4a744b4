"""Clustered (Seismic-style) approximate search: exact with pruning off, measured otherwise."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings

from lsr.index import ClusteredIndex, Index
from tests.conftest import random_csr
from tests.index.test_pruning import _same, _zipf_index, build_numbered, index_and_queries

EXACT_SETTINGS = {"postings_per_term": None, "summary_mass": 1.0}


def _recall(got, ref) -> float:
    values = [
        len(set(got[i].ids) & set(ref[i].ids)) / len(ref[i].ids)
        for i in range(len(ref))
        if ref.counts[i]
    ]
    return float(np.mean(values)) if values else 1.0


@pytest.mark.parametrize("cluster_size", [1, 8, 64])
def test_pruning_off_is_exact(rng, cluster_size):
    _, idx = _zipf_index(rng, n_docs=1500)
    clustered = ClusteredIndex.build(idx, cluster_size=cluster_size, **EXACT_SETTINGS)
    queries = random_csr(rng, 25, 400, 20 / 400)
    ref = idx.search(queries, 10, algorithm="exhaustive")
    _same(ref, clustered.search(queries, 10, heap_factor=1.0))
    assert clustered.search(queries[[4]], 10, heap_factor=1.0)[0] == ref[4]
    assert _recall(clustered.search(queries, 10, heap_factor=1.0), ref) == 1.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index_and_queries())
def test_property_pruning_off_matches_exhaustive(case):
    docs, queries, k, quant = case
    idx = build_numbered(docs, quant)
    clustered = ClusteredIndex.build(idx, cluster_size=3, **EXACT_SETTINGS)
    ref = idx.search(queries, k, algorithm="exhaustive")
    _same(ref, clustered.search(queries, k, heap_factor=1.0))
    for i in range(queries.shape[0]):
        assert clustered.search(queries[[i]], k, heap_factor=1.0)[0] == ref[i]


def test_pruning_trades_recall_for_work(rng):
    _, idx = _zipf_index(rng, n_docs=3000)
    queries = random_csr(rng, 40, 400, 30 / 400)
    ref = idx.search(queries, 10, algorithm="exhaustive")
    clustered = ClusteredIndex.build(idx, postings_per_term=200, cluster_size=16, summary_mass=0.3)
    assert clustered.n_postings < idx.n_postings  # static pruning kept fewer postings
    assert clustered.nbytes > 0 and clustered.n_blocks > 0
    loose = clustered.search(queries, 10, heap_factor=2.0, query_terms=3)
    recall = _recall(loose, ref)
    assert 0.0 < recall < 1.0
    # every returned score is the document's exact score
    for i in range(len(ref)):
        for doc_id, score in loose[i].items():
            row = docs_score(idx, queries[[i]], doc_id)
            assert score == pytest.approx(row, rel=1e-5)


def docs_score(idx: Index, query: sp.csr_array, doc_id: str) -> float:
    weights = idx.term_weights(idx.doc_index(doc_id), query.indices)
    return float(np.dot(weights, query.data))


@pytest.mark.parametrize(
    ("settings_", "message"),
    [
        ({"postings_per_term": 0}, "postings_per_term must be a positive integer"),
        ({"cluster_size": 0}, "cluster_size must be a positive integer"),
        ({"summary_mass": 0.0}, r"summary_mass must be in \(0, 1\]"),
        ({"summary_mass": 1.5}, r"summary_mass must be in \(0, 1\]"),
        ({"min_cluster_size": 0}, "min_cluster_size must be a positive integer"),
        ({"doc_cut": True}, "doc_cut must be a positive integer"),
        ({"pruning": "top"}, "pruning must be one of global, fixed"),
        ({"max_fraction": 0.5}, "max_fraction must be >= 1"),
        ({"max_fraction": float("inf")}, "max_fraction must be >= 1"),
        ({"summary_mass": True}, r"summary_mass must be in \(0, 1\]"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"threads": 0}, "threads must be a positive integer or None"),
        ({"clusters": 3}, "unexpected keyword"),
    ],
)
def test_bad_build_settings(rng, settings_, message):
    _, idx = _zipf_index(rng, n_docs=50)
    with pytest.raises((ValueError, TypeError), match=message):
        ClusteredIndex.build(idx, **settings_)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"heap_factor": 0.0}, "heap_factor must be a number > 0"),
        ({"heap_factor": float("nan")}, "heap_factor must be a number > 0"),
        ({"heap_factor": "1"}, "heap_factor must be a number > 0"),
        ({"query_terms": 0}, "query_terms must be a positive integer"),
        ({"k": 0}, "k must be a positive integer"),
    ],
)
def test_bad_search_options(rng, kwargs, message):
    _, idx = _zipf_index(rng, n_docs=50)
    clustered = ClusteredIndex.build(idx, cluster_size=8)
    with pytest.raises(ValueError, match=message):
        clustered.search(random_csr(rng, 2, 400, 0.05), **{"k": 5, **kwargs})


def test_refuses_wrong_query_width(rng):
    _, idx = _zipf_index(rng, n_docs=50)
    clustered = ClusteredIndex.build(idx, cluster_size=8)
    with pytest.raises(ValueError, match="columns but the index vocabulary has 400"):
        clustered.search(random_csr(rng, 1, 30, 0.5), 5)
