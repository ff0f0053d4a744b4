"""Synthetic SPLADE-like collections for scale benchmarks (no model, no download).

Document terms are drawn from a Zipfian distribution over the vocabulary (a few very common
terms, a long tail), ~``doc_terms`` distinct terms per document; queries draw ``query_terms``
terms from a flatter distribution (queries favour rarer terms than documents do), like
expanded SPLADE queries, or few terms for inference-free queries. As in trained models, a
weight grows with the term's rarity (an IDF-like factor) times log-normal noise, so common
terms carry small weights on both sides.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

TERM_ORDER_SEED = 12345


def _zipf(vocab: int, exponent: float) -> np.ndarray:
    """Zipfian term probabilities; the frequency rank of each term id is fixed by a seed, so
    documents and queries agree on which terms are common."""
    p = 1.0 / np.arange(1, vocab + 1) ** exponent
    return (p / p.sum())[np.random.default_rng(TERM_ORDER_SEED).permutation(vocab)]


def _rarity(vocab: int) -> np.ndarray:
    """An IDF-like factor per term, in (0, 1]: -log p scaled by its maximum."""
    idf = -np.log(_zipf(vocab, 1.0))
    return (idf / idf.max()).astype(np.float32)


def synthetic_corpus(
    n_docs: int, vocab: int = 30522, doc_terms: int = 120, seed: int = 0, chunk: int = 100_000
):
    """Yield ``(csr_array, doc_ids)`` chunks of a synthetic collection."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(_zipf(vocab, 1.0))
    rarity = _rarity(vocab)
    for lo in range(0, n_docs, chunk):
        n = min(chunk, n_docs - lo)
        # draws per document: repeated common terms merge, so draw ~1.4x the distinct target
        draws = 1.4 * doc_terms
        lengths = np.clip(rng.normal(draws, draws / 4, n).astype(np.int64), 8, 4 * doc_terms)
        cols = np.searchsorted(cdf, rng.random(lengths.sum()) * cdf[-1]).astype(np.int32)
        cols = np.minimum(cols, vocab - 1)
        rows = np.repeat(np.arange(n), lengths)
        data = (rng.lognormal(0.0, 0.5, cols.shape[0]) * 2.0 * rarity[cols] ** 2).astype(np.float32)
        m = sp.csr_array((data, (rows, cols)), shape=(n, vocab))
        m.sum_duplicates()
        yield m, [f"s{i}" for i in range(lo, lo + n)]


def synthetic_queries(
    n_queries: int, vocab: int = 30522, query_terms: int = 40, seed: int = 1, inference_free=False
) -> sp.csr_array:
    """Query vectors: ~``query_terms`` terms each (SPLADE-like), or IDF-weighted short queries."""
    rng = np.random.default_rng(seed)
    p = _zipf(vocab, 0.6)
    rarity = _rarity(vocab)
    rows, cols, data = [], [], []
    for q in range(n_queries):
        n = max(1, int(rng.normal(query_terms, query_terms / 5)))
        terms = np.unique(rng.choice(vocab, size=n, p=p))
        rows += [q] * len(terms)
        cols += terms.tolist()
        noise = np.ones(len(terms)) if inference_free else rng.lognormal(0.0, 0.5, len(terms))
        weights = noise * 3.0 * rarity[terms] ** 2
        data += weights.tolist()
    return sp.csr_array((np.asarray(data, np.float32), (rows, cols)), shape=(n_queries, vocab))
