"""Evaluation and the pipeline that ties encoders to the index: datasets, runs, metrics."""

from eval.datasets import Dataset, load_dataset
from eval.metrics import DEFAULT_MEASURES, evaluate
from eval.pipeline import IndexingSummary, Searcher, index_corpus, retrieve

__all__ = [
    "DEFAULT_MEASURES",
    "Dataset",
    "IndexingSummary",
    "Searcher",
    "evaluate",
    "index_corpus",
    "load_dataset",
    "retrieve",
]
