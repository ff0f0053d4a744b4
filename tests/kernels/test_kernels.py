"""The Numba kernels against plain numpy/scipy references."""

import numpy as np
import scipy.sparse as sp

from lsr.kernels import build_blocks, csr_to_postings, quantize_uint8, select_topk, term_max_impact
from tests.conftest import random_csr


def test_csr_to_postings_is_the_transpose(rng):
    m = random_csr(rng, 300, 80, 0.05)
    offsets, docs, weights = csr_to_postings(
        m.indptr.astype(np.int64), m.indices.astype(np.int64), m.data, 80, 1000
    )
    t = sp.csc_array(m)
    t.sort_indices()
    assert np.array_equal(offsets, t.indptr)
    assert np.array_equal(docs, t.indices + 1000)
    assert np.array_equal(weights, t.data)


def test_csr_to_postings_drops_explicit_zeros():
    m = sp.csr_array(
        (np.array([0.0, 2.0], np.float32), np.array([1, 2]), np.array([0, 2])), shape=(1, 4)
    )
    offsets, docs, weights = csr_to_postings(
        m.indptr.astype(np.int64), m.indices.astype(np.int64), m.data, 4, 0
    )
    assert offsets.tolist() == [0, 0, 0, 1, 1]
    assert docs.tolist() == [0] and weights.tolist() == [2.0]


def test_select_topk_orders_by_score_then_doc(rng):
    acc = rng.integers(0, 4, size=200).astype(np.float32)  # many ties
    cands = np.flatnonzero(acc > 0).astype(np.int64)
    rng.shuffle(cands)
    for k in (1, 5, 37, 500):
        out_d, out_s = np.full(k, -1, dtype=np.int64), np.zeros(k, dtype=np.float32)
        n = select_topk(acc, cands, cands.shape[0], k, out_d, out_s)
        ref = sorted(cands.tolist(), key=lambda d: (-acc[d], d))[:k]
        assert n == len(ref)
        assert out_d[:n].tolist() == ref
        assert out_s[:n].tolist() == acc[ref].tolist()
        assert (out_d[n:] == -1).all()


def test_quantize_keeps_positive_weights_and_saturates():
    w = np.array([1e-6, 0.5, 1.1, 2.0, 3.0], np.float32)
    q = quantize_uint8(w, np.float32(2.0 / 255))
    assert q.tolist() == [1, 64, 140, 255, 255]


def test_term_max_and_blocks(rng):
    m = random_csr(rng, 500, 20, 0.2)
    c = sp.csc_array(m)
    c.sort_indices()
    offsets = c.indptr.astype(np.int64)
    ref = np.array([c.data[c.indptr[t] : c.indptr[t + 1]].max(initial=0) for t in range(20)])
    assert np.allclose(term_max_impact(offsets, c.indices.astype(np.uint32), c.data), ref)
    block_offsets, block_max, block_last = build_blocks(
        offsets, c.indices.astype(np.uint32), c.data, 8
    )
    for t in range(20):
        lo, hi = c.indptr[t], c.indptr[t + 1]
        chunks = [
            (c.data[i : min(i + 8, hi)], c.indices[min(i + 8, hi) - 1]) for i in range(lo, hi, 8)
        ]
        got = range(block_offsets[t], block_offsets[t + 1])
        assert [float(block_max[b]) for b in got] == [float(x.max()) for x, _ in chunks]
        assert [int(block_last[b]) for b in got] == [int(last) for _, last in chunks]


def test_doc_range_maxima_rows_only_for_long_lists(rng):
    from lsr.kernels import doc_range_maxima
    from lsr.kernels.layout import pack

    n_docs, ranges = 1000, 4  # ranges of 256 documents
    dense = (rng.random((n_docs, 6)) < np.array([0.9, 0.5, 0.004, 0.003, 0.0, 0.2])) * (
        rng.integers(1, 256, (n_docs, 6))
    )
    c = sp.csc_array(sp.csr_array(dense.astype(np.float32)))
    c.sort_indices()
    offsets, docs = c.indptr.astype(np.int64), c.indices.astype(np.uint32)
    impacts = c.data.astype(np.uint8)
    for postings in ((docs, impacts), (pack(docs, impacts), np.zeros(0, dtype=np.bool_))):
        rows, table = doc_range_maxima(offsets, *postings, n_docs, impacts[:0], 256)
        long = np.diff(offsets) > ranges
        assert np.array_equal(rows >= 0, long) and table.shape == (long.sum(), ranges)
        assert table.dtype == np.uint8
        for t in np.flatnonzero(long):
            ref = np.pad(dense[:, t], (0, 24)).reshape(ranges, 256).max(axis=1)  # last: 232
            assert np.array_equal(table[rows[t]], ref)


