"""Numba kernels for the inverted index: postings construction, quantization, scoring, top-k.

Every kernel takes and returns plain numpy arrays, is compiled with ``cache=True`` and releases
the GIL (``nogil=True``) so that callers can run several of them in threads.
"""

from kernels.postings import csr_to_postings, merge_runs, term_max
from kernels.quantize import dequantize_scale, quantize_uint8
from kernels.scoring import search_batch, search_one
from kernels.topk import select_topk

__all__ = [
    "csr_to_postings",
    "dequantize_scale",
    "merge_runs",
    "quantize_uint8",
    "search_batch",
    "search_one",
    "select_topk",
    "term_max",
]
