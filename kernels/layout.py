"""How a posting is read: packed words or separate doc and impact arrays.

Indexes with uint8 impacts (and fewer than 2**24 documents) store each posting as one uint32
word, the doc number in the low 24 bits and the impact in the high 8: 4 bytes per posting and
a single memory access. Other indexes keep a uint32 doc array and a float32/uint8 impact
array. Kernels take ``(docs, impacts)`` either way and read postings through ``doc_at`` and
``impact_at``; a packed index passes an empty boolean ``impacts`` array, and the choice is
made when Numba compiles, so neither layout pays for the other.
"""

import numpy as np
from numba import types
from numba.extending import overload

DOC_BITS = 24
DOC_MASK = (1 << DOC_BITS) - 1
MAX_PACKED_DOCS = 1 << DOC_BITS
PACKED_MARKER = np.zeros(0, dtype=np.bool_)


def pack(docs: np.ndarray, impacts: np.ndarray) -> np.ndarray:
    """Packed uint32 words from doc numbers (< 2**24) and uint8 impacts."""
    return np.asarray(docs, np.uint32) | (np.asarray(impacts, np.uint32) << DOC_BITS)


def unpack_docs(words: np.ndarray) -> np.ndarray:
    return (words & np.uint32(DOC_MASK)).astype(np.uint32)


def unpack_impacts(words: np.ndarray) -> np.ndarray:
    return (words >> np.uint32(DOC_BITS)).astype(np.uint8)


def is_packed(impacts: np.ndarray) -> bool:
    return impacts.dtype == np.bool_


def doc_at(docs, impacts, i):
    """The doc number of posting ``i``."""
    if is_packed(impacts):
        return int(docs[i]) & DOC_MASK
    return int(docs[i])


def impact_at(docs, impacts, i):
    """The stored impact of posting ``i`` as float32."""
    if is_packed(impacts):
        return np.float32(int(docs[i]) >> DOC_BITS)
    return np.float32(impacts[i])


def _packed_type(impacts) -> bool:
    return isinstance(impacts, types.Array) and impacts.dtype == types.boolean


@overload(doc_at, inline="always")
def _doc_at(docs, impacts, i):
    if _packed_type(impacts):
        return lambda docs, impacts, i: docs[i] & np.uint32(DOC_MASK)
    return lambda docs, impacts, i: docs[i]


@overload(impact_at, inline="always")
def _impact_at(docs, impacts, i):
    if _packed_type(impacts):
        return lambda docs, impacts, i: np.float32(docs[i] >> np.uint32(DOC_BITS))
    return lambda docs, impacts, i: np.float32(impacts[i])
