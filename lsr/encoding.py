"""Encoding a whole corpus in batches: the loop shared by indexing and ``lsr encode``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import scipy.sparse as sp
from tqdm.auto import tqdm

from lsr.checks import positive_int
from lsr.corpus import Document


@dataclass
class EncodingStats:
    """Documents encoded and the seconds spent in the encoder (excluding fitting)."""

    n_docs: int = 0
    seconds: float = 0.0
    fit_seconds: float = 0.0

    @property
    def docs_per_second(self) -> float:
        return self.n_docs / self.seconds if self.seconds > 0 else 0.0


def needs_fit(encoder) -> bool:
    """Whether ``encoder`` needs corpus statistics (BM25, IDF) it has not been fitted on."""
    return hasattr(encoder, "fit") and not getattr(encoder, "fitted", True)


def prepare(encoder, docs: Sequence[Document], progress: bool = False) -> float:
    """Fit an encoder that needs corpus statistics (BM25, IDF) if not yet fitted; seconds taken."""
    if not needs_fit(encoder):
        return 0.0
    t = time.perf_counter()
    encoder.fit((d.contents for d in docs), progress=progress)
    return time.perf_counter() - t


def encode_corpus(
    encoder,
    docs: Sequence[Document],
    batch_size: int = 256,
    progress: bool = False,
    stats: EncodingStats | None = None,
) -> Iterator[tuple[sp.csr_array, list[str]]]:
    """``(document vectors, doc ids)`` batches; an encoder that needs fitting is fitted first.

    Fitting happens here, before the first batch is asked for, so ``encoder.vocab`` is final
    when this returns (a BM25 word vocabulary grows while fitting).
    """
    positive_int(batch_size, "batch_size")
    stats = stats if stats is not None else EncodingStats()
    stats.fit_seconds += prepare(encoder, docs, progress)
    return _encode_batches(encoder, docs, batch_size, progress, stats)


def _encode_batches(encoder, docs, batch_size, progress, stats):
    ids, texts = [d.id for d in docs], [d.contents for d in docs]
    return encode_texts(encoder.encode_documents, ids, texts, batch_size, progress, stats)


def encode_texts(
    encode: Callable[[Sequence[str]], sp.csr_array],
    ids: Sequence[str],
    texts: Sequence[str],
    batch_size: int,
    progress: bool,
    stats: EncodingStats,
    unit: str = "doc",
) -> Iterator[tuple[sp.csr_array, list[str]]]:
    """``(encode(texts batch), ids batch)`` in batches, the encoder's time counted in
    ``stats`` (``n_docs`` counts the texts, documents or queries) under a progress bar."""
    with tqdm(total=len(texts), desc="encode", unit=unit, disable=not progress) as bar:
        for lo in range(0, len(texts), batch_size):
            batch = texts[lo : lo + batch_size]
            t = time.perf_counter()
            vectors = encode(batch)
            stats.seconds += time.perf_counter() - t
            stats.n_docs += len(batch)
            bar.update(len(batch))
            yield vectors, list(ids[lo : lo + batch_size])


def encode_with_unknown(encoder, texts: Sequence[str]) -> tuple[sp.csr_array, list[list[str]]]:
    """Document vectors and, per text, the words the encoder's fixed vocabulary lacks (from
    the same analysis, for encoders that can say: BM25's fitted vocabulary; empty lists for
    the others) — what a write over REST or ``lsr index --append`` reports."""
    both = getattr(encoder, "encode_documents_with_unknown", None)
    if both is not None:
        return both(texts)
    return encoder.encode_documents(texts), [[] for _ in texts]
