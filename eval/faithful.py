"""A synthetic corpus fitted to real encoded vectors, for benchmarks at any scale.

:mod:`lsr.eval.synthetic` draws every term independently: its documents have none of the
topical clustering of real text, which is what clustered indexes (Seismic's block summaries)
and block-max pruning over a reordered index exploit. This generator is fitted to a sample of
real vectors (say SciFact encoded with splade-tiny, documents and queries) and reproduces:

- **topics**: spherical k-means on the real documents gives coarse topics, each a term
  distribution (the topic's document frequencies, smoothed with the corpus's); a document
  belongs to a *fine topic* (about :data:`DOCS_PER_FINE_TOPIC` documents each, however large
  the corpus) whose focus set of terms it draws from with probability ``focus_share``, so
  near neighbours exist at every scale;
- **lengths**: non-zeros per document and per query, drawn from the real ones;
- **weights**: each term's weights drawn from that term's real quantiles (terms seen fewer
  than :data:`MIN_OCCURRENCES` times use those of terms of similar document frequency),
  separately for documents and queries;
- **relevance**: a query is written from a document of the corpus, ``from_document`` of its
  terms picked from that document at random (each weighted at the quantile level its weight
  had there) and the rest from its topic.

``focus_share`` and ``from_document`` are calibrated on a synthetic sample the size of the
real one: the first to the real median nearest-neighbour cosine between documents, the
second to the real median ratios of a query's 1st to 10th and 10th to 100th best scores
(the sum of their relative errors). :func:`lsr.eval.faithful_validation.validate` sets the
statistics of real, fitted and independent-term samples side by side.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import scipy.sparse as sp

from lsr.errors import InputError
from lsr.kernels.synthetic import DocumentModel, document_lengths, draw_documents, draw_queries

logger = logging.getLogger(__name__)

DOCS_PER_TOPIC = 40  # real documents per coarse topic in the k-means
MAX_TOPICS = 256
DOCS_PER_FINE_TOPIC = 16
QUANTILES = 17  # weight quantiles kept per term: 0, 1/16, ..., 1
MIN_OCCURRENCES = 8  # a term's own quantiles need this many real weights
HEAD_RATE = 0.25  # terms in this share of a topic's documents are drawn by their rate
SMOOTHING = 0.05  # share of the corpus-wide term distribution in each topic's
FOCUS_SHARES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
FROM_DOCUMENT = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
KMEANS_ITERATIONS = 10
SIMILARITY_SAMPLE = 1000  # documents whose nearest neighbour is searched
DOC_SEED, QUERY_SEED = 0, 1


@dataclass
class FaithfulModel:
    """A fitted generator: draw documents with :meth:`corpus`, queries with :meth:`queries`."""

    prior: np.ndarray  # (topics,) cumulative topic sizes
    topics: np.ndarray  # (topics, vocab) cumulative term distributions, float64
    heads: np.ndarray  # (topics, H) each topic's head terms (-1 pads)
    head_rates: np.ndarray  # (topics, H) the share of the topic's documents that have each
    lengths: np.ndarray  # real non-zeros per document
    weights: np.ndarray  # (vocab, QUANTILES) document weight quantiles per term
    query_lengths: np.ndarray
    query_weights: np.ndarray  # (vocab, QUANTILES)
    focus_size: int
    focus_share: float = 0.3
    from_document: float = 0.5

    @property
    def vocab_size(self) -> int:
        return int(self.topics.shape[1])

    @staticmethod
    def fine_topics(n_docs: int) -> int:
        return max(1, n_docs // DOCS_PER_FINE_TOPIC)

    def _kernel_model(self, n_docs: int) -> DocumentModel:
        """The document side as the kernels take it, for a corpus of ``n_docs``."""
        return DocumentModel(
            self.prior, self.topics, self.heads, self.head_rates, self.lengths, self.weights,
            self.fine_topics(n_docs), self.focus_size, float(self.focus_share),
        )  # fmt: skip

    def corpus(
        self, n_docs: int, chunk: int = 100_000, seed: int = DOC_SEED
    ) -> Iterator[tuple[sp.csr_array, list[str]]]:
        """``(vectors, doc_ids)`` chunks of ``n_docs`` documents (ids ``d0``, ``d1``, ...);
        the same documents whatever ``chunk`` is."""
        n_fine = self.fine_topics(n_docs)
        for lo in range(0, n_docs, chunk):
            hi = min(n_docs, lo + chunk)
            sizes = document_lengths(lo, hi, seed, n_fine, self.lengths)
            indptr = np.zeros(hi - lo + 1, dtype=np.int64)
            np.cumsum(sizes, out=indptr[1:])
            indices, data = draw_documents(
                lo, hi, seed, self._kernel_model(n_docs), indptr, 4 * numba.get_num_threads()
            )
            m = sp.csr_array((data, indices, indptr), shape=(hi - lo, self.vocab_size))
            yield m, [f"d{i}" for i in range(lo, hi)]

    def queries(
        self, n_queries: int, n_docs: int, seed: int = QUERY_SEED, doc_seed: int = DOC_SEED
    ) -> tuple[sp.csr_array, np.ndarray]:
        """``n_queries`` query vectors for the corpus of ``n_docs`` documents drawn with
        ``doc_seed``, and the number of the document each was written from."""
        indptr, indices, data, sources = draw_queries(
            n_queries, seed, n_docs, doc_seed, self._kernel_model(n_docs), self.query_lengths,
            self.from_document, self.query_weights,
        )  # fmt: skip
        return sp.csr_array((data, indices, indptr), shape=(n_queries, self.vocab_size)), sources

    def documents(self, n_docs: int) -> sp.csr_array:
        """A whole corpus of ``n_docs``, in memory, as one CSR matrix."""
        return sp.vstack([m for m, _ in self.corpus(n_docs)], format="csr")

    def sample(self, n_docs: int, n_queries: int) -> tuple[sp.csr_array, sp.csr_array]:
        """A whole corpus of ``n_docs`` and ``n_queries`` queries, in memory."""
        return self.documents(n_docs), self.queries(n_queries, n_docs)[0]

    def save(self, path: str | Path) -> None:
        """Write the model to an ``.npz`` file."""
        np.savez_compressed(path, **{k: np.asarray(v) for k, v in vars(self).items()})

    @classmethod
    def load(cls, path: str | Path) -> FaithfulModel:
        """A model written by :meth:`save`, or an error saying what the file is not."""
        try:
            with np.load(path) as f:
                values = {k: f[k] for k in f.files}
        except (OSError, ValueError) as e:
            raise InputError(f"{path} is not a generator saved by --save-generator ({e}).") from e
        missing = sorted(set(cls.__dataclass_fields__) - set(values))
        if missing:
            raise InputError(f"{path} is not a saved generator: it lacks {', '.join(missing)}.")
        values["focus_size"] = int(values["focus_size"])
        values["focus_share"] = float(values["focus_share"])
        values["from_document"] = float(values["from_document"])
        return cls(**{k: values[k] for k in cls.__dataclass_fields__})


def fit(
    docs: sp.csr_array,
    queries: sp.csr_array | None = None,
    calibrate: bool = True,
    seed: int = 0,
) -> FaithfulModel:
    """Fit the generator to real document vectors and, when given, their queries' (without
    queries, the query side copies the document side with lengths a fifth as long)."""
    docs = _checked(docs, "documents")
    if queries is not None:
        queries = _checked(queries, "queries")
        if queries.shape[1] != docs.shape[1]:
            raise InputError(
                f"The queries have {queries.shape[1]:,} columns, the documents "
                f"{docs.shape[1]:,}: encode both with one encoder."
            )
    n, vocab = docs.shape
    n_topics = int(np.clip(n // DOCS_PER_TOPIC, 1, MAX_TOPICS))
    labels = _spherical_kmeans(docs, n_topics, seed)
    present = sp.csr_array((np.ones(docs.nnz), docs.indices, docs.indptr), shape=docs.shape)
    df = np.asarray(present.sum(axis=0)).ravel()
    background = df / df.sum()
    topics = np.empty((n_topics, vocab), dtype=np.float64)
    sizes = np.bincount(labels, minlength=n_topics).astype(np.float64)
    rates = []
    for z in range(n_topics):
        counts = np.asarray(present[labels == z].sum(axis=0)).ravel()
        p = (1 - SMOOTHING) * counts / max(counts.sum(), 1) + SMOOTHING * background
        topics[z] = np.cumsum(p)
        rates.append(counts / max(sizes[z], 1))
    heads, head_rates = _heads(np.asarray(rates))
    lengths = np.diff(docs.indptr).astype(np.int64)
    weights = _quantile_table(docs, df)
    if queries is not None:  # _checked refused empty queries
        query_lengths = np.diff(queries.indptr).astype(np.int64)
        query_weights = _quantile_table(queries, df)
    else:
        query_lengths = np.maximum(lengths // 5, 1)
        query_weights = weights
    model = FaithfulModel(
        prior=np.cumsum(sizes),
        topics=topics,
        heads=heads,
        head_rates=head_rates,
        lengths=lengths,
        weights=weights,
        query_lengths=query_lengths,
        query_weights=query_weights,
        focus_size=int(np.median(lengths)),
    )
    if calibrate:
        _calibrate(model, docs, queries)
    return model


def _heads(rates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per topic, the terms found in at least :data:`HEAD_RATE` of its documents, most common
    first, and that share (padded with -1 and 0)."""
    lists = [np.flatnonzero(r >= HEAD_RATE) for r in rates]
    lists = [terms[np.argsort(-rates[z][terms], kind="stable")] for z, terms in enumerate(lists)]
    width = max(1, max(len(terms) for terms in lists))
    heads = np.full((len(lists), width), -1, dtype=np.int32)
    head_rates = np.zeros((len(lists), width), dtype=np.float32)
    for z, terms in enumerate(lists):
        heads[z, : len(terms)] = terms
        head_rates[z, : len(terms)] = rates[z][terms]
    return heads, head_rates


