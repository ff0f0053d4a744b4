"""Corpus -> encoder -> vectors or index: the one read -> encode -> write step.

``lsr index``, ``lsr encode`` and the evaluation's encoding cache all go through
:func:`encode_corpus_into`: read the documents, fit the encoder if it needs corpus
statistics, encode in batches and hand the batches to a writer (an index builder or a
Parquet vector file).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from lsr.checks import positive_int
from lsr.corpus import Document, read_corpus
from lsr.dense import is_dense
from lsr.encoding import EncodingStats, encode_corpus, encode_texts, needs_fit
from lsr.errors import InputError
from lsr.index import Index, IndexBuilder
from lsr.index.collection import create_collection
from lsr.index.dense import DenseSpec
from lsr.index.lock import WriterLock
from lsr.index.reorder import check_method
from lsr.index.reorder import reorder as reorder_index
from lsr.index.representations import NewExtra
from lsr.index.store import StoreSpec
from lsr.vector_files import is_vectors, open_vectors, write_vectors

logger = logging.getLogger(__name__)
ENCODER_DIR = "encoder"  # where a collection keeps the encoder its documents were encoded with
EXTRA_ENCODERS_DIR = "encoders"  # ... and those of its extra representations, by name
T = TypeVar("T")


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
    shards: int | None = None  # a cluster's (lsr index --shards)

    @property
    def encode_docs_per_second(self) -> float:
        return self.n_docs / self.encode_seconds if self.encode_seconds > 0 else 0.0

    def line(self) -> str:
        rate = self.n_docs / max(self.total_seconds, 1e-9)
        return (
            f"indexed {self.n_docs:,} docs ({self.n_postings:,} postings, "
            f"{self.vocab_size:,} terms) in {self.total_seconds:.1f}s ({rate:,.0f} docs/s) "
            f"-> {self.path}{f' in {self.shards} shards' if self.shards else ''} "
            f"({self.index_bytes / 2**20:.1f} MiB)"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def read_documents(
    corpus: str | Path | Iterable[Document], progress: bool = False
) -> list[Document]:
    """All documents of a corpus path (or iterable), refusing an empty corpus."""
    if isinstance(corpus, list):
        docs = corpus
    else:
        source = read_corpus(corpus) if isinstance(corpus, (str, Path)) else corpus
        docs = list(tqdm(source, desc="read corpus", unit="doc", disable=not progress))
    if not docs:
        raise InputError(f"The corpus {corpus} has no documents.")
    if not any(d.contents.strip() for d in docs):
        raise InputError(
            f"The corpus {corpus} has {len(docs):,} documents, all with empty title and text: "
            "nothing to index."
        )
    return docs


def encode_corpus_into(
    corpus: str | Path | Iterable[Document],
    encoder,
    write: Callable[[Iterator[tuple[sp.csr_array, list[str]]]], T],
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[T, EncodingStats]:
    """Read ``corpus``, encode it in batches and pass the ``(vectors, doc_ids)`` batches to
    ``write``; returns what ``write`` returned and the encoding's figures. An encoder that
    needs corpus statistics is fitted first, so ``encoder.vocab`` is final when ``write``
    is called."""
    docs = read_documents(corpus, progress)
    stats = EncodingStats()
    batches = encode_corpus(encoder, docs, batch_size, progress, stats)
    return write(batches), stats


def encode_to_file(
    corpus: str | Path | Iterable[Document],
    encoder,
    path: str | Path,
    batch_size: int = 256,
    progress: bool = False,
    label: str | None = None,
) -> tuple[int, EncodingStats]:
    """Encode ``corpus`` into the Parquet vector file ``path`` (``label`` names the encoder
    in its metadata); the number of rows written and the encoding's figures."""

    def write(batches) -> int:
        return write_vectors(path, batches, encoder.vocab, encoder=label or "")

    return encode_corpus_into(corpus, encoder, write, batch_size, progress)


def encode_queries_to_file(
    queries: dict[str, str],
    encoder,
    path: str | Path,
    batch_size: int = 256,
    progress: bool = False,
    label: str | None = None,
) -> tuple[int, EncodingStats]:
    """Encode ``{query_id: text}`` with the encoder's query side into the Parquet vector
    file ``path`` (the ids in the id column), the format documents get; the rows written and
    the encoding's figures. An encoder that needs corpus statistics must be fitted already."""
    if not queries:
        raise InputError("There are no queries to encode.")
    if needs_fit(encoder):
        raise InputError("The encoder needs corpus statistics: fit it on the corpus first.")
    positive_int(batch_size, "batch_size")
    stats = EncodingStats()
    batches = encode_texts(
        encoder.encode_queries, list(queries), list(queries.values()), batch_size, progress,
        stats, unit="query",
    )  # fmt: skip
    rows = write_vectors(path, batches, encoder.vocab, encoder=label or "")
    return rows, stats


