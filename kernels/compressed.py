"""Postings compressed in blocks: bit-packed doc-number gaps and one uint8 impact each.

A term's postings are cut into blocks of ``block_size`` (the last one shorter). A block
stores its documents as gaps ``d[i] - d[i-1] - 1`` from the last document of the block before
it in the same list (from -1 for a list's first block), each in the fewest bits that hold the
block's largest gap (frame of reference), packed little-endian into uint32 words; the block's
first word, bit width, last document and largest impact sit in per-block arrays. Impacts stay
one byte each, in a separate array, so a posting costs 8 bits plus its gap's bits (about
2 bytes on a corpus fitted to SPLADE vectors) instead of the packed index's 4.

Decoding reads two words at a time as one uint64, so the words array carries one zero word
past its end. Scores are accumulated exactly like the exhaustive kernel of
``lsr.kernels.scoring`` (same float32 products in the same term order), so results are
identical to an uncompressed index's.
"""

import numba as nb
import numpy as np

from lsr.kernels.scoring import DENSE_FRACTION, scratch, sparse_topk
from lsr.kernels.topk import batch_outputs, dense_topk, mask_accumulator

RANGE_DOCS = 1 << 17  # documents added at a time: a 512 kB accumulator slice stays in cache


@nb.njit(cache=True, nogil=True)
def block_layout(term_postings, block_size):
    """Per term, the index of its first block (a prefix array of ``n_terms + 1``)."""
    n_terms = term_postings.shape[0] - 1
    term_blocks = np.zeros(n_terms + 1, dtype=np.int64)
    for t in range(n_terms):
        n = term_postings[t + 1] - term_postings[t]
        term_blocks[t + 1] = term_blocks[t] + (n + block_size - 1) // block_size
    return term_blocks


@nb.njit(cache=True, nogil=True)
def _bit_length(x):
    n = 0
    while x > 0:
        n += 1
        x >>= 1
    return n


@nb.njit(cache=True, nogil=True)
def encode_blocks(term_postings, docs, impacts, block_size):
    """Compress term-major postings (``docs`` ascending within each list, uint8 ``impacts``).

    Returns ``(term_blocks, block_last, block_max, block_bits, block_words, words)``:
    ``block_words`` has one more entry than there are blocks (the end of the last), and
    ``words`` ends with the zero word that decoding reads past the last block.
    """
    term_blocks = block_layout(term_postings, block_size)
    n_terms = term_postings.shape[0] - 1
    n_blocks = term_blocks[n_terms]
    block_last = np.empty(n_blocks, dtype=np.uint32)
    block_max = np.empty(n_blocks, dtype=np.uint8)
    block_bits = np.empty(n_blocks, dtype=np.uint8)
    block_words = np.empty(n_blocks + 1, dtype=np.int64)
    words = np.zeros(docs.shape[0] + n_blocks + 1, dtype=np.uint32)  # gaps need <= 32 bits
    gaps = np.empty(block_size, dtype=np.uint64)
    w = 0
    for t in range(n_terms):
        prev = np.int64(-1)
        p = term_postings[t]
        for b in range(term_blocks[t], term_blocks[t + 1]):
            n = min(block_size, term_postings[t + 1] - p)
            top_gap = np.uint64(0)
            top_impact = 0
            for i in range(n):
                d = np.int64(docs[p + i])
                gap = np.uint64(d - prev - 1)
                gaps[i] = gap
                top_gap = max(top_gap, gap)
                top_impact = max(top_impact, int(impacts[p + i]))
                prev = d
            bits = _bit_length(top_gap)
            block_words[b] = w
            pos = 0
            for i in range(n):
                word, off = w + (pos >> 5), pos & 31
                words[word] |= np.uint32((gaps[i] << np.uint64(off)) & np.uint64(0xFFFFFFFF))
                if off + bits > 32:
                    words[word + 1] |= np.uint32(gaps[i] >> np.uint64(32 - off))
                pos += bits
            w += (pos + 31) >> 5
            block_last[b] = np.uint32(prev)
            block_max[b] = np.uint8(top_impact)
            block_bits[b] = np.uint8(bits)
            p += n
    block_words[n_blocks] = w
    return term_blocks, block_last, block_max, block_bits, block_words, words[: w + 1].copy()