def _checked(m, what: str) -> sp.csr_array:
    m = sp.csr_array(m, dtype=np.float32)
    if m.shape[0] == 0 or m.nnz == 0:
        raise InputError(f"The real {what} are empty: nothing to fit the generator to.")
    if m.data.min() < 0 or not np.isfinite(m.data).all():
        raise InputError(f"The real {what} have negative or non-finite weights.")
    m.sum_duplicates()
    m.sort_indices()
    return m


def unit_rows(m: sp.csr_array) -> sp.csr_array:
    """Each row scaled to unit length (for cosine similarities)."""
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return sp.csr_array(sp.diags_array(1.0 / np.maximum(norms, 1e-12)) @ m)


def _spherical_kmeans(docs: sp.csr_array, n_topics: int, seed: int) -> np.ndarray:
    """Topic of each document: k-means on the unit sphere (cosine), started from random
    documents."""
    x = unit_rows(docs)
    rng = np.random.default_rng(seed)
    centroids = x[rng.choice(x.shape[0], n_topics, replace=False)].toarray()
    labels = np.zeros(x.shape[0], dtype=np.int64)
    for _ in range(KMEANS_ITERATIONS):
        labels = np.asarray(x @ centroids.T).argmax(axis=1)
        for z in range(n_topics):
            members = labels == z
            if members.any():
                c = np.asarray(x[members].sum(axis=0)).ravel()
                centroids[z] = c / max(np.linalg.norm(c), 1e-12)
    return labels


