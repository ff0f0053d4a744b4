"""The application layer: where encoders (:mod:`lsr`) meet the collection (:mod:`lsr.index`).

Encoders and the index never import each other; this package joins them for every front
end (the CLI, the REST service, the evaluation): corpus -> encoder -> index or vector file
(:mod:`~lsr.pipeline.indexing`), query text -> encoder -> index
(:mod:`~lsr.pipeline.searching`), and training examples with negatives mined through an
index (:mod:`~lsr.pipeline.training`, imported on its own: it loads torch).
"""

from lsr.pipeline.indexing import (
    ENCODER_DIR,
    IndexingSummary,
    build_index,
    encode_corpus_into,
    encode_queries_to_file,
    encode_to_file,
    index_corpus,
    index_pretokenized,
    read_documents,
)
from lsr.pipeline.searching import Searcher, rank, retrieve, search_topics

__all__ = [
    "ENCODER_DIR",
    "IndexingSummary",
    "Searcher",
    "build_index",
    "encode_corpus_into",
    "encode_queries_to_file",
    "encode_to_file",
    "index_corpus",
    "index_pretokenized",
    "rank",
    "read_documents",
    "retrieve",
    "search_topics",
]
