"""Training examples from a BEIR split, with hard negatives mined through an index, and the
``lsr train`` entry point that loads a config's examples and runs the trainer."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lsr.bm25 import BM25Encoder
from lsr.corpus import Document, read_corpus, read_qrels, read_queries
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
    pseudo_queries: int = 0,
) -> list[TrainingExample]:
    """One example per (query, relevant doc) of a BEIR split, with hard negatives mined
    through an index, then ``pseudo_queries`` examples of :func:`_pseudo_query_examples`.

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
    reached: set[str] = set()  # the documents the split's queries retrieve or judge
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
            reached.update(d for d, _ in pool)
            reached.update(d for d in relevant if d in texts)
            query = bm25_vectors[[row]]
            for pos in relevant:
                if pos not in texts:
                    continue
                picked = _draw(len(pool), n_negatives, rng)
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
    if pseudo_queries:
        sources = [d for d in docs if d.id in reached]  # in corpus order: the same every run
        examples += _pseudo_query_examples(
            sources, texts, bm25, index, pseudo_queries, n_negatives, depth, rng
        )
    return examples


SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")
PSEUDO_QUERY_WORDS = (6, 60)  # the lengths of sentence a pseudo-query may be, in words
PSEUDO_MIN_SENTENCES = 3  # the positive keeps at least two of its document's sentences


def _pseudo_query_examples(
    sources: list[Document],
    texts: dict[str, str],
    bm25: BM25Encoder,
    index: Index,
    n: int,
    n_negatives: int,
    depth: int,
    rng: np.random.Generator,
) -> list[TrainingExample]:
    """Up to ``n`` examples without judgements, as in the inverse cloze task: the query is
    one sentence taken out of a document's text, the positive is the rest of the document,
    the negatives are BM25's top ``depth`` hits for the sentence (its document left out).

    Only documents the split's own queries reached are used (``sources``), so no text enters
    training that the labelled examples did not already bring. Claims and the abstracts that
    support them are what SciFact pairs; an abstract's own sentence against the rest of it is
    the nearest pair without a label, and the teachers' scores (MarginMSE) say how much better
    it fits than each negative. ``scores`` are BM25's, like a labelled example's."""
    candidates = []
    for doc in sources:
        sentences = SENTENCE_END.split(doc.text.strip())
        lo, hi = PSEUDO_QUERY_WORDS
        usable = [i for i, t in enumerate(sentences) if lo <= len(t.split()) <= hi]
        if len(sentences) >= PSEUDO_MIN_SENTENCES and usable:
            candidates.append((doc, sentences, usable))
    picked = rng.permutation(len(candidates))[:n]
    examples = []
    for lo in range(0, len(picked), QUERY_BATCH):
        batch = []
        for c in picked[lo : lo + QUERY_BATCH]:
            doc, sentences, usable = candidates[c]
            cut = usable[rng.integers(len(usable))]
            rest = " ".join(t for i, t in enumerate(sentences) if i != cut)
            batch.append((doc.id, sentences[cut], Document(doc.id, rest, doc.title).contents))
        vectors = bm25.encode_queries([query for _, query, _ in batch])
        positives = bm25.encode_documents([positive for _, _, positive in batch])
        results = index.search(vectors, depth + 1)
        for row, (doc_id, query, positive) in enumerate(batch):
            pool = [(d, s) for d, s in results[row].items() if d != doc_id][:depth]
            chosen = _draw(len(pool), n_negatives, rng)
            score = float((positives[[row]] @ vectors[[row]].T).sum())
            examples.append(
                TrainingExample(
                    query=query,
                    positive=positive,
                    negatives=[texts[pool[i][0]] for i in chosen],
                    scores=[score] + [float(pool[i][1]) for i in chosen],
                )
            )
    logger.info("%d pseudo-query examples from %d documents", len(examples), len(sources))
    return examples


def _draw(pool: int, n: int, rng: np.random.Generator) -> list[int]:
    """``n`` distinct positions of a pool of ``pool`` mined hits (all of them if fewer)."""
    return rng.choice(pool, size=min(n, pool), replace=False).tolist() if pool else []


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
        config.pseudo_queries,
    )
    return with_teacher_scores(examples, list(config.teachers)) if config.teachers else examples


def trainer_for(config: TrainConfig) -> Trainer:
    """A :class:`~lsr.training.Trainer` with the config's examples loaded."""
    return Trainer(config, training_examples(config))


def run_training(config: TrainConfig, progress: bool = False) -> tuple[Trainer, list[dict]]:
    """``lsr train``: the trainer after its run, and the history of the query factors it
    then learned (empty without ``query_factors``). The model is in ``config.output``."""
    trainer = trainer_for(config)
    out = trainer.train(progress=progress)
    history = fit_query_factors(out, config, progress) if config.query_factors else []
    return trainer, history


FACTORS_LOG = "query_factors_log.jsonl"


def fit_query_factors(
    folder: str | Path, config: TrainConfig, progress: bool = False
) -> list[dict]:
    """Learn the query-token factors of the inference-free model saved in ``folder`` from
    the judgements of ``config``'s BEIR split (:mod:`lsr.query_factors`), over the corpus
    encoded by that model, and save the model with them; one history row per epoch, also
    written to ``query_factors_log.jsonl``."""
    import json

    from lsr.encoders import load_encoder
    from lsr.pipeline.indexing import encode_all
    from lsr.query_factors import learn_query_factors

    folder = Path(folder)
    encoder = load_encoder(f"inference-free:{folder}")
    beir = Path(config.beir)
    docs = list(read_corpus(beir))
    row = {d.id: i for i, d in enumerate(docs)}
    qrels = read_qrels(beir / "qrels" / f"{config.split}.tsv")
    queries = read_queries(beir / "queries.jsonl")
    qids = [q for q in qrels if q in queries]
    positives = [[row[d] for d, r in qrels[q].items() if r > 0 and d in row] for q in qids]
    documents = encode_all(docs, encoder, batch_size=64, progress=progress, name="query factors")
    factors, history = learn_query_factors(
        encoder.encode_queries([queries[q] for q in qids]),
        documents,
        positives,
        config.query_factors,
        config.seed,
        progress,
    )
    encoder.set_query_factors(factors)
    encoder.save_pretrained(folder)
    with open(folder / FACTORS_LOG, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(h) + "\n" for h in history)
    logger.info("query factors learned from %d queries: %s", len(qids), history[-1])
    return history