def _quantile_table(m: sp.csr_array, df: np.ndarray) -> np.ndarray:
    """Weight quantiles per term: its own where it has :data:`MIN_OCCURRENCES` weights,
    otherwise those of all the terms in its band of document frequency (powers of two)."""
    vocab = m.shape[1]
    levels = np.linspace(0.0, 1.0, QUANTILES)
    csc = sp.csc_array(m)
    table = np.empty((vocab, QUANTILES), dtype=np.float32)
    bands = np.floor(np.log2(np.maximum(df, 1))).astype(np.int64)
    overall = np.quantile(m.data, levels)
    band_tables = {}
    for band in np.unique(bands):
        terms = np.flatnonzero(bands == band)
        values = np.concatenate([csc.data[csc.indptr[t] : csc.indptr[t + 1]] for t in terms])
        band_tables[band] = np.quantile(values, levels) if values.size else overall
    counts = np.diff(csc.indptr)
    for t in range(vocab):
        if counts[t] >= MIN_OCCURRENCES:
            table[t] = np.quantile(csc.data[csc.indptr[t] : csc.indptr[t + 1]], levels)
        else:
            table[t] = band_tables[bands[t]]
    return table


def nearest_neighbour_similarity(docs: sp.csr_array, sample: int = SIMILARITY_SAMPLE) -> np.ndarray:
    """Cosine of each of the first ``sample`` documents to its nearest other document."""
    x = unit_rows(docs)
    head = x[: min(sample, x.shape[0])]
    sims = np.asarray((head @ x.T).toarray())
    sims[np.arange(head.shape[0]), np.arange(head.shape[0])] = -1.0
    return sims.max(axis=1)


