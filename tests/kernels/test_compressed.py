"""Block compression of postings (lsr.kernels.compressed): exact round trips at the edges."""

import numpy as np
import pytest

from lsr.kernels.compressed import decode_term, encode_blocks


def _round_trip(term_postings, docs, impacts, block_size):
    term_blocks, last, top, bits, starts, words = encode_blocks(
        term_postings, docs, impacts, block_size
    )
    assert words[-1] == 0  # decoding reads one word past the last block
    out = np.empty(docs.shape[0], dtype=np.int64)
    for t in range(term_postings.shape[0] - 1):
        lo, hi = term_postings[t], term_postings[t + 1]
        n = decode_term(t, term_postings, term_blocks, last, bits, starts, words, block_size, out)
        assert n == hi - lo
        np.testing.assert_array_equal(out[:n], docs[lo:hi])
        for b in range(term_blocks[t], term_blocks[t + 1]):
            first = lo + (b - term_blocks[t]) * block_size
            chunk = slice(first, min(hi, first + block_size))
            assert last[b] == docs[chunk][-1]
            assert top[b] == impacts[chunk].max()
    return bits, words


@pytest.mark.parametrize("block_size", [1, 7, 128])
def test_random_lists_round_trip(block_size):
    rng = np.random.default_rng(block_size)
    lists = [np.sort(rng.choice(50_000, size=n, replace=False)) for n in (0, 1, 129, 3000, 0, 5)]
    term_postings = np.cumsum([0] + [x.size for x in lists]).astype(np.int64)
    docs = np.concatenate(lists).astype(np.uint32)
    impacts = rng.integers(1, 256, docs.size).astype(np.uint8)
    _round_trip(term_postings, docs, impacts, block_size)


def test_consecutive_documents_take_no_bits_and_huge_gaps_take_32():
    dense = np.arange(256, dtype=np.uint32)  # gaps of 0 (from -1): zero bits per posting
    far = np.array([0, 2**32 - 1], dtype=np.uint32)  # a gap of 2**32 - 2: all 32 bits
    docs = np.concatenate([dense, far])
    term_postings = np.array([0, dense.size, docs.size], dtype=np.int64)
    impacts = np.full(docs.size, 3, dtype=np.uint8)
    bits, words = _round_trip(term_postings, docs, impacts, 128)
    assert list(bits) == [0, 0, 32]
    assert words.shape[0] == 0 + 2 + 1  # the first list costs no word at all