@nb.njit(cache=True, nogil=True, inline="always")
def _block_start(b, first, block_last, block_bits, block_words):
    """Decoding state at the start of block ``b`` (of a list whose first block is ``first``):
    the doc number before it, bits per gap, their mask, its first word and bit position."""
    prev = np.int64(-1) if b == first else np.int64(block_last[b - 1])
    bits = np.uint64(block_bits[b])
    return prev, bits, (np.uint64(1) << bits) - np.uint64(1), block_words[b], np.uint64(0)


@nb.njit(cache=True, nogil=True, inline="always")
def _step(words, base, pos, mask):
    """The gap at bit ``pos`` of the block starting at word ``base``, plus one."""
    word = base + np.int64(pos >> np.uint64(5))
    pair = np.uint64(words[word]) | (np.uint64(words[word + 1]) << np.uint64(32))
    return np.int64((pair >> (pos & np.uint64(31))) & mask) + 1


@nb.njit(cache=True, nogil=True)
def decode_term(t, term_postings, term_blocks, block_last, block_bits, block_words, words,
                block_size, out):  # fmt: skip
    """Write the doc numbers of term ``t``'s postings into ``out``; returns their count."""
    p, first = term_postings[t], term_blocks[t]
    k = 0
    for b in range(first, term_blocks[t + 1]):
        prev, bits, mask, base, pos = _block_start(b, first, block_last, block_bits, block_words)
        for _ in range(min(block_size, term_postings[t + 1] - p)):
            prev += _step(words, base, pos, mask)
            pos += bits
            out[k] = prev
            k += 1
        p += block_size
    return k


@nb.njit(cache=True, nogil=True)
def _add_term(t, w, term_postings, term_blocks, block_last, block_bits, block_words, words,
              impacts, block_size, acc, candidates, n_candidates):  # fmt: skip
    """Add ``w`` x impact of each of term ``t``'s postings to ``acc``, decoding as it goes,
    and list each document it makes non-zero in ``candidates``; returns their count."""
    p, first = term_postings[t], term_blocks[t]
    for b in range(first, term_blocks[t + 1]):
        prev, bits, mask, base, pos = _block_start(b, first, block_last, block_bits, block_words)
        for i in range(p, min(p + block_size, term_postings[t + 1])):
            prev += _step(words, base, pos, mask)
            pos += bits
            c = w * np.float32(impacts[i])
            if c > 0.0:  # an underflowed contribution must not list a document twice
                if acc[prev] == 0.0:
                    candidates[n_candidates] = prev
                    n_candidates += 1
                acc[prev] += c
        p += block_size
    return n_candidates


@nb.njit(cache=True, nogil=True, inline="always")
def _first_block(first, end, block_last, lo):
    """The first of blocks ``first:end`` whose last document is at least ``lo``."""
    while first < end:
        mid = (first + end) >> 1
        if np.int64(block_last[mid]) < lo:
            first = mid + 1
        else:
            end = mid
    return first


@nb.njit(cache=True, nogil=True)
def _add_range(lo, hi, q_terms, q_weights, term_postings, term_blocks, block_last, block_bits,
               block_words, words, impacts, block_size, acc):  # fmt: skip
    """Add the query's contributions to documents ``lo:hi`` of ``acc``, term after term, so
    each document sums its terms in query order (the exhaustive kernel's float32 sums). A
    range of a few hundred thousand documents keeps its accumulator slice in cache, and ranges
    touch disjoint slices, so they can run on several threads."""
    for j in range(q_terms.shape[0]):
        t, w = q_terms[j], q_weights[j]
        first, end = term_blocks[t], term_blocks[t + 1]
        for b in range(_first_block(first, end, block_last, lo), end):
            prev, bits, mask, base, pos = _block_start(
                b, first, block_last, block_bits, block_words
            )
            p = term_postings[t] + (b - first) * block_size
            for i in range(p, min(p + block_size, term_postings[t + 1])):
                prev += _step(words, base, pos, mask)
                pos += bits
                if prev >= hi:
                    break
                if prev >= lo:
                    acc[prev] += w * np.float32(impacts[i])
            if prev >= hi:
                break


@nb.njit(cache=True, nogil=True)
def reads_few(term_postings, q_terms, n_docs):
    """Whether a query reads so few postings that tracking its documents beats a dense scan."""
    total = 0
    for j in range(q_terms.shape[0]):
        total += term_postings[q_terms[j] + 1] - term_postings[q_terms[j]]
    return total * DENSE_FRACTION < n_docs


