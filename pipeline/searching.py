"""Query text -> encoder -> index: open a collection with its encoder and rank queries."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from lsr.checks import positive_int
from lsr.dense import is_dense
from lsr.encoders import load_encoder
from lsr.errors import InputError
from lsr.index import Filter, Index, LiveIndex, SearchResults
from lsr.index.cluster import ShardedCollection, is_cluster
from lsr.index.fusion import FusionSpec, read_fusion
from lsr.pipeline.hybrid import load_encoders, search_mode
from lsr.pipeline.indexing import ENCODER_DIR


class Searcher:
    """A collection (or an in-memory index) with the encoder its documents were encoded
    with: text in, ranked hits out (with their stored documents and filters when asked).

    Opened with :meth:`open`, it reads the collection as its latest commit point plus the
    writer's log at that moment (``LiveIndex(read_only=True)``), so documents written or
    deleted over REST are seen; ``index`` is the collection as one :class:`Index` (for
    benchmarks and evaluation).
    """

    def __init__(
        self,
        index: Index | LiveIndex,
        encoder,
        extra_encoders: dict | None = None,
        fusion: FusionSpec | None = None,
    ) -> None:
        index.check_vocab(encoder.vocab)
        self.encoder = encoder
        collection = isinstance(index, LiveIndex) or getattr(index, "sharded", False)
        self.live = index if collection else None
        self._index = None if self.live is not None else index
        self.extra_encoders = dict(extra_encoders or {})
        self.fusion = fusion  # the collection's tuned fusion (lsr tune-fusion), if any
        for name, extra in self.extra_encoders.items():
            if self.live is None:
                raise InputError("Extra representations need a collection: use Searcher.open.")
            if not is_dense(extra):
                self.live.check_vocab(extra.vocab, representation=name)

    @property
    def encoders(self) -> dict:
        """Every representation's encoder, by name (the main one first)."""
        main = self.live.main_name if self.live is not None else "sparse"
        return {main: self.encoder, **self.extra_encoders}

    @classmethod
    def open(cls, path: str | Path, encoder=None) -> Searcher:
        """Open the collection at ``path`` with its saved encoder (or the ``encoder`` given);
        a cluster of ``lsr index --shards`` opens every shard in this process."""
        if is_cluster(path):
            return cls._open_cluster(Path(path), encoder)
        if encoder is None:
            saved = Path(path) / ENCODER_DIR
            if not saved.is_dir():
                LiveIndex(path, read_only=True).close()  # no collection there: say that first
                raise InputError(
                    f"{path} has no saved encoder; pass the encoder to use for queries."
                )
            encoder = load_encoder(saved)
        elif isinstance(encoder, (str, Path)):
            encoder = load_encoder(encoder)
        live = LiveIndex(path, read_only=True)
        try:
            return cls(live, encoder, load_encoders(path, live), read_fusion(path))
        except BaseException:
            live.close()
            raise

    @classmethod
    def _open_cluster(cls, path: Path, encoder) -> Searcher:
        collection = ShardedCollection(path)
        try:
            if encoder is None:
                encoder = collection.manifest.shard_path(path, 0) / ENCODER_DIR
            if isinstance(encoder, (str, Path)):
                encoder = load_encoder(encoder)
            return cls(collection, encoder)
        except BaseException:
            collection.close()
            raise

    @property
    def index(self) -> Index:
        """The collection as one index: its only segment, or its live documents merged in
        memory (once) when it has several segments, deletions or buffered writes."""
        if self._index is None:
            self._index = self.live.as_index()
        return self._index

    def close(self) -> None:
        """Release the collection (a reader's lease on its commit point)."""
        if self.live is not None:
            self.live.close()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def collection(self) -> Index | LiveIndex:
        """What searches go to: the collection (segments and log), or the index given."""
        return self.live if self.live is not None else self._index

    def search(
        self,
        queries: str | Sequence[str],
        k: int = 10,
        filter: Filter | dict | str | None = None,
        fields: Sequence[str] | None = None,
        mode: str = "sparse",
        retrievers: Sequence[str] | None = None,
        fusion: FusionSpec | None = None,
        **options,
    ) -> SearchResults:
        """Top-``k`` documents for one query text or a list of them; ``filter`` restricts
        them to documents whose stored fields match (see ``lsr.index.filters``), ``fields``
        attaches their stored documents (``["*"]``: every field). ``mode``: ``sparse``
        (default), ``dense`` or ``hybrid`` (:mod:`lsr.pipeline.hybrid`; ``retrievers`` names
        the representations, ``fusion`` how to fuse them: default the collection's tuned
        fusion)."""
        texts = [queries] if isinstance(queries, str) else list(queries)
        if not texts:
            raise InputError("No queries given.")
        if mode != "sparse" or retrievers or self.extra_encoders:
            if self.live is None:
                raise InputError("Dense and hybrid search need a collection: use Searcher.open.")
            return search_mode(
                self.live, self.encoders, texts, k, mode, retrievers, fusion or self.fusion,
                filter=filter, fields=fields, **options,
            )  # fmt: skip
        vectors = self.encoder.encode_queries(texts)
        if self.live is None:
            if filter is not None or fields is not None:
                raise InputError("Filters and documents need a collection: use Searcher.open.")
            return self._index.search(vectors, k, **options)
        return self.live.search(vectors, k, filter=filter, fields=fields, **options)


def search_topics(
    searcher: Searcher,
    topics: dict[str, str],
    k: int = 1000,
    batch_size: int = 256,
    filter: Filter | dict | str | None = None,
    progress: bool = False,
    **options,
) -> Iterator[tuple[str, list[tuple[str, float]]]]:
    """``(query_id, hits best first)`` for every topic, in the topics' order: the searcher's
    encoders (loaded once) encode ``batch_size`` queries at a time and each batch is searched
    at once (``options`` such as ``threads``, ``mode``, ``retrievers`` and ``fusion`` as for
    :meth:`Searcher.search`)."""
    batch_size = positive_int(batch_size, "batch_size")
    if filter is not None:
        if searcher.live is None:
            raise InputError("Filters need a collection: use Searcher.open.")
        options["filter"] = filter
    qids = list(topics)
    with tqdm(total=len(qids), desc="search", unit="query", disable=not progress) as bar:
        for lo in range(0, len(qids), batch_size):
            batch = qids[lo : lo + batch_size]
            results = searcher.search([topics[q] for q in batch], k, **options)
            for qid, hits in zip(batch, results, strict=True):
                yield qid, list(hits.items())
            bar.update(len(batch))


def rank(
    index: Index | LiveIndex,
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
            kept = [(d, s) for d, s in hits.items() if not (skip_self and d == qid)]
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
    return rank(searcher.collection, qids, vectors, k=k, skip_self=skip_self)