def test_doc_range_starts_locate_every_range_of_every_long_list(rng):
    """Range starts across several 512-range groups (16-bit offsets from a group base), in
    both postings layouts: each range's postings are exactly the list's documents in it."""
    from lsr.kernels import doc_range_maxima, doc_range_starts
    from lsr.kernels.doc_ranges import GROUP_BITS
    from lsr.kernels.layout import pack

    n_docs, block = 9000, 4  # 2250 ranges: five groups
    n_ranges = -(-n_docs // block)
    density = np.array([0.97, 0.6, 0.3, 0.001, 0.0])
    dense = (rng.random((n_docs, 5)) < density) * rng.integers(1, 256, (n_docs, 5))
    c = sp.csc_array(sp.csr_array(dense.astype(np.float32)))
    c.sort_indices()
    offsets, docs = c.indptr.astype(np.int64), c.indices.astype(np.uint32)
    impacts = c.data.astype(np.uint8)
    for postings in ((docs, impacts), (pack(docs, impacts), np.zeros(0, dtype=np.bool_))):
        rows, table = doc_range_maxima(offsets, *postings, n_docs, impacts[:0], block)
        base, rel = doc_range_starts(offsets, *postings, rows, table.shape[0], n_docs, block)
        assert rel.dtype == np.uint16 and rel.shape == (table.shape[0], n_ranges + 1)
        for t in np.flatnonzero(rows >= 0):
            listed = docs[offsets[t] : offsets[t + 1]]
            i = rows[t]
            start = [int(base[i, r >> GROUP_BITS]) + int(rel[i, r]) for r in range(n_ranges + 1)]
            assert start[-1] == listed.size
            for r in range(n_ranges):
                expected = np.flatnonzero(dense[r * block : (r + 1) * block, t]) + r * block
                assert np.array_equal(listed[start[r] : start[r + 1]], expected), (t, r)


def test_dense_rows_for_the_most_frequent_terms(rng):
    from lsr.kernels import dense_rows
    from lsr.kernels.layout import pack

    n_docs = 800
    fractions = np.array([0.9, 0.05, 0.5, 0.2, 0.0, 0.13, 0.3])  # 0.05 < 1/8: no row
    dense = (rng.random((n_docs, 7)) < fractions) * rng.integers(1, 256, (n_docs, 7))
    c = sp.csc_array(sp.csr_array(dense.astype(np.float32)))
    c.sort_indices()
    offsets, docs = c.indptr.astype(np.int64), c.indices.astype(np.uint32)
    impacts = c.data.astype(np.uint8)
    df = np.diff(offsets)
    by_df = [t for t in np.argsort(-df, kind="stable") if df[t] * 8 >= n_docs]
    assert 1 not in by_df and 4 not in by_df
    layouts = ((docs, impacts), (pack(docs, impacts), np.zeros(0, dtype=np.bool_)))
    for postings in layouts:
        for max_rows in (0, 2, 100):
            rows, table = dense_rows(offsets, *postings, n_docs, impacts[:0], max_rows)
            chosen = by_df[:max_rows]
            assert table.shape == (len(chosen), n_docs) and table.dtype == np.uint8
            assert [int(rows[t]) for t in chosen] == list(range(len(chosen)))
            assert (np.delete(rows, chosen) == -1).all()
            for t in chosen:
                assert np.array_equal(table[rows[t]], dense[:, t])
    weights = c.data / 7
    rows, table = dense_rows(offsets, docs, weights, n_docs, weights[:0], 100)
    assert table.dtype == np.float32
    assert np.array_equal(table[rows[0]], (dense[:, 0] / 7).astype(np.float32))


def test_kth_largest_with_small_and_large_k(rng):
    from lsr.kernels.topk import SMALLEST_POSITIVE, kth_largest

    values = rng.integers(0, 20, 300).astype(np.float32)  # ties and zeros
    positive = np.sort(values[values > 0])[::-1]
    for k in (1, 10, 32, 33, 100):
        heap, ids = np.zeros(k, np.float32), np.zeros(k, np.int64)
        assert kth_largest(values, values.shape[0], k, heap, ids) == positive[k - 1]
        more, more_ids = np.zeros(k + 5, np.float32), np.zeros(k + 5, np.int64)
        assert kth_largest(values, 5, k + 5, more, more_ids) == SMALLEST_POSITIVE


def test_dense_topk_matches_a_sort_with_ties_and_zeros(rng):
    """Both dense top-k paths (score bits and sorted buffer for k <= 32, candidate list and
    heap above) against a numpy sort: score descending, then doc ascending, positive only."""
    from lsr.kernels.scoring import scratch
    from lsr.kernels.topk import dense_topk

    for n_docs in (1, 63, 64, 65, 1000, 5183):
        for positive in sorted({0, min(3, n_docs), n_docs // 3, n_docs}):
            acc, candidates = scratch(n_docs)
            values = np.zeros(n_docs, np.float32)
            hit = rng.choice(n_docs, positive, replace=False)
            values[hit] = rng.integers(1, 6, positive).astype(np.float32) / 4  # many ties
            values[hit[: positive // 10]] = np.float32(1e-45)  # the smallest positive float
            for k in (1, 5, 10, 32, 33, 100):
                acc[:] = values
                out_docs, out_scores = np.full(k, -1, np.int64), np.zeros(k, np.float32)
                size = dense_topk(acc, k, candidates, out_docs, out_scores)
                order = np.lexsort((np.arange(n_docs), -values))[: min(k, positive)]
                assert size == len(order), (n_docs, positive, k)
                assert np.array_equal(out_docs[:size], order), (n_docs, positive, k)
                assert np.array_equal(out_scores[:size], values[order])
                assert not acc.any()  # the accumulator is left zeroed for the next query
