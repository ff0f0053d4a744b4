"""Protocol-buffer encoding of postings lists, for exports in CIFF (the Common Index File
Format read by PISA, Anserini and BMP).

A CIFF ``PostingsList`` message carries its postings as a repeated ``Posting`` field (field 4),
each a message of a d-gap ``docid`` (field 1) and a ``tf`` (field 2; our 8-bit impact). With
millions of postings that encoding is the export's inner loop, so it is one kernel over all
lists: the bytes of every list's repeated field, end to end, and where each list starts.
"""

import numba as nb
import numpy as np

POSTING_FIELD_TAG = 0x22  # field 4, wire type 2 (length-delimited): one Posting message
DOCID_TAG = 0x08  # field 1, varint
TF_TAG = 0x10  # field 2, varint


@nb.njit(cache=True, nogil=True)
def varint_size(value):
    """Bytes of ``value`` (non-negative) as a protobuf varint."""
    size = 1
    while value >= 128:
        value >>= 7
        size += 1
    return size


@nb.njit(cache=True, nogil=True)
def _put_varint(out, pos, value):
    while value >= 128:
        out[pos] = np.uint8((value & 127) | 128)
        value >>= 7
        pos += 1
    out[pos] = np.uint8(value)
    return pos + 1


@nb.njit(cache=True, nogil=True)
def _posting_size(gap, tf):
    """Bytes of one Posting message's body; proto3 leaves out fields that are zero."""
    size = 0
    if gap:
        size += 1 + varint_size(gap)
    if tf:
        size += 1 + varint_size(tf)
    return size


@nb.njit(cache=True, nogil=True)
def ciff_postings(offsets, docs, impacts):
    """The repeated ``Posting`` fields of every list: ``(data, starts)`` where list ``t``'s
    bytes are ``data[starts[t]:starts[t + 1]]``. ``docs`` (ascending within a list) are
    written as d-gaps, ``impacts`` as the ``tf`` values."""
    n_terms = offsets.shape[0] - 1
    starts = np.zeros(n_terms + 1, dtype=np.int64)
    for t in range(n_terms):
        size = 0
        previous = 0
        for p in range(offsets[t], offsets[t + 1]):
            doc = np.int64(docs[p])
            body = _posting_size(doc - previous, np.int64(impacts[p]))
            size += 1 + varint_size(body) + body
            previous = doc
        starts[t + 1] = starts[t] + size
    data = np.empty(starts[n_terms], dtype=np.uint8)
    for t in range(n_terms):
        pos = starts[t]
        previous = 0
        for p in range(offsets[t], offsets[t + 1]):
            doc = np.int64(docs[p])
            gap = doc - previous
            tf = np.int64(impacts[p])
            data[pos] = POSTING_FIELD_TAG
            pos = _put_varint(data, pos + 1, _posting_size(gap, tf))
            if gap:
                data[pos] = DOCID_TAG
                pos = _put_varint(data, pos + 1, gap)
            if tf:
                data[pos] = TF_TAG
                pos = _put_varint(data, pos + 1, tf)
            previous = doc
    return data, starts
