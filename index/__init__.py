"""The inverted index and the collection: build an index from sparse vectors, save and load it
(Arrow IPC + JSON manifest), search it; a collection of such segments under commit points,
with a write buffer, a write-ahead log, deletions, stored documents, filters and merges.

Knows nothing of torch or tokenizers: it takes ``scipy.sparse.csr_array`` batches whose
columns are term ids of a vocabulary that is stored with the index.
"""

from lsr.index.clustered import ClusteredIndex
from lsr.index.compressed import CompressedIndex, CompressedIndexWriter
from lsr.index.errors import IndexFormatError, VocabularyMismatchError
from lsr.index.filters import Field, Filter, parse_filter
from lsr.index.inverted import Index, IndexBuilder
from lsr.index.live import LiveIndex
from lsr.index.merge_policy import SegmentInfo, TieredMergePolicy
from lsr.index.results import Hit, Hits, Searchable, SearchResults, merge_topk

__all__ = [
    "ClusteredIndex",
    "CompressedIndex",
    "CompressedIndexWriter",
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
    "SegmentInfo",
    "TieredMergePolicy",
    "VocabularyMismatchError",
    "merge_topk",
    "parse_filter",
]
