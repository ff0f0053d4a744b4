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
    mine_with: str = "bm25",
) -> list[TrainingExample]:
    """One example per (query, relevant doc) of a BEIR split, with hard negatives mined
    through an index.

    ``mine_with`` names the retriever whose top ``depth`` hits (judged documents left out)
    the negatives are drawn from: ``bm25`` (the default), or any sparse encoder spec, e.g. the
    model being trained (``inference-free:PATH``), whose own mistakes are then what it learns
    from. Whatever mined them, an example's ``scores`` are the BM25 scores of its positive and
    negatives (the ``bm25`` teacher). Both indexes keep float32 impacts, so scores are exact
    dot products, and queries are searched a batch per kernel call: memory grows with the
    index, not with queries x documents.
    """
    folder = Path(folder)
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    queries = read_queries(folder / "queries.jsonl")
    docs = list(read_corpus(folder))
    texts = {d.id: d.contents for d in docs}
    qids = [q for q in qrels if q in queries]
    if not qids:
        raise CorpusError(f"{folder}: no query of split {split!r} has judgements and text.")
    ids = list(texts)
    bm25 = BM25Encoder().fit(texts[i] for i in ids)
    index = Index.build(
        bm25.encode_documents([texts[i] for i in ids]), ids, bm25.vocab, quantization="float32"
    )
    miner, mined = (bm25, index) if mine_with == "bm25" else _mining_index(mine_with, docs)
    rng = np.random.default_rng(seed)
    examples = []
    for lo in range(0, len(qids), QUERY_BATCH):
        batch = qids[lo : lo + QUERY_BATCH]
        texts_of_batch = [queries[q] for q in batch]
        vectors = miner.encode_queries(texts_of_batch)
        bm25_vectors = vectors if miner is bm25 else bm25.encode_queries(texts_of_batch)
        most_relevant = max(sum(r > 0 for r in qrels[q].values()) for q in batch)
        results = mined.search(vectors, depth + most_relevant)
        for row, qid in enumerate(batch):
            relevant = [d for d, r in qrels[qid].items() if r > 0]  # in the qrels' order
            judged = set(relevant)
            pool = [(d, s) for d, s in results[row].items() if d not in judged][:depth]
            query = bm25_vectors[[row]]
            for pos in relevant:
                if pos not in texts:
                    continue
                picked = (
                    rng.choice(len(pool), size=min(n_negatives, len(pool)), replace=False)
                    if pool
                    else []
                )
                negatives = [pool[i][0] for i in picked]
                scores = [_bm25_score(index, pos, query)] + (
                    [float(pool[i][1]) for i in picked]  # the index's own BM25 scores
                    if miner is bm25
                    else [_bm25_score(index, d, query) for d in negatives]
                )
                examples.append(
                    TrainingExample(
                        query=queries[qid],
                        positive=texts[pos],
                        negatives=[texts[d] for d in negatives],
                        scores=scores,
                    )
                )
    logger.info(
        "%d training examples from %s (%s), negatives mined with %s",
        len(examples), folder, split, mine_with,
    )  # fmt: skip
    return examples


def _bm25_score(index: Index, doc_id: str, query) -> float:
    weights = index.term_weights(index.doc_index(doc_id), query.indices)
    return float(np.dot(weights, query.data))


def _mining_index(spec: str, docs) -> tuple[object, Index]:
    """A sparse encoder and a float32 index of the corpus encoded by it, to mine with."""
    from lsr.dense import is_dense
    from lsr.encoders import load_encoder
    from lsr.pipeline.indexing import encode_all

    encoder = load_encoder(spec)
    if is_dense(encoder):
        raise CorpusError(f"mine_with needs a sparse encoder (or bm25); {spec} is dense.")
    vectors = encode_all(docs, encoder, batch_size=64, name=f"mining with {spec}")
    return encoder, Index.build(
        vectors, [d.id for d in docs], encoder.vocab, quantization="float32"
    )


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
        config.beir,
        config.split,
        config.negative_pool or config.negatives,
        config.negative_depth,
        config.seed,
        config.mine_with,
    )
    return with_teacher_scores(examples, list(config.teachers)) if config.teachers else examples


def trainer_for(config: TrainConfig) -> Trainer:
    """A :class:`~lsr.training.Trainer` with the config's examples loaded."""
    return Trainer(config, training_examples(config))
