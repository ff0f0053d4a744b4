"""Building a clustered index: global-floor pruning, blocks by sampled centroids, transposed
quantized summaries. Checked against brute-force computations over the same postings."""

import numba as nb
import numpy as np
import pytest
import scipy.sparse as sp

from lsr.index import ClusteredIndex, Index
from lsr.kernels.cluster_build import impact_floor, prune_postings
from lsr.kernels.prefetch import prefetch
from tests.index.test_pruning import _zipf_index


def _lists(index: Index):
    """Per term, (docs, impacts) of its postings."""
    docs, impacts, offsets = index.doc_numbers(), index.impact_values(), index.offsets
    return [(docs[offsets[t] : offsets[t + 1]], impacts[offsets[t] : offsets[t + 1]])
            for t in range(index.vocab_size)]  # fmt: skip


@pytest.mark.parametrize("quantization", ["uint8", "float32"])
def test_global_floor_and_cap(rng, quantization):
    _, idx = _zipf_index(rng, n_docs=800, quantization=quantization)
    impacts = idx.impact_values()
    total, cap = impacts.shape[0] // 3, 40
    floor = impact_floor(impacts, total)
    assert (impacts >= floor).sum() >= total > (impacts > floor).sum()
    offsets, docs, kept = prune_postings(idx.offsets, idx.doc_numbers(), impacts, cap, floor)
    for t, (l_docs, l_imp) in enumerate(_lists(idx)):
        got = docs[offsets[t] : offsets[t + 1]]
        assert np.all(np.diff(got) > 0)  # doc order
        # brute force: the list's postings >= floor, best first, ties lower doc first
        order = np.lexsort((l_docs, -l_imp.astype(np.float64)))
        want = [d for d, v in zip(l_docs[order], l_imp[order], strict=True) if v >= floor][:cap]
        assert sorted(want) == got.tolist()
        assert np.all(kept[offsets[t] : offsets[t + 1]] >= floor)
    assert impact_floor(impacts, impacts.shape[0] + 5) == impacts.min()


def test_settings_of_global_pruning_keep_the_budget(rng):
    _, idx = _zipf_index(rng, n_docs=2000)
    per_term = 20
    clustered = ClusteredIndex.build(idx, postings_per_term=per_term, max_fraction=2.0)
    lengths = np.diff(clustered.arrays.block_offsets)
    assert lengths.sum() == clustered.n_postings
    per_list = np.array([
        clustered.arrays.block_offsets[clustered.arrays.term_blocks[t + 1]]
        - clustered.arrays.block_offsets[clustered.arrays.term_blocks[t]]
        for t in range(idx.vocab_size)
    ])  # fmt: skip
    # the floor keeps per_term x vocabulary postings, then each list at most 2 x per_term
    floor = impact_floor(idx.impact_values(), per_term * idx.vocab_size)
    above = np.add.reduceat(idx.impact_values() >= floor, idx.offsets[:-1])
    above[np.diff(idx.offsets) == 0] = 0
    assert per_list.tolist() == np.minimum(above, 2 * per_term).tolist()
    fixed = ClusteredIndex.build(idx, postings_per_term=per_term, pruning="fixed")
    assert fixed.n_postings == np.minimum(np.diff(idx.offsets), per_term).sum()


def _topical(rng, n_topics=6, per_topic=60, vocab=300):
    """Documents of disjoint topics (terms 10 + 48 t ...) that all hold term 0."""
    rows, cols, vals, topic = [], [], [], []
    for d in range(n_topics * per_topic):
        t = d % n_topics
        terms = np.unique(np.concatenate(([0], 10 + 48 * t + rng.choice(48, 12, replace=False))))
        rows += [d] * len(terms)
        cols += terms.tolist()
        vals += rng.uniform(0.5, 2.0, len(terms)).tolist()
        topic.append(t)
    docs = sp.csr_array((np.float32(vals), (rows, cols)), shape=(len(topic), vocab))
    ids, vocab_terms = [f"d{i}" for i in range(len(topic))], [f"t{i}" for i in range(vocab)]
    return Index.build(docs, ids, vocab_terms), np.array(topic)