def build_index(
    batches: Iterable[tuple],
    encoder,
    out: str | Path,
    quantization: str = "uint8",
    overwrite: bool = False,
    metadata: dict | None = None,
    documents: Sequence[Document] | None = None,
    store: StoreSpec | str | None = "none",
    representations: Sequence[tuple[NewExtra, object]] = (),
    main: str | None = None,
    reorder: str | None = None,
) -> Index:
    """Index ``(vectors, doc_ids)`` batches and save them with ``encoder`` to ``out`` as a
    collection of one segment, atomically; ``documents`` (in batch order) are stored as
    ``store`` says (all fields, ``fields:a,b`` or none). ``representations``: extra ones
    (rows in batch order) with the encoder of each, saved under ``encoders/NAME``; ``main``
    names the main one. ``reorder="bp"`` renumbers the documents by recursive graph
    bisection (:mod:`lsr.index.reorder`) before anything is written: stored documents and
    extra representations follow. Returns the segment's index."""
    spec = StoreSpec.parse(store)
    check_method(reorder)
    if spec.stores and documents is None:
        raise InputError("Storing documents needs the documents (a corpus, not vectors).")
    builder = IndexBuilder(encoder.vocab, quantization=quantization)
    builder.extend(batches)
    meta = {"encoder": getattr(encoder, "name", type(encoder).__name__), **(metadata or {})}
    index = builder.finish()
    if reorder is not None:
        index, done = reorder_index(index, reorder)
        meta["reorder"] = {"method": reorder, **done.to_dict()}
        order = done.order
        documents = [documents[i] for i in order] if documents is not None else None
        representations = [
            (replace(extra, rows=extra.rows[order]), extra_encoder)
            for extra, extra_encoder in representations
        ]
    records = [spec.select(d.record()) for d in documents] if spec.stores else None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with WriterLock(out):  # never replace a collection that a server is writing to
        create_collection(
            out,
            index,
            records,
            spec,
            meta,
            overwrite=overwrite,
            extra=lambda tmp: _save_encoders(tmp, encoder, representations),
            representations=[extra for extra, _ in representations],
            main=main,
        )
    return index


def _save_encoders(folder: Path, encoder, representations) -> None:
    encoder.save_pretrained(folder / ENCODER_DIR)
    for extra, extra_encoder in representations:
        extra_encoder.save_pretrained(folder / EXTRA_ENCODERS_DIR / extra.name)


def index_corpus(
    corpus: str | Path | Iterable[Document],
    encoder,
    out: str | Path,
    quantization: str = "uint8",
    batch_size: int = 256,
    overwrite: bool = False,
    progress: bool = True,
    store: StoreSpec | str | None = "all",
    extra_encoders: dict[str, object] | None = None,
    dense_index: DenseSpec | str | None = None,
    main: str | None = None,
    reorder: str | None = None,
) -> IndexingSummary:
    """Encode every document of ``corpus`` and write the index (with its encoder) to ``out``.
    ``reorder``: renumber the documents as :func:`build_index` says (``bp``).

    ``extra_encoders`` (name -> a sparse or dense encoder) add representations for hybrid
    search (:mod:`lsr.index.representations`): each encodes every document too, and the
    collection holds them all, in one segment, with the main encoder's representation
    called ``main``. ``dense_index``: how dense vectors are indexed (``flat``, ``hnsw:...``,
    ``ivf:...``, :class:`~lsr.index.dense.DenseSpec`).

    ``corpus`` may also be a ``.parquet`` file written by ``lsr encode`` (vectors only: no
    documents to store); its vocabulary must be the encoder's. An encoder that needs corpus
    statistics (BM25) is fitted first. ``store``: which fields of each document record are
    kept for results and filters (``all``, ``fields:a,b``, ``none``). The index, its stored
    documents and the encoder are written together, atomically: ``out`` holds the old or the
    new.
    """
    spec = StoreSpec.parse(store)
    check_method(reorder)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it.")
    t0 = time.perf_counter()
    meta = {"corpus": str(corpus)}

    docs: list[Document] | None = None
    extras: list[tuple[NewExtra, object]] = []
    dense_spec = DenseSpec.parse(dense_index)
    extra_stats = EncodingStats()

    def write(batches) -> Index:
        for name, extra_encoder in (extra_encoders or {}).items():
            rows = encode_all(
                docs, extra_encoder, batch_size, progress, extra_stats, f"representation {name!r}"
            )
            if is_dense(extra_encoder):
                extras.append((NewExtra(name, rows, index=dense_spec), extra_encoder))
            else:
                new = NewExtra(
                    name, rows, vocab=list(extra_encoder.vocab), quantization=quantization
                )
                extras.append((new, extra_encoder))
        return build_index(
            batches, encoder, out, quantization, overwrite, meta, docs, spec, extras, main,
            reorder,
        )  # fmt: skip

    if extra_encoders and is_vectors(corpus):
        raise InputError("Extra encoders encode the documents' text; a vector file has none.")
    if is_vectors(corpus):
        spec = StoreSpec("none")
        vectors = open_vectors_of(corpus, encoder)
        index, stats = write(vectors.batches(batch_size)), EncodingStats()
    else:
        docs = read_documents(corpus, progress)
        index, stats = encode_corpus_into(docs, encoder, write, batch_size, progress)
        stats.seconds += extra_stats.seconds
        stats.fit_seconds += extra_stats.fit_seconds
    return _summary(out, index, stats, t0)


