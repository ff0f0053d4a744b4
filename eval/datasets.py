"""Evaluation datasets: local BEIR folders (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lsr import CorpusError, Document, read_corpus


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


def read_queries(path: str | Path) -> dict[str, str]:
    """Queries from BEIR ``queries.jsonl`` (``{"_id", "text"}``) or a ``qid<TAB>text`` file."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"Queries file {path} does not exist.")
    queries: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                try:
                    rec = json.loads(line)
                    queries[str(rec["_id"])] = str(rec["text"])
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise CorpusError(f'{path}:{lineno}: expected {{"_id", "text"}} ({e}).') from e
            else:
                qid, _, text = line.rstrip("\n").partition("\t")
                if not text:
                    raise CorpusError(f"{path}:{lineno}: expected 'qid<TAB>text'.")
                queries[qid] = text
    return queries


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """BEIR qrels (``query-id corpus-id score`` TSV with header) or TREC qrels (4 columns)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"Qrels file {path} does not exist.")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if len(row) == 1:
                row = row[0].split()
            if not row:
                continue
            if lineno == 1 and row[0] in ("query-id", "qid", "query_id"):
                continue
            try:
                if len(row) == 3:
                    qid, did, rel = row
                elif len(row) == 4:
                    qid, _, did, rel = row
                else:
                    raise ValueError(f"{len(row)} fields")
                qrels.setdefault(qid, {})[did] = int(rel)
            except ValueError as e:
                raise CorpusError(
                    f"{path}:{lineno}: expected 'query-id<TAB>corpus-id<TAB>score' ({e})."
                ) from e
    return qrels


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