def test_blocks_group_similar_documents(rng):
    idx, topic = _topical(rng)
    clustered = ClusteredIndex.build(idx, postings_per_term=None, cluster_size=30)
    a = clustered.arrays
    blocks = range(a.term_blocks[0], a.term_blocks[1])  # term 0: every document
    assert len(blocks) >= 6
    docs = [a.block_docs[a.block_offsets[b] : a.block_offsets[b + 1]] for b in blocks]
    assert sorted(np.concatenate(docs).tolist()) == list(range(idx.n_docs))  # a permutation
    assert all(len(d) >= 2 for d in docs)  # min_cluster_size
    purity = sum(np.bincount(topic[d]).max() for d in docs) / idx.n_docs
    assert purity > 0.9
    # within a block, documents keep their list order
    assert all(np.all(np.diff(d) > 0) for d in docs)


def test_build_is_the_same_whatever_the_threads(rng):
    _, idx = _zipf_index(rng, n_docs=1500)
    one = ClusteredIndex.build(idx, postings_per_term=100, cluster_size=8, threads=1)
    two = ClusteredIndex.build(idx, postings_per_term=100, cluster_size=8, threads=2)
    for name, x, y in zip(one.arrays._fields, one.arrays, two.arrays, strict=True):
        assert np.array_equal(x, y), name
    other_seed = ClusteredIndex.build(idx, postings_per_term=100, cluster_size=8, seed=1)
    assert not np.array_equal(one.arrays.block_docs, other_seed.arrays.block_docs)


def _summaries(clustered):
    """Per block, its summary as {term: upper value} decoded from the transposed arrays."""
    a = clustered.arrays
    out = [dict() for _ in range(clustered.n_blocks)]
    for t in range(a.term_blocks.shape[0] - 1):
        for c in range(a.list_comps[t], a.list_comps[t + 1]):
            start = a.comp_ends[c - 1] if c > a.list_comps[t] else 0
            for e in range(a.list_entries[t] + start, a.list_entries[t] + a.comp_ends[c]):
                b = a.term_blocks[t] + int(a.entry_blocks[e])
                out[b][int(a.comp_terms[c])] = np.float32(a.entry_values[e]) * a.block_scale[b]
    return out


@pytest.mark.parametrize("mass", [1.0, 0.4])
def test_summaries_bound_their_blocks(rng, mass):
    _, idx = _zipf_index(rng, n_docs=400)
    clustered = ClusteredIndex.build(idx, postings_per_term=None, cluster_size=8, summary_mass=mass)
    a = clustered.arrays
    fwd = sp.csr_array((a.fwd_impacts.astype(np.float32), a.fwd_terms, a.fwd_offsets))
    summaries = _summaries(clustered)
    for t in range(idx.vocab_size):
        comps = a.comp_terms[a.list_comps[t] : a.list_comps[t + 1]]
        assert np.all(np.diff(comps.astype(np.int64)) > 0)  # ascending: the merge join
        for b in range(a.term_blocks[t], a.term_blocks[t + 1]):
            rows = fwd[a.block_docs[a.block_offsets[b] : a.block_offsets[b + 1]]]
            maxima = rows.max(axis=0).toarray().ravel()
            summary = summaries[b]
            assert t in summary  # the list's own term is always kept
            for term, value in summary.items():
                assert value >= maxima[term]  # rounded up: an upper bound
                assert value <= maxima[term] + a.block_scale[b] * 1.0001
            kept = sum(maxima[term] for term in summary)
            if mass == 1.0:
                assert set(summary) == set(np.flatnonzero(maxima))
            else:
                assert kept >= mass * maxima.sum() * (1 - 1e-6)


@nb.njit
def _sum_with_prefetch(x):
    total = 0.0
    for i in range(x.shape[0]):
        if i + 8 < x.shape[0]:
            prefetch(x, i + 8)
        total += x[i]
    return total


def test_prefetch_is_only_a_hint():
    x = np.arange(1000, dtype=np.float64)
    assert _sum_with_prefetch(x) == x.sum()
