"""The inverted index: build from sparse vectors, save/load (Arrow IPC + JSON manifest), search.

Knows nothing of torch or tokenizers: it takes ``scipy.sparse.csr_array`` batches whose
columns are term ids of a vocabulary that is stored with the index.
"""

from lsr.index.clustered import ClusteredIndex
from lsr.index.errors import IndexFormatError, VocabularyMismatchError
from lsr.index.filters import Field, Filter, parse_filter
from lsr.index.inverted import Index, IndexBuilder
from lsr.index.live import LiveIndex
from lsr.index.results import Hit, Hits, Searchable, SearchResults, merge_topk

__all__ = [
    "ClusteredIndex",
    "Field",
    "Filter",
    "Hit",
    "Hits",
    "Index",
    "IndexBuilder",
    "IndexFormatError",
    "LiveIndex",
    "SearchResults",
    "Searchable",
    "VocabularyMismatchError",
    "merge_topk",
    "parse_filter",
]
