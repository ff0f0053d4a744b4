"""Training examples for sparse encoders: JSONL triples, or BEIR qrels with BM25 negatives.

A JSONL line is ``{"query": str, "positive": str, "negatives": [str, ...], "scores": [...]}``;
``scores`` (optional) are teacher scores for ``[positive, *negatives]`` used by the
distillation losses.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lsr.bm25 import BM25Encoder
from lsr.corpus import read_corpus, read_qrels, read_queries
from lsr.errors import CorpusError

logger = logging.getLogger(__name__)


@dataclass
class TrainingExample:
    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)
    scores: list[float] | None = None


def read_triples(path: str | Path) -> list[TrainingExample]:
    """Examples from a JSONL file, each line checked (one clear error per bad line)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"Training file {path} does not exist.")
    examples = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{where}: not valid JSON ({e.msg}).") from e
            if (
                not isinstance(rec, dict)
                or not isinstance(rec.get("query"), str)
                or not isinstance(rec.get("positive"), str)
            ):
                raise CorpusError(f"{where}: needs string fields 'query' and 'positive'.")
            negs = rec.get("negatives", [])
            if not isinstance(negs, list) or not all(isinstance(n, str) for n in negs):
                raise CorpusError(f"{where}: 'negatives' must be a list of strings.")
            scores = rec.get("scores")
            if scores is not None and (
                not isinstance(scores, list)
                or len(scores) != 1 + len(negs)
                or not all(isinstance(s, (int, float)) for s in scores)
            ):
                raise CorpusError(
                    f"{where}: 'scores' must hold one number per positive and negative."
                )
            examples.append(TrainingExample(rec["query"], rec["positive"], negs, scores))
    if not examples:
        raise CorpusError(f"{path} holds no training examples.")
    return examples


def beir_examples(
    folder: str | Path,
    split: str = "train",
    n_negatives: int = 4,
    depth: int = 50,
    seed: int = 13,
) -> list[TrainingExample]:
    """One example per (query, relevant doc) of a BEIR split, with BM25-mined hard negatives.

    Negatives are drawn from the top ``depth`` BM25 hits of the query that are not judged
    relevant; scores are the BM25 scores of the positive and each negative.
    """
    folder = Path(folder)
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    queries = read_queries(folder / "queries.jsonl")
    docs = list(read_corpus(folder))
    texts = {d.id: d.contents for d in docs}
    ids = [d.id for d in docs]
    position = {d: i for i, d in enumerate(ids)}
    bm25 = BM25Encoder().fit(texts[i] for i in ids)
    doc_matrix = bm25.encode_documents([texts[i] for i in ids]).T.tocsr()
    rng = np.random.default_rng(seed)
    qids = [q for q in qrels if q in queries]
    if not qids:
        raise CorpusError(f"{folder}: no query of split {split!r} has judgements and text.")
    examples = []
    for lo in range(0, len(qids), 256):
        batch = qids[lo : lo + 256]
        scores = (bm25.encode_queries([queries[q] for q in batch]) @ doc_matrix).toarray()
        for row, qid in zip(scores, batch, strict=True):
            relevant = {d for d, r in qrels[qid].items() if r > 0}
            top = np.argsort(-row, kind="stable")[: depth + len(relevant)]
            pool = [int(i) for i in top if ids[i] not in relevant and row[i] > 0][:depth]
            for pos in relevant:
                if pos not in texts:
                    continue
                picked = (
                    rng.choice(pool, size=min(n_negatives, len(pool)), replace=False)
                    if pool
                    else []
                )
                pos_score = float(row[position[pos]])
                examples.append(
                    TrainingExample(
                        query=queries[qid],
                        positive=texts[pos],
                        negatives=[texts[ids[i]] for i in picked],
                        scores=[pos_score] + [float(row[i]) for i in picked],
                    )
                )
    logger.info("%d training examples from %s (%s)", len(examples), folder, split)
    return examples
