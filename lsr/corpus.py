"""Corpus readers: BEIR folders, JSONL (``{"_id", "title", "text"}``) and TSV files."""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lsr.errors import CorpusError

_ID_KEYS = ("_id", "id", "doc_id", "docid")
_RECORD_KEYS = {*_ID_KEYS, "text", "contents", "title"}  # the rest are the document's fields
_HEADER_IDS = {"id", "_id", "docid", "doc_id", "pid", "qid", "query-id", "corpus-id"}


@dataclass(frozen=True)
class Document:
    """One corpus entry; ``contents`` is what encoders see (title and text joined), ``fields``
    the record's other JSON fields (BEIR's ``metadata`` among them), kept for storing."""

    id: str
    text: str
    title: str = ""
    fields: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def contents(self) -> str:
        return f"{self.title} {self.text}".strip() if self.title else self.text

    def record(self) -> dict:
        """The document as a stored record: ``_id``, ``title``, ``text`` and its fields."""
        return {"_id": self.id, "title": self.title, "text": self.text, **self.fields}


def corpus_file(path: str | Path) -> Path:
    """The file holding the documents of ``path`` (a BEIR folder, .jsonl[.gz] or .tsv)."""
    path = Path(path)
    if path.is_dir():
        for name in ("corpus.jsonl", "corpus.jsonl.gz"):
            if (path / name).is_file():
                return path / name
        raise CorpusError(
            f"{path} is a folder without corpus.jsonl; give a BEIR folder, a .jsonl or a .tsv file."
        )
    if not path.is_file():
        raise CorpusError(
            f"Corpus {path} does not exist; give a BEIR folder, a .jsonl or a .tsv file."
        )
    if not path.name.endswith((".jsonl", ".jsonl.gz", ".json", ".tsv", ".tsv.gz", ".txt")):
        raise CorpusError(f"Cannot read {path}: expected a .jsonl, .jsonl.gz or .tsv file.")
    return path


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 text file (gzipped when it ends in .gz), each line
    decoded on its own, so that bytes that are not UTF-8 text, or a NUL byte (a binary
    file), are reported with the file and the line they are on."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if b"\0" in raw:
                    raise CorpusError(
                        f"{path}:{lineno}: holds a NUL byte: a binary file, not a text corpus."
                    )
                try:
                    yield lineno, raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise CorpusError(
                        f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                        f"{e.start + 1}); convert the file to UTF-8."
                    ) from e
    except (gzip.BadGzipFile, EOFError) as e:
        raise CorpusError(f"{path}: not a readable gzip file ({e}).") from e


def read_corpus(path: str | Path) -> Iterator[Document]:
    """Yield the documents of a BEIR folder, JSONL or TSV file, validating each record."""
    file = corpus_file(path)
    if ".tsv" in file.name or file.name.endswith(".txt"):
        yield from _read_tsv(file)
    else:
        yield from _read_jsonl(file)


def count_documents(path: str | Path) -> int:
    """Number of non-empty lines of the corpus file (a fast total for progress bars)."""
    return sum(1 for _, line in text_lines(corpus_file(path)) if line.strip())


def json_records(file: Path, expected: str) -> Iterator[tuple[str, dict]]:
    """``("file:line", record)`` for each non-blank line of a JSON-lines file; a line that is
    not a JSON object is refused with its place and what was ``expected`` there."""
    for lineno, line in text_lines(file):
        if not line.strip():
            continue
        where = f"{file}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{where}: not valid JSON ({e.msg}).") from e
        if not isinstance(record, dict):
            raise CorpusError(f"{where}: expected a JSON object with {expected}.")
        yield where, record


def _read_jsonl(file: Path) -> Iterator[Document]:
    for where, rec in json_records(file, "_id and text"):
        doc_id = next((rec[k] for k in _ID_KEYS if k in rec), None)
        if doc_id is None or str(doc_id) == "":
            raise CorpusError(f"{where}: the record has no _id.")
        text = rec.get("text", rec.get("contents", ""))
        title = rec.get("title") or ""
        if not isinstance(text, str) or not isinstance(title, str):
            raise CorpusError(f"{where}: title and text must be strings.")
        fields = {k: v for k, v in rec.items() if k not in _RECORD_KEYS}
        yield Document(id=str(doc_id), text=text, title=title, fields=fields)


def _tsv_row(line: str) -> list[str]:
    return next(csv.reader([line.rstrip("\r\n")], delimiter="\t", quoting=csv.QUOTE_NONE), [])


def _read_tsv(file: Path) -> Iterator[Document]:
    for lineno, line in text_lines(file):
        row = _tsv_row(line)
        if not row or not any(row):
            continue
        if lineno == 1 and row[0].strip().lower() in _HEADER_IDS:
            continue
        if len(row) == 2:
            yield Document(id=row[0], text=row[1])
        elif len(row) == 3:
            yield Document(id=row[0], title=row[1], text=row[2])
        else:
            raise CorpusError(
                f"{file}:{lineno}: expected 'id<TAB>text' or 'id<TAB>title<TAB>text', "
                f"got {len(row)} fields."
            )


def read_queries(path: str | Path) -> dict[str, str]:
    """Queries from BEIR ``queries.jsonl`` (``{"_id", "text"}``) or a ``qid<TAB>text`` file."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"Queries file {path} does not exist.")
    queries: dict[str, str] = {}
    for lineno, line in text_lines(path):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                rec = json.loads(line)
                queries[str(rec["_id"])] = str(rec["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CorpusError(f'{path}:{lineno}: expected {{"_id", "text"}} ({e}).') from e
        else:
            qid, _, text = line.rstrip("\r\n").partition("\t")
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
    for lineno, line in text_lines(path):
        row = _tsv_row(line)
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
