"""Corpus -> encoder -> index, and query text -> encoder -> index: the path every front end uses."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from index import Index, IndexBuilder, SearchResults
from index.lock import WriterLock
from lsr import Document, load_encoder, read_corpus
from lsr.encoding import EncodingStats, encode_corpus
from lsr.vector_files import VectorFile

logger = logging.getLogger(__name__)
ENCODER_DIR = "encoder"


@dataclass
class IndexingSummary:
    """What an indexing run did and how long it took."""

    path: str
    n_docs: int
    n_postings: int
    vocab_size: int
    fit_seconds: float
    encode_seconds: float
    build_seconds: float
    total_seconds: float
    index_bytes: int

    @property
    def encode_docs_per_second(self) -> float:
        return self.n_docs / self.encode_seconds if self.encode_seconds > 0 else 0.0

    def line(self) -> str:
        rate = self.n_docs / max(self.total_seconds, 1e-9)
        return (
            f"indexed {self.n_docs:,} docs ({self.n_postings:,} postings, "
            f"{self.vocab_size:,} terms) in {self.total_seconds:.1f}s ({rate:,.0f} docs/s) "
            f"-> {self.path} ({self.index_bytes / 2**20:.1f} MiB)"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def read_documents(
    corpus: str | Path | Iterable[Document], progress: bool = False
) -> list[Document]:
    """All documents of a corpus path (or iterable), refusing an empty corpus."""
    source = read_corpus(corpus) if isinstance(corpus, (str, Path)) else corpus
    docs = list(tqdm(source, desc="read corpus", unit="doc", disable=not progress))
    if not docs:
        raise ValueError(f"The corpus {corpus} has no documents.")
    return docs


def build_index(
    batches: Iterable[tuple],
    encoder,
    out: str | Path,
    quantization: str = "uint8",
    overwrite: bool = False,
    metadata: dict | None = None,
) -> Index:
    """Index ``(vectors, doc_ids)`` batches and save them with ``encoder`` to ``out`` atomically."""
    builder = IndexBuilder(encoder.vocab, quantization=quantization)
    builder.extend(batches)
    meta = {"encoder": getattr(encoder, "name", type(encoder).__name__), **(metadata or {})}
    index = builder.finish(meta)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with WriterLock(out):  # never replace a collection that a server is writing to
        index.save(
            out, overwrite=overwrite, extra=lambda tmp: encoder.save_pretrained(tmp / ENCODER_DIR)
        )
    return index


def index_corpus(
    corpus: str | Path | Iterable[Document],
    encoder,
    out: str | Path,
    quantization: str = "uint8",
    batch_size: int = 256,
    overwrite: bool = False,
    progress: bool = True,
) -> IndexingSummary:
    """Encode every document of ``corpus`` and write the index (with its encoder) to ``out``.

    ``corpus`` may also be a ``.parquet`` file written by ``lsr encode``; its vocabulary must
    be the encoder's. An encoder that needs corpus statistics (BM25) is fitted first. The
    index and the encoder are written together, atomically: ``out`` holds the old or the new.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it.")
    t0 = time.perf_counter()
    stats = EncodingStats()
    if isinstance(corpus, (str, Path)) and str(corpus).endswith(".parquet"):
        vectors = VectorFile(corpus)
        if vectors.vocab != list(encoder.vocab):
            raise ValueError(
                f"{corpus} was encoded with another vocabulary than the encoder given; "
                "pass the encoder that wrote it."
            )
        batches = vectors.batches(batch_size)
    else:
        docs = read_documents(corpus, progress)
        batches = encode_corpus(encoder, docs, batch_size, progress, stats)
    index = build_index(batches, encoder, out, quantization, overwrite, {"corpus": str(corpus)})
    total = time.perf_counter() - t0
    summary = IndexingSummary(
        path=str(out),
        n_docs=index.n_docs,
        n_postings=index.n_postings,
        vocab_size=index.vocab_size,
        fit_seconds=stats.fit_seconds,
        encode_seconds=stats.seconds,
        build_seconds=total - stats.seconds - stats.fit_seconds,
        total_seconds=total,
        index_bytes=sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
    )
    logger.info(summary.line())
    return summary


class Searcher:
    """An index with the encoder its documents were encoded with: text in, ranked ids out."""

    def __init__(self, index: Index, encoder) -> None:
        index.check_vocab(encoder.vocab)
        self.index = index
        self.encoder = encoder

    @classmethod
    def open(
        cls, path: str | Path, encoder=None, mmap: bool = True, verify: bool = True
    ) -> Searcher:
        """Load the index at ``path`` with its saved encoder (or the ``encoder`` given)."""
        index = Index.load(path, mmap=mmap, verify=verify)
        if encoder is None:
            saved = Path(path) / ENCODER_DIR
            if not saved.is_dir():
                raise ValueError(
                    f"{path} has no saved encoder; pass the encoder to use for queries."
                )
            encoder = load_encoder(saved)
        elif isinstance(encoder, (str, Path)):
            encoder = load_encoder(encoder)
        return cls(index, encoder)

    def search(self, queries: str | Sequence[str], k: int = 10) -> SearchResults:
        """Top-``k`` documents for one query text or a list of them."""
        texts = [queries] if isinstance(queries, str) else list(queries)
        if not texts:
            raise ValueError("No queries given.")
        vectors = self.encoder.encode_queries(texts)
        return self.index.search(vectors, k)


def rank(
    index: Index,
    query_ids: Sequence[str],
    query_vectors,
    k: int = 1000,
    batch_size: int = 1024,
    skip_self: bool = True,
) -> dict[str, dict[str, float]]:
    """A run ``{query_id: {doc_id: score}}`` from encoded queries.

    With ``skip_self`` a hit whose document id equals the query id is dropped (the BEIR
    convention for ArguAna and Quora, where queries are also documents); one extra hit is
    retrieved so that each query still gets ``k``.
    """
    run: dict[str, dict[str, float]] = {}
    for lo in range(0, len(query_ids), batch_size):
        batch = list(query_ids[lo : lo + batch_size])
        results = index.search(query_vectors[lo : lo + len(batch)], k=k + int(skip_self))
        for qid, hits in zip(batch, results, strict=True):
            kept = [(d, s) for d, s in hits if not (skip_self and d == qid)]
            run[qid] = dict(kept[:k])
    return run


def retrieve(
    searcher: Searcher,
    queries: dict[str, str],
    k: int = 1000,
    skip_self: bool = True,
) -> dict[str, dict[str, float]]:
    """Encode ``{query_id: text}`` with the searcher's encoder and rank them (see :func:`rank`)."""
    qids = list(queries)
    if not qids:
        return {}
    vectors = searcher.encoder.encode_queries([queries[q] for q in qids])
    return rank(searcher.index, qids, vectors, k=k, skip_self=skip_self)
