"""Evaluation datasets: local BEIR folders (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lsr import CorpusError, Document, read_corpus
from lsr.corpus import read_qrels, read_queries


@dataclass
class Dataset:
    """A corpus with queries and relevance judgements of one split."""

    name: str
    corpus_path: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: str = "test"
    meta: dict = field(default_factory=dict)

    def documents(self) -> Iterator[Document]:
        return read_corpus(self.corpus_path)


def load_dataset(spec: str | Path, split: str = "test") -> Dataset:
    """A local BEIR folder with ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``."""
    folder = Path(spec)
    if not folder.is_dir():
        raise CorpusError(f"Dataset {spec} not found: give a BEIR folder.")
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
    return Dataset(name=folder.name, corpus_path=corpus, queries=queries, qrels=qrels, split=split)
