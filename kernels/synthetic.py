"""Drawing documents and queries from a fitted topic model (see :mod:`lsr.eval.faithful`).

Document ``i`` is drawn from a random stream seeded by ``(seed, i)`` alone, so any document
can be drawn again on its own (a query is written from a document it regenerates) and a
corpus comes out the same whatever the chunking or the number of threads. A document picks a
fine topic; the fine topic (its own seeded stream) picks a coarse topic and a focus set of
terms drawn from it. The document then draws distinct terms, each from the focus set with
probability ``focus_share`` and otherwise from the coarse topic's term distribution, until it
has its drawn length; each term's weight comes from that term's weight quantiles.
"""

from typing import NamedTuple

import numba as nb
import numpy as np

_PRIME = 2_147_483_647  # a Mersenne prime: seeds are mixed modulo it
_FOCUS_STREAM = 7_919  # offsets that keep the fine-topic and query streams apart
_QUERY_STREAM = 104_729


@nb.njit(cache=True, nogil=True, inline="always")
def _seed(seed, i):
    np.random.seed(np.uint32((seed * 1_000_003 + i * 2_654_435_761 + 12_345) % _PRIME))


@nb.njit(cache=True, nogil=True, inline="always")
def _draw(cdf):
    """One index from a cumulative distribution whose last value is its total."""
    t = np.searchsorted(cdf, np.random.random() * cdf[-1], side="right")
    return min(t, cdf.shape[0] - 1)


@nb.njit(cache=True, nogil=True, inline="always")
def _quantile(table, t, u):
    """A weight of term ``t`` from its quantile row, interpolated at level ``u`` in [0, 1)."""
    x = u * (table.shape[1] - 1)
    j = int(x)
    return table[t, j] + (x - j) * (table[t, j + 1] - table[t, j])


@nb.njit(cache=True, nogil=True)
def _header(i, seed, n_fine, lengths):
    """Document ``i``'s fine topic and length (the first draws of its stream)."""
    _seed(seed, i)
    fine = np.random.randint(n_fine)
    return fine, lengths[np.random.randint(lengths.shape[0])]


class DocumentModel(NamedTuple):
    """The fitted document side (see :class:`lsr.eval.faithful.FaithfulModel`), as one value
    the kernels take (Numba unpacks named tuples like plain ones)."""

    prior: np.ndarray  # (topics,) cumulative topic sizes
    topics: np.ndarray  # (topics, vocab) cumulative term distributions
    heads: np.ndarray  # (topics, H) head terms, -1 padded
    head_rates: np.ndarray  # (topics, H)
    lengths: np.ndarray  # real non-zeros per document
    weights: np.ndarray  # (vocab, quantiles)
    n_fine: int  # fine topics of this corpus
    focus_size: int
    focus_share: float


@nb.njit(cache=True, nogil=True)
def _scratch(model):
    """Per-thread buffers of :func:`_document`: drawn-term marks, the focus set, and a
    document's terms, weights and quantile levels."""
    longest = model.lengths.max()
    return (
        np.zeros(model.topics.shape[1], dtype=np.int64),
        np.empty(model.focus_size, dtype=np.int32),
        np.empty(longest, dtype=np.int32),
        np.empty(longest, dtype=np.float32),
        np.empty(longest, dtype=np.float64),
    )


@nb.njit(cache=True, nogil=True)
def _document(i, seed, model, scratch, stamp):
    """Draw document ``i`` into the scratch's ``terms``/``values`` (sorted by term) and the
    quantile level each weight was drawn at into ``levels``; returns its length and coarse
    topic. ``mark`` holds ``stamp`` for the terms already drawn.

    The topic's head terms (those in a large share of its documents) are each taken with
    their own rate, so common terms are as common as in the real documents; sampling by
    frequency alone would leave them short. The rest of the length is drawn from the other
    terms: the fine topic's focus set (drawn from the topic's other terms) or the topic.
    Each document's focus share is drawn around ``focus_share`` (uniform on [0, 2x]), since
    real documents range from near duplicates to loners."""
    prior, topics, heads, head_rates, lengths, weights, n_fine, _, focus_share = model
    mark, focus, terms, values, levels = scratch
    fine, length = _header(i, seed, n_fine, lengths)
    _seed(seed + _FOCUS_STREAM, fine)
    topic = _draw(prior)
    cdf = topics[topic]
    for j in range(heads.shape[1]):
        if heads[topic, j] >= 0:
            mark[heads[topic, j]] = stamp
    for j in range(focus.shape[0]):
        t = _draw(cdf)
        for _ in range(8):  # prefer terms that are not heads
            if mark[t] != stamp:
                break
            t = _draw(cdf)
        focus[j] = t
    _seed(seed, i)
    _header(i, seed, n_fine, lengths)  # replay the header's draws: same stream as before
    share = min(1.0, 2.0 * focus_share * np.random.random())
    n = 0
    for j in range(heads.shape[1]):
        t = heads[topic, j]
        if t >= 0 and n < length and np.random.random() < head_rates[topic, j]:
            terms[n] = t
            levels[n] = np.random.random()
            values[n] = _quantile(weights, t, levels[n])
            n += 1
    tries = 0
    vocab = cdf.shape[0]
    while n < length:
        tries += 1
        if tries < 10 * length and focus.shape[0] > 0 and np.random.random() < share:
            t = focus[np.random.randint(focus.shape[0])]
        elif tries < 100 * length:
            t = _draw(cdf)
        else:  # the topic is exhausted (not seen on real data): any term will do
            t = np.random.randint(vocab)
        if mark[t] == stamp:
            continue
        mark[t] = stamp
        terms[n] = t
        levels[n] = np.random.random()
        values[n] = _quantile(weights, t, levels[n])
        n += 1
    order = np.argsort(terms[:n])
    terms[:n] = terms[:n][order]
    values[:n] = values[:n][order]
    levels[:n] = levels[:n][order]
    return n, topic


