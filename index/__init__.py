"""The inverted index: build from sparse vectors, save/load (Arrow IPC + JSON manifest), search.

Knows nothing of torch or tokenizers: it takes ``scipy.sparse.csr_array`` batches whose
columns are term ids of a vocabulary that is stored with the index.
"""

from index.builder import IndexBuilder
from index.clustered import ClusteredIndex
from index.errors import IndexFormatError, VocabularyMismatchError
from index.inverted import Index, SearchResults
from index.live import LiveIndex

__all__ = [
    "ClusteredIndex",
    "Index",
    "IndexBuilder",
    "IndexFormatError",
    "LiveIndex",
    "SearchResults",
    "VocabularyMismatchError",
]
