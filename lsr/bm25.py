"""BM25 as sparse vectors, so the unsupervised baseline runs through the same index as SPLADE.

Documents get BM25 term weights (Lucene's formulation, without the constant (k1 + 1) factor)::

    w(t, d) = idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl)),
    idf(t)  = log(1 + (N - df + 0.5) / (df + 0.5))

queries get raw term counts, so the dot product of the two is the BM25 score.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from lsr.encoder import read_config, write_config
from lsr.errors import EncoderError
from lsr.sparse import decode, term_counts
from lsr.tokenization import Tokenizer, WordTokenizer, tokenizer_from_config

logger = logging.getLogger(__name__)


class BM25Encoder:
    """BM25 weights over a tokenizer's vocabulary; ``fit`` it on the corpus first."""

    name = "bm25"
    queries_need_model = False  # queries are a table lookup (see lsr.encoder.Encoder)

    def __init__(self, tokenizer: Tokenizer | None = None, k1: float = 0.9, b: float = 0.4):
        if not (k1 >= 0 and 0 <= b <= 1):
            raise EncoderError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}.")
        self.tokenizer = tokenizer if tokenizer is not None else WordTokenizer()
        self.k1 = float(k1)
        self.b = float(b)
        self.n_docs = 0
        self.avgdl = 0.0
        self.df = np.zeros(0, dtype=np.int64)
        self._lookup: tuple | None = None  # (idf, known, term ids), computed once per fit

    @property
    def vocab(self) -> list[str]:
        return self.tokenizer.vocab

    @property
    def fitted(self) -> bool:
        return self.n_docs > 0

    def idf(self) -> np.ndarray:
        """Lucene's BM25 idf for every vocabulary term (terms absent from the corpus get 0)."""
        return self._tables()[0]

    def _tables(self) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """idf per term, whether the fitted corpus had the term, and term -> id: computed once
        per fitted state, not per call (a document written over REST is encoded alone)."""
        key = (self.n_docs, self.df.shape[0], len(self.vocab))
        if self._lookup is None or self._lookup[0] != key:
            idf = self._compute_idf()
            known = np.zeros(len(self.vocab), dtype=bool)
            known[: self.df.shape[0]] = self.df > 0
            ids = {t: i for i, t in enumerate(self.vocab)}
            self._lookup = (key, idf, known, ids)
        return self._lookup[1:]

    def _compute_idf(self) -> np.ndarray:
        df = np.zeros(len(self.vocab), dtype=np.float64)
        df[: self.df.shape[0]] = self.df
        idf = np.log1p((self.n_docs - df + 0.5) / (df + 0.5))
        idf[df == 0] = 0.0
        return idf.astype(np.float32)

    def fit(
        self, texts: Iterable[str], batch_size: int = 2048, progress: bool = False
    ) -> BM25Encoder:
        """Collect document frequencies and the average length (growing a word vocabulary)."""
        df = np.zeros(len(self.vocab), dtype=np.int64)
        n, total = 0, 0
        for batch in _batches(
            tqdm(texts, desc="fit bm25", unit="doc", disable=not progress), batch_size
        ):
            counts = term_counts(self.tokenizer.encode(batch, grow=True), len(self.vocab))
            if counts.shape[1] > df.shape[0]:
                df = np.concatenate([df, np.zeros(counts.shape[1] - df.shape[0], dtype=np.int64)])
            np.add.at(df, counts.indices, 1)
            n += counts.shape[0]
            total += int(counts.data.sum())
        if n == 0:
            raise EncoderError("Cannot fit BM25 on an empty corpus.")
        self.n_docs, self.avgdl, self.df = n, max(total / n, 1e-9), df
        logger.info("fitted bm25: %d docs, %d terms, avgdl %.1f", n, len(self.vocab), self.avgdl)
        return self

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise EncoderError("This BM25 encoder is not fitted; call fit(corpus_texts) first.")

    def encode_documents(self, texts: Sequence[str]) -> sp.csr_array:
        """BM25 document vectors; terms not seen by ``fit`` are dropped."""
        self._check_fitted()
        return self._weigh(self.tokenizer.encode(list(texts)))

    def encode_documents_with_unknown(
        self, texts: Sequence[str]
    ) -> tuple[sp.csr_array, list[list[str]]]:
        """The document vectors and, per text, the analyzed terms (lowercased, stemmed) that
        they drop because the fitted corpus never had them, from one analysis of each text:
        the vocabulary and its statistics are fixed at ``fit``, so such words make a
        document unfindable by them."""
        self._check_fitted()
        dropped: list[list[str]] = []
        rows = self.tokenizer.encode(list(texts), dropped=dropped)
        _, known, _ = self._tables()
        unknown = [  # words the tokenizer lacks, and tokens the fitted corpus never had
            list(dict.fromkeys([*gone, *(self.vocab[i] for i in row[~known[row]].tolist())]))
            for row, gone in zip(rows, dropped, strict=True)
        ]
        return self._weigh(rows), unknown

    def unknown_terms(self, texts: Sequence[str]) -> list[list[str]]:
        """Per text, the analyzed terms the fitted vocabulary lacks (see
        :meth:`encode_documents_with_unknown`)."""
        return self.encode_documents_with_unknown(texts)[1]

    def _weigh(self, rows: list[np.ndarray]) -> sp.csr_array:
        """BM25 weights of documents given as rows of term ids."""
        counts = term_counts(rows, len(self.vocab))
        lengths = counts.sum(axis=1)
        doc_of = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
        norm = self.k1 * (1.0 - self.b + self.b * lengths[doc_of] / self.avgdl)
        tf = counts.data
        counts.data = (self.idf()[counts.indices] * tf / (tf + norm)).astype(np.float32)
        counts.eliminate_zeros()
        return counts

    def encode_queries(self, texts: Sequence[str]) -> sp.csr_array:
        """Query vectors: counts of the query's known terms."""
        self._check_fitted()
        return term_counts(self.tokenizer.encode(list(texts)), len(self.vocab))

    def decode(self, vector: sp.csr_array, top_k: int | None = None) -> list[tuple[str, float]]:
        return decode(vector, self.vocab, top_k)

    @property
    def config(self) -> dict:
        """The settings that determine the vectors (the fitted statistics aside)."""
        tokenizer = {k: v for k, v in self.tokenizer.to_config().items() if k != "vocab"}
        return {"type": self.name, "k1": self.k1, "b": self.b, "tokenizer": tokenizer}

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``encoder.json`` (+ the tokenizer's files) so ``from_pretrained`` restores it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if hasattr(self.tokenizer, "save"):
            self.tokenizer.save(folder)
        write_config(
            folder,
            {
                **self.config,
                "n_docs": self.n_docs,
                "avgdl": self.avgdl,
                "df": self.df.tolist(),
                "tokenizer": self.tokenizer.to_config(),
            },
        )

    @classmethod
    def from_pretrained(cls, folder: str | Path, **options) -> BM25Encoder:
        """A fitted BM25 encoder saved by :meth:`save_pretrained` (it takes no options)."""
        if options:
            raise EncoderError(
                f"A saved BM25 encoder takes no options (got {', '.join(sorted(options))})."
            )
        folder = Path(folder)
        cfg = read_config(folder, "bm25")
        if not cfg:
            raise EncoderError(f"Cannot read a BM25 encoder from {folder}: no encoder.json.")
        enc = cls(tokenizer_from_config(cfg["tokenizer"], folder), k1=cfg["k1"], b=cfg["b"])
        enc.n_docs, enc.avgdl = int(cfg["n_docs"]), float(cfg["avgdl"])
        enc.df = np.asarray(cfg["df"], dtype=np.int64)
        return enc


def _batches(items: Iterable, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