def score_ratio(queries: sp.csr_array, docs: sp.csr_array, a: int = 10, b: int = 100) -> np.ndarray:
    """Per query, its ``a``-th best score over its ``b``-th (how far the top stands out)."""
    scores = np.asarray((queries @ docs.T).toarray())
    b = min(b, docs.shape[0])
    top = -np.partition(-scores, (a - 1, b - 1), axis=1)
    return top[:, a - 1] / np.maximum(top[:, b - 1], 1e-12)


def _calibrate(model: FaithfulModel, docs: sp.csr_array, queries: sp.csr_array | None) -> None:
    """Set ``focus_share`` and then ``from_document`` to the grid values whose synthetic
    sample (the real one's size) is closest to the real medians."""
    n = docs.shape[0]
    target = float(np.median(nearest_neighbour_similarity(docs)))
    best = []
    for share in FOCUS_SHARES:
        model.focus_share = share
        got = float(np.median(nearest_neighbour_similarity(model.documents(n))))
        best.append((abs(got - target), share, got))
    _, model.focus_share, got = min(best)
    logger.info("focus share %.2f: nearest-neighbour cosine %.3f (real %.3f)",
                model.focus_share, got, target)  # fmt: skip
    if queries is None:
        return
    targets = _relevance(queries, docs)
    synthetic = model.documents(n)  # with the focus share chosen
    best = []
    for share in FROM_DOCUMENT:
        model.from_document = share
        got = _relevance(model.queries(queries.shape[0], n)[0], synthetic)
        error = sum(abs(g - t) / t for g, t in zip(got, targets, strict=True))
        best.append((error, share, got))
    _, model.from_document, got = min(best)
    logger.info(
        "from document %.2f: score ratios 1st/10th %.3f, 10th/100th %.3f (real %.3f, %.3f)",
        model.from_document, *got, *targets,
    )  # fmt: skip


def _relevance(queries: sp.csr_array, docs: sp.csr_array) -> tuple[float, float]:
    """Median ratios of a query's 1st to 10th and 10th to 100th best scores."""
    return (
        float(np.median(score_ratio(queries, docs, 1, 10))),
        float(np.median(score_ratio(queries, docs))),
    )
