"""Training examples for sparse encoders, read from JSONL triples.

BEIR qrels with negatives mined through an index are :mod:`lsr.pipeline.training`'s.

A JSONL line is ``{"query": str, "positive": str, "negatives": [str, ...], "scores": [...]}``;
``scores`` (optional) are teacher scores for ``[positive, *negatives]`` used by the
distillation losses: one list, or one list per teacher (``{"ce": [...], "bm25": [...]}``),
combined with the weights of the training config's ``teachers:``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from lsr.corpus import json_records
from lsr.errors import CorpusError

logger = logging.getLogger(__name__)


@dataclass
class TrainingExample:
    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)
    scores: list[float] | dict[str, list[float]] | None = None


def read_triples(path: str | Path) -> list[TrainingExample]:
    """Examples from a JSONL file, each line checked (one clear error per bad line)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"Training file {path} does not exist.")
    examples = []
    for where, rec in json_records(path, "query, positive and negatives"):
        if not isinstance(rec.get("query"), str) or not isinstance(rec.get("positive"), str):
            raise CorpusError(f"{where}: needs string fields 'query' and 'positive'.")
        negs = rec.get("negatives", [])
        if not isinstance(negs, list) or not all(isinstance(n, str) for n in negs):
            raise CorpusError(f"{where}: 'negatives' must be a list of strings.")
        scores = rec.get("scores")
        lists = list(scores.values()) if isinstance(scores, dict) and scores else [scores]
        if scores is not None and not all(_score_list(s, 1 + len(negs)) for s in lists):
            raise CorpusError(
                f"{where}: 'scores' must hold one number per positive and negative "
                "(a list, or one list per teacher name)."
            )
        examples.append(TrainingExample(rec["query"], rec["positive"], negs, scores))
    if not examples:
        raise CorpusError(f"{path} holds no training examples.")
    return examples


def _score_list(scores: object, n: int) -> bool:
    return (
        isinstance(scores, list)
        and len(scores) == n
        and all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores)
    )
