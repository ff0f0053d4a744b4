"""Evaluation: datasets, runs, metrics (ir-measures), reports, benchmarks, synthetic corpora.

Indexing and searching themselves are :mod:`lsr.pipeline`'s; this package measures them.
"""

from lsr.eval.datasets import Dataset, load_dataset
from lsr.eval.metrics import DEFAULT_MEASURES, evaluate

__all__ = ["DEFAULT_MEASURES", "Dataset", "evaluate", "load_dataset"]