def encode_all(
    docs,
    encoder,
    batch_size: int,
    progress: bool = False,
    stats: EncodingStats | None = None,
    name: str = "",
):
    """Every document's vector in corpus order, one matrix (CSR, or dense rows for a dense
    encoder): an extra representation of a collection, or a corpus to mine negatives from."""
    parts = [v for v, _ in encode_corpus(encoder, docs, batch_size, progress, stats)]
    logger.info("encoded %d documents for %s", len(docs), name or "one matrix")
    if is_dense(encoder):
        return np.concatenate(parts, axis=0)
    return sp.vstack(parts, format="csr")


def open_vectors_of(path: str | Path, encoder):
    """The vector file (or folder of parts) at ``path``, after checking that ``encoder``
    wrote it (the same vocabulary)."""
    vectors = open_vectors(path)
    if vectors.vocab != list(encoder.vocab):
        raise InputError(
            f"{path} was encoded with another vocabulary than the encoder given; "
            "pass the encoder that wrote it."
        )
    return vectors


def _summary(out: Path, index: Index, stats: EncodingStats, t0: float) -> IndexingSummary:
    return summarize(out, index.n_docs, index.n_postings, index.vocab_size, stats, t0)


def summarize(
    out: Path,
    n_docs: int,
    n_postings: int,
    vocab_size: int,
    stats: EncodingStats,
    t0: float,
    shards: int | None = None,
) -> IndexingSummary:
    """What an indexing run into ``out`` that started at ``t0`` did (logged once)."""
    total = time.perf_counter() - t0
    summary = IndexingSummary(
        path=str(out),
        n_docs=n_docs,
        n_postings=n_postings,
        vocab_size=vocab_size,
        fit_seconds=stats.fit_seconds,
        encode_seconds=stats.seconds,
        build_seconds=total - stats.seconds - stats.fit_seconds,
        total_seconds=total,
        index_bytes=sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
        shards=shards,
    )
    logger.info(summary.line())
    return summary


def index_pretokenized(
    corpus: str | Path,
    out: str | Path,
    encoder=None,
    quantization: str = "uint8",
    batch_size: int = 10_000,
    overwrite: bool = False,
    progress: bool = False,
    store: StoreSpec | str | None = "all",
    reorder: str | None = None,
) -> IndexingSummary:
    """Index documents that carry their own term weights (Pyserini's JsonVectorCollection,
    see :mod:`lsr.pretokenized`) without encoding them (``reorder``: see :func:`build_index`).

    With ``encoder`` every term must be in its vocabulary (queries go through it); without,
    the vocabulary is the corpus's terms in order of appearance and the collection's encoder
    a :class:`~lsr.pretokenized.PretokenizedEncoder`. Written atomically, as
    :func:`index_corpus` writes."""
    from lsr.pretokenized import PretokenizedEncoder, read_vector_corpus, vectors_to_rows

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it.")
    t0 = time.perf_counter()
    records = list(
        tqdm(read_vector_corpus(corpus), desc="read vectors", unit="doc", disable=not progress)
    )
    if not records:
        raise InputError(f"The pretokenized corpus {corpus} has no documents.")
    if encoder is None:
        terms = dict.fromkeys(t for _, vector in records for t in vector)
        if not terms:
            raise InputError(f"The pretokenized corpus {corpus} has no terms in any vector.")
        encoder = PretokenizedEncoder(list(terms))
    ids = {t: i for i, t in enumerate(encoder.vocab)}
    for doc, vector in records:
        unknown = next((t for t in vector if t not in ids), None)
        if unknown is not None:
            raise InputError(
                f"{corpus}: document {doc.id} has the term {unknown!r}, which the encoder's "
                f"vocabulary ({len(ids):,} terms) lacks; index without --encoder to use the "
                "corpus's own terms."
            )
    docs = [doc for doc, _ in records]

    def batches():
        for lo in range(0, len(records), batch_size):
            chunk = records[lo : lo + batch_size]
            rows = vectors_to_rows([v for _, v in chunk], ids, len(ids))
            yield rows, [d.id for d, _ in chunk]

    meta = {"corpus": str(corpus), "pretokenized": True}
    index = build_index(
        batches(), encoder, out, quantization, overwrite, meta, docs, store, reorder=reorder
    )
    return _summary(out, index, EncodingStats(), t0)
