"""Numba kernels for the inverted index: postings construction, quantization, scoring, top-k.

Every kernel takes and returns plain numpy arrays, is compiled with ``cache=True`` and releases
the GIL (``nogil=True``) so that callers can run several of them in threads.
"""

from lsr.kernels.blocks import build_blocks, term_max_impact
from lsr.kernels.dense import dense_rows
from lsr.kernels.dispatch import (
    AUTO,
    BMW,
    EXHAUSTIVE,
    MAXSCORE,
    MAXSCORE_TAAT,
    search_many,
    search_query,
    search_single,
)
from lsr.kernels.doc_ranges import doc_range_maxima, doc_range_starts
from lsr.kernels.postings import csr_to_postings, merge_runs
from lsr.kernels.pruned import bmw_one, maxscore_one
from lsr.kernels.quantize import dequantize_scale, quantize_uint8
from lsr.kernels.queries import top_terms
from lsr.kernels.scoring import scratch, search_one
from lsr.kernels.topk import select_topk

__all__ = [
    "AUTO",
    "BMW",
    "EXHAUSTIVE",
    "MAXSCORE",
    "MAXSCORE_TAAT",
    "bmw_one",
    "build_blocks",
    "csr_to_postings",
    "dense_rows",
    "dequantize_scale",
    "doc_range_maxima",
    "doc_range_starts",
    "maxscore_one",
    "merge_runs",
    "quantize_uint8",
    "scratch",
    "search_many",
    "search_one",
    "search_query",
    "search_single",
    "select_topk",
    "term_max_impact",
    "top_terms",
]