@nb.njit(cache=True, nogil=True, inline="always")
def _scaled(size, scale, out_scores):
    for j in range(size):
        out_scores[j] *= scale
    return size


@nb.njit(cache=True, nogil=True)
def dense_top(acc, allowed, k, scale, candidates, out_docs, out_scores):
    """The best ``k`` allowed documents of a dense accumulator, scaled; zeroes ``acc``."""
    mask_accumulator(acc, allowed)
    return _scaled(dense_topk(acc, k, candidates, out_docs, out_scores), scale, out_scores)


@nb.njit(cache=True, nogil=True)
def search_compressed(term_postings, term_blocks, block_last, block_bits, block_words, words,
                      impacts, block_size, q_terms, q_weights, scale, k, allowed, acc,
                      candidates, out_docs, out_scores, range_docs):  # fmt: skip
    """The exact top ``k`` of one query; returns the number of hits.

    ``acc``/``candidates`` are the scratch of ``lsr.kernels.scoring.scratch`` (zero on entry
    and exit). A query that reads many postings is added a range of ``range_docs`` documents
    at a time (``_add_range``; ``RANGE_DOCS``) and the accumulator scanned densely; one that
    reads few goes term by term and tracks the documents it touches. ``allowed`` (empty:
    all) restricts the hits.
    """
    lists = (term_postings, term_blocks, block_last, block_bits, block_words, words, impacts,
             block_size)  # fmt: skip
    n_docs = acc.shape[0]
    if reads_few(term_postings, q_terms, n_docs):
        n_candidates = 0
        for j in range(q_terms.shape[0]):
            n_candidates = _add_term(q_terms[j], q_weights[j], *lists, acc, candidates,
                                     n_candidates)  # fmt: skip
        size = sparse_topk(acc, candidates, n_candidates, k, allowed, out_docs, out_scores)
        return _scaled(size, scale, out_scores)
    for lo in range(0, n_docs, range_docs):
        _add_range(lo, min(n_docs, lo + range_docs), q_terms, q_weights, *lists, acc)
    return dense_top(acc, allowed, k, scale, candidates, out_docs, out_scores)


@nb.njit(cache=True, nogil=True, parallel=True)
def add_ranges_threads(term_postings, term_blocks, block_last, block_bits, block_words, words,
                       impacts, block_size, q_terms, q_weights, acc, range_docs):  # fmt: skip
    """The dense half of ``search_compressed`` with one query's document ranges spread over
    threads (disjoint accumulator slices); ``dense_top`` then takes the top k."""
    n_docs = acc.shape[0]
    for r in nb.prange((n_docs + range_docs - 1) // range_docs):
        lo = r * range_docs
        _add_range(
            lo, min(n_docs, lo + range_docs), q_terms, q_weights, term_postings, term_blocks,
            block_last, block_bits, block_words, words, impacts, block_size, acc,
        )  # fmt: skip


@nb.njit(cache=True, nogil=True, parallel=True)
def search_compressed_many(term_postings, term_blocks, block_last, block_bits, block_words,
                           words, impacts, block_size, q_indptr, q_terms, q_weights, scale, k,
                           allowed, n_docs, n_workers, range_docs):  # fmt: skip
    """Every row of a query CSR in ``n_workers`` parallel slices, each with its own scratch;
    ``(docs, scores, counts)`` padded with -1 / 0 like ``lsr.kernels.topk.batch_outputs``."""
    n_queries = q_indptr.shape[0] - 1
    out_docs, out_scores, counts = batch_outputs(n_queries, k)
    n_workers = max(1, min(n_workers, n_queries))
    for worker in nb.prange(n_workers):
        acc, candidates = scratch(n_docs)
        for q in range(worker * n_queries // n_workers, (worker + 1) * n_queries // n_workers):
            lo, hi = q_indptr[q], q_indptr[q + 1]
            counts[q] = search_compressed(
                term_postings, term_blocks, block_last, block_bits, block_words, words,
                impacts, block_size, q_terms[lo:hi], q_weights[lo:hi], scale, k, allowed, acc,
                candidates, out_docs[q], out_scores[q], range_docs,
            )  # fmt: skip
    return out_docs, out_scores, counts
