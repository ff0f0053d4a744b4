"""Training examples from a BEIR split, with hard negatives mined through an index, and the
``lsr train`` entry point that loads a config's examples and runs the trainer."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lsr.bm25 import BM25Encoder
from lsr.corpus import read_corpus, read_qrels, read_queries
from lsr.errors import CorpusError
from lsr.index import Index
from lsr.training import TrainConfig, Trainer
from lsr.training_data import TrainingExample, read_triples

logger = logging.getLogger(__name__)
QUERY_BATCH = 1024  # queries searched per batched (parallel) kernel call


def beir_examples(
    folder: str | Path,
    split: str = "train",
    n_negatives: int = 4,
    depth: int = 50,
    seed: int = 13,
) -> list[TrainingExample]:
    """One example per (query, relevant doc) of a BEIR split, with BM25-mined hard negatives.

    The corpus is indexed with BM25 (float32 impacts, so scores are exact dot products) and
    each query's top ``depth`` + (its relevant documents) are retrieved through the index, a
    batch of queries per kernel call: memory grows with the index, not with queries x
    documents. Negatives are drawn from the top ``depth`` hits that are not judged relevant;
    scores are the BM25 scores of the positive and of each negative.
    """
    folder = Path(folder)
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    queries = read_queries(folder / "queries.jsonl")
    texts = {d.id: d.contents for d in read_corpus(folder)}
    qids = [q for q in qrels if q in queries]
    if not qids:
        raise CorpusError(f"{folder}: no query of split {split!r} has judgements and text.")
    ids = list(texts)
    bm25 = BM25Encoder().fit(texts[i] for i in ids)
    index = Index.build(
        bm25.encode_documents([texts[i] for i in ids]), ids, bm25.vocab, quantization="float32"
    )
    rng = np.random.default_rng(seed)
    examples = []
    for lo in range(0, len(qids), QUERY_BATCH):
        batch = qids[lo : lo + QUERY_BATCH]
        vectors = bm25.encode_queries([queries[q] for q in batch])
        most_relevant = max(sum(r > 0 for r in qrels[q].values()) for q in batch)
        results = index.search(vectors, depth + most_relevant)
        for row, qid in enumerate(batch):
            relevant = [d for d, r in qrels[qid].items() if r > 0]  # in the qrels' order
            judged = set(relevant)
            hits = results[row]
            pool = [(d, s) for d, s in hits.items() if d not in judged][:depth]
            query = vectors[[row]]
            for pos in relevant:
                if pos not in texts:
                    continue
                doc_weights = index.term_weights(index.doc_index(pos), query.indices)
                pos_score = float(np.dot(doc_weights, query.data))
                picked = (
                    rng.choice(len(pool), size=min(n_negatives, len(pool)), replace=False)
                    if pool
                    else []
                )
                examples.append(
                    TrainingExample(
                        query=queries[qid],
                        positive=texts[pos],
                        negatives=[texts[pool[i][0]] for i in picked],
                        scores=[pos_score] + [float(pool[i][1]) for i in picked],
                    )
                )
    logger.info("%d training examples from %s (%s)", len(examples), folder, split)
    return examples


def with_teacher_scores(
    examples: list[TrainingExample], teachers: Sequence[str], batch_size: int = 64
) -> list[TrainingExample]:
    """The examples with every teacher's scores of their positive and negatives
    (``scores``: teacher name -> list). ``bm25`` is the BM25 score the mining computed; any
    other name is an encoder spec (a model folder, a saved encoder, ``dense:wordllama``),
    scoring by the dot product of its query and document vectors."""
    from lsr.encoders import load_encoder

    scores: dict[str, list[list[float]]] = {}
    queries = sorted({e.query for e in examples})
    documents = sorted({d for e in examples for d in (e.positive, *e.negatives)})
    for name in teachers:
        if name == "bm25":
            scores[name] = [list(e.scores) for e in examples]
            continue
        encoder = load_encoder(name)
        encoder.batch_size = batch_size
        q = encoder.encode_queries(queries)
        d = encoder.encode_documents(documents)
        q_row = {t: i for i, t in enumerate(queries)}
        d_row = {t: i for i, t in enumerate(documents)}
        scores[name] = [
            _dot(d[[d_row[t] for t in (e.positive, *e.negatives)]], q[[q_row[e.query]]])
            for e in examples
        ]
        logger.info("teacher %s scored %d examples", name, len(examples))
    return [
        TrainingExample(e.query, e.positive, e.negatives, {n: scores[n][i] for n in teachers})
        for i, e in enumerate(examples)
    ]


def _dot(documents, query) -> list[float]:
    """Scores of document rows against one query row, sparse or dense alike."""
    scores = documents @ query.T
    return np.asarray(scores.toarray() if hasattr(scores, "toarray") else scores).ravel().tolist()


def training_examples(config: TrainConfig) -> list[TrainingExample]:
    """The examples a config names: its JSONL triples, or its BEIR split with mined negatives
    (and, with ``teachers``, each teacher's scores of them)."""
    if config.triples:
        return read_triples(config.triples)
    examples = beir_examples(
        config.beir, config.split, config.negatives, config.negative_depth, config.seed
    )
    return with_teacher_scores(examples, list(config.teachers)) if config.teachers else examples


def trainer_for(config: TrainConfig) -> Trainer:
    """A :class:`~lsr.training.Trainer` with the config's examples loaded."""
    return Trainer(config, training_examples(config))
