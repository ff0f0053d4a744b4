"""Evaluation datasets: local BEIR folders and ir_datasets ids, one interface for both.

A local folder holds ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``. Anything
else is looked up in ir_datasets (``beir/scifact/test``, ``cranfield``, ...), which honours
``IR_DATASETS_HOME`` and downloads what it lacks (this needs the network).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lsr import CorpusError, Document, read_corpus
from lsr.corpus import read_qrels, read_queries
from lsr.errors import InputError


@dataclass
class Dataset:
    """A corpus with the queries and relevance judgements of one split."""

    name: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    documents_factory: Callable[[], Iterator[Document]]
    fingerprint: str
    split: str = "test"
    corpus_path: Path | None = None

    def documents(self) -> Iterator[Document]:
        return self.documents_factory()


def _file_fingerprint(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(
        f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    ).hexdigest()


def load_beir_folder(folder: Path, split: str = "test") -> Dataset:
    """A local BEIR folder with ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``."""
    corpus = next(
        (folder / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (folder / n).is_file()), None
    )
    if corpus is None:
        raise CorpusError(f"{folder} has no corpus.jsonl; it is not a BEIR folder.")
    qrels_file = folder / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        have = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise CorpusError(
            f"{folder} has no qrels for split {split!r}; available: {', '.join(have) or 'none'}."
        )
    qrels = read_qrels(qrels_file)
    queries = read_queries(folder / "queries.jsonl")
    queries = {q: t for q, t in queries.items() if q in qrels}
    if not queries:
        raise CorpusError(f"{folder}: no query of split {split!r} has text in queries.jsonl.")
    return Dataset(
        name=folder.name if split == "test" else f"{folder.name}/{split}",
        queries=queries,
        qrels=qrels,
        documents_factory=lambda: read_corpus(corpus),
        fingerprint=_file_fingerprint(corpus),
        split=split,
        corpus_path=corpus,
    )


# BEIR sets whose queries are also documents, where BEIR's evaluation ignores the hit with
# the query's own id; elsewhere (Cranfield, CISI, CACM, ...) equal ids are unrelated numbers
# and such a hit may be a relevant document.
SELF_HIT_DATASETS = ("arguana", "quora", "cqadupstack")


def skips_self(dataset_name: str, setting: str = "auto") -> bool:
    """Whether to drop each query's hit on its own id: ``on``, ``off``, or ``auto`` (only on
    the datasets named in :data:`SELF_HIT_DATASETS`, by folder name or ir_datasets id)."""
    if setting not in ("auto", "on", "off"):
        raise InputError(f"skip_self is auto, on or off, not {setting!r}.")
    if setting != "auto":
        return setting == "on"
    name = dataset_name.lower()
    return any(known in name for known in SELF_HIT_DATASETS)


def _path_like(spec: str | Path) -> bool:
    """Whether ``spec`` names a file or folder (a suffix, or a leading ., / or ~) rather
    than an ir_datasets id."""
    return bool(Path(spec).suffix) or str(spec).startswith((".", "/", "~"))


def _load_ir(dataset_id: str, unknown: str):
    """The ir_datasets dataset ``dataset_id``; ``unknown`` is the error when there is none."""
    import ir_datasets

    try:
        return ir_datasets.load(dataset_id)
    except KeyError as e:
        raise CorpusError(unknown) from e


def _not_downloaded(dataset_id: str, error: Exception) -> CorpusError:
    home = os.environ.get("IR_DATASETS_HOME", "~/.ir_datasets")
    return CorpusError(
        f"Cannot load {dataset_id!r}: its files are not under IR_DATASETS_HOME ({home}) and "
        f"downloading them failed ({type(error).__name__}); put the files there or connect."
    )


def load_ir_dataset(dataset_id: str) -> Dataset:
    """A dataset by ir_datasets id; queries without judgements are left out."""
    ds = _load_ir(
        dataset_id,
        f"Unknown dataset {dataset_id!r}: not a local BEIR folder nor an ir_datasets id "
        "(e.g. beir/scifact/test, cranfield).",
    )
    missing = [p for p in ("docs", "queries", "qrels") if not getattr(ds, f"has_{p}")()]
    if missing:
        raise CorpusError(
            f"ir_datasets {dataset_id!r} has no {', '.join(missing)}; pick a split with "
            "judgements, e.g. beir/scifact/test."
        )
    try:
        qrels: dict[str, dict[str, int]] = {}
        for r in ds.qrels_iter():
            qrels.setdefault(r.query_id, {})[r.doc_id] = int(r.relevance)
        queries = {q.query_id: q.text for q in ds.queries_iter() if q.query_id in qrels}
    except Exception as e:  # ir_datasets raises plain RuntimeError/IOError on failed downloads
        raise _not_downloaded(dataset_id, e) from e

    def documents() -> Iterator[Document]:
        return _documents_of(ds, dataset_id)

    return Dataset(
        name=dataset_id,
        queries=queries,
        qrels=qrels,
        documents_factory=documents,
        fingerprint=hashlib.sha256(
            f"ir_datasets|{dataset_id}|{ds.docs_count()}".encode()
        ).hexdigest(),
        split=dataset_id.rsplit("/", 1)[-1],
    )


def load_topics(spec: str | Path) -> dict[str, str]:
    """Queries ``{query_id: text}`` without judgements: a query file (BEIR ``queries.jsonl``
    or ``qid<TAB>text``), a BEIR folder (its ``queries.jsonl``) or an ir_datasets id (every
    query it has)."""
    path = Path(spec)
    if path.is_dir():
        path = path / "queries.jsonl"
    if path.is_file():
        return read_queries(path)
    if _path_like(spec):
        raise CorpusError(
            f"Queries {spec} not found: give a query file, a BEIR folder or an ir_datasets id."
        )
    ds = _load_ir(
        str(spec),
        f"Unknown queries {spec!r}: not a file, a BEIR folder nor an ir_datasets id "
        "(e.g. beir/scifact/test, cranfield).",
    )
    if not ds.has_queries():
        raise CorpusError(f"ir_datasets {spec!r} has no queries; pick one that has, e.g. a split.")
    try:
        return {q.query_id: q.text for q in ds.queries_iter()}
    except Exception as e:  # ir_datasets raises plain RuntimeError/IOError on failed downloads
        raise _not_downloaded(str(spec), e) from e


def _documents_of(ds, dataset_id: str) -> Iterator[Document]:
    try:
        for d in ds.docs_iter():
            yield Document(
                id=d.doc_id, text=getattr(d, "text", ""), title=getattr(d, "title", "") or ""
            )
    except Exception as e:  # ir_datasets raises plain RuntimeError/IOError on failed downloads
        raise _not_downloaded(dataset_id, e) from e


class IRDatasetsCorpus:
    """The documents of an ir_datasets id, read as they are iterated; ``str()`` is the id
    (what an index records as its corpus)."""

    def __init__(self, dataset_id: str) -> None:
        self.dataset = _load_ir(
            dataset_id,
            f"Corpus {dataset_id!r} is neither a file, a folder nor an ir_datasets id "
            "(e.g. beir/scifact, cranfield).",
        )
        if not self.dataset.has_docs():
            raise CorpusError(f"ir_datasets {dataset_id!r} has no documents.")
        self.dataset_id = dataset_id

    def __iter__(self) -> Iterator[Document]:
        return _documents_of(self.dataset, self.dataset_id)

    def __str__(self) -> str:
        return self.dataset_id


def corpus_source(spec: str | Path) -> str | Path | IRDatasetsCorpus:
    """What ``lsr index`` and ``lsr encode`` read: a path as it is (a BEIR folder, a JSONL,
    TSV or Parquet file), anything else that is not path-like as an ir_datasets id, the
    same corpus specs ``lsr eval`` and ``lsr bench`` take."""
    if Path(spec).exists() or _path_like(spec):
        return spec
    return IRDatasetsCorpus(str(spec))


def load_dataset(spec: str | Path, split: str = "test") -> Dataset:
    """A local BEIR folder (``split`` picks its qrels) or an ir_datasets id."""
    path = Path(spec)
    if path.is_dir():
        return load_beir_folder(path, split)
    if _path_like(spec):
        raise CorpusError(f"Dataset {spec} not found: give a BEIR folder or an ir_datasets id.")
    return load_ir_dataset(str(spec))