@nb.njit(cache=True, nogil=True, parallel=True)
def document_lengths(lo, hi, seed, n_fine, lengths):  # the header alone: no model needed
    """The drawn length of documents ``lo`` to ``hi - 1`` (the CSR row sizes to allocate)."""
    out = np.empty(hi - lo, dtype=np.int64)
    for k in nb.prange(hi - lo):
        out[k] = _header(lo + k, seed, n_fine, lengths)[1]
    return out


@nb.njit(cache=True, nogil=True, parallel=True)
def draw_documents(lo, hi, seed, model, indptr, n_blocks):
    """Documents ``lo`` to ``hi - 1`` as CSR ``(indices, data)`` for row pointers ``indptr``
    (from :func:`document_lengths`), in ``n_blocks`` parallel blocks."""
    n_docs = hi - lo
    indices = np.empty(indptr[-1], dtype=np.int32)
    data = np.empty(indptr[-1], dtype=np.float32)
    n_blocks = max(1, min(n_docs, n_blocks))
    for b in nb.prange(n_blocks):
        scratch = _scratch(model)
        terms, values = scratch[2], scratch[3]
        for k in range(b * n_docs // n_blocks, (b + 1) * n_docs // n_blocks):
            n, _ = _document(lo + k, seed, model, scratch, k + 1)
            start = indptr[k]
            indices[start : start + n] = terms[:n]
            data[start : start + n] = values[:n]
    return indices, data


@nb.njit(cache=True, nogil=True)
def draw_queries(n_queries, query_seed, n_docs, seed, model, query_lengths, from_document,
                 query_weights):  # fmt: skip
    """Queries, each written from a document it draws again: ``from_document`` of its terms
    picked from the document's at random, each at the quantile level of its weight there (a
    term that matters to the document matters to its query), the rest from the document's
    coarse topic at random levels; weights from the query-side quantiles. Returns CSR
    ``(indptr, indices, data)`` and each query's source document."""
    scratch = _scratch(model)
    mark, _, terms, _, levels = scratch
    topics = model.topics
    longest = query_lengths.max()
    indptr = np.zeros(n_queries + 1, dtype=np.int64)
    indices = np.empty(n_queries * longest, dtype=np.int32)
    data = np.empty(n_queries * longest, dtype=np.float32)
    sources = np.empty(n_queries, dtype=np.int64)
    positions = np.empty(model.lengths.max(), dtype=np.int64)
    chosen = np.empty(longest, dtype=np.int32)
    chosen_levels = np.empty(longest, dtype=np.float64)
    stamp = 0
    for q in range(n_queries):
        _seed(query_seed + _QUERY_STREAM, q)
        doc = np.random.randint(n_docs)
        length = query_lengths[np.random.randint(query_lengths.shape[0])]
        stamp += 1
        n, topic = _document(doc, seed, model, scratch, stamp)
        _seed(query_seed, q)
        stamp += 1
        taken = min(n, length, int(from_document * length + np.random.random()))
        positions[:n] = np.arange(n)
        for j in range(taken):  # the first steps of a Fisher-Yates shuffle
            r = j + np.random.randint(n - j)
            positions[j], positions[r] = positions[r], positions[j]
            chosen[j] = terms[positions[j]]
            chosen_levels[j] = levels[positions[j]]
            mark[chosen[j]] = stamp
        tries = 0
        while taken < length and tries < 100 * length:
            tries += 1
            t = _draw(topics[topic])
            if mark[t] != stamp:
                mark[t] = stamp
                chosen[taken] = t
                chosen_levels[taken] = np.random.random()
                taken += 1
        order = np.argsort(chosen[:taken])
        start = indptr[q]
        for j in range(taken):
            t = chosen[order[j]]
            indices[start + j] = t
            data[start + j] = _quantile(query_weights, t, chosen_levels[order[j]])
        indptr[q + 1] = start + taken
        sources[q] = doc
    return indptr, indices[: indptr[-1]], data[: indptr[-1]], sources
