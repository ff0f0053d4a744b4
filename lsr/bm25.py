"""BM25 as sparse vectors, so the unsupervised baseline runs through the same index as SPLADE.

Documents get BM25 term weights (Lucene's formulation, without the constant (k1 + 1) factor)::

    w(t, d) = idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl)),
    idf(t)  = log(1 + (N - df + 0.5) / (df + 0.5))

queries get raw term counts, so the dot product of the two is the BM25 score.

``doc_length="lucene"`` scores as Lucene's ``BM25Similarity`` does, to the last digit: the
document length is the one Lucene keeps in its one-byte norm (exact below 24 terms, then 4
significant bits), N and the average length count only documents with terms, and the weight
is computed in single precision in Lucene's order, ``idf - idf / (1 + tf / norm)``.
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
from lsr.tokenization import Tokenizer, WordTokenizer, tokenizer_by_name, tokenizer_from_config

logger = logging.getLogger(__name__)
DOC_LENGTHS = ("exact", "lucene")


class BM25Encoder:
    """BM25 weights over a tokenizer's vocabulary; ``fit`` it on the corpus first."""

    name = "bm25"
    queries_need_model = False  # queries are a table lookup (see lsr.encoder.Encoder)

    def __init__(
        self,
        tokenizer: Tokenizer | str | None = None,
        k1: float = 0.9,
        b: float = 0.4,
        doc_length: str = "exact",
    ):
        if not (k1 >= 0 and 0 <= b <= 1):
            raise EncoderError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}.")
        if doc_length not in DOC_LENGTHS:
            raise EncoderError(
                f"Unknown doc_length {doc_length!r}; use one of {', '.join(DOC_LENGTHS)}."
            )
        if isinstance(tokenizer, str):  # a name: lucene, regex or a Hugging Face tokenizer
            tokenizer = tokenizer_by_name(tokenizer)
        self.tokenizer = tokenizer if tokenizer is not None else WordTokenizer()
        self.k1 = float(k1)
        self.b = float(b)
        self.doc_length = doc_length
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
        ratio = (self.n_docs - df + 0.5) / (df + 0.5)
        idf = np.log(1 + ratio) if self.doc_length == "lucene" else np.log1p(ratio)
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
            # Lucene counts only the documents that have terms
            n += (
                counts.shape[0]
                if self.doc_length == "exact"
                else int(np.diff(counts.indptr).astype(bool).sum())
            )
            total += int(counts.data.sum())
        if n == 0:
            raise EncoderError("Cannot fit BM25 on an empty corpus (no document has a term).")
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
        tf, idf = counts.data, self.idf()[counts.indices]
        if self.doc_length == "lucene":
            counts.data = self._lucene_weights(idf, tf, lucene_length(lengths)[doc_of])
        else:
            norm = self.k1 * (1.0 - self.b + self.b * lengths[doc_of] / self.avgdl)
            counts.data = (idf * tf / (tf + norm)).astype(np.float32)
        counts.eliminate_zeros()
        return counts

    def _lucene_weights(self, idf: np.ndarray, tf: np.ndarray, length: np.ndarray) -> np.ndarray:
        """Lucene's BM25 term scores, operation for operation in single precision."""
        f32 = np.float32
        k1, b, avgdl = f32(self.k1), f32(self.b), f32(self.avgdl)
        norm_inverse = f32(1) / (k1 * ((f32(1) - b) + b * length.astype(f32) / avgdl))
        return idf - idf / (f32(1) + tf.astype(f32) * norm_inverse)

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
        return {
            "type": self.name,
            "k1": self.k1,
            "b": self.b,
            "doc_length": self.doc_length,
            "tokenizer": tokenizer,
        }

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
        enc = cls(
            tokenizer_from_config(cfg["tokenizer"], folder),
            k1=cfg["k1"],
            b=cfg["b"],
            doc_length=cfg.get("doc_length", "exact"),
        )
        enc.n_docs, enc.avgdl = int(cfg["n_docs"]), float(cfg["avgdl"])
        enc.df = np.asarray(cfg["df"], dtype=np.int64)
        return enc


def lucene_length(lengths: np.ndarray) -> np.ndarray:
    """The document lengths Lucene's BM25 scores with: each length stored in one byte
    (``SmallFloat.intToByte4``) and read back (``byte4ToInt``). Exact below 24; above,
    rounded down to 4 significant bits of ``length - 24``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    rest = np.maximum(lengths - _EXACT_LENGTHS, 0)
    shift = np.maximum(_bit_length(rest) - 4, 0)  # low bits the byte cannot keep
    kept = (rest >> shift) << shift
    return np.where(lengths < _EXACT_LENGTHS, lengths, _EXACT_LENGTHS + kept)


_EXACT_LENGTHS = 24  # 255 - SmallFloat.longToInt4(Integer.MAX_VALUE)


def _bit_length(values: np.ndarray) -> np.ndarray:
    out = np.zeros(values.shape, dtype=np.int64)
    positive = values > 0
    out[positive] = np.floor(np.log2(values[positive])).astype(np.int64) + 1
    return out


def _batches(items: Iterable, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
