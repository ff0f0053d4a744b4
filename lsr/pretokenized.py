"""Documents that arrive already weighted, and the query side that goes with them.

Pyserini's ``JsonVectorCollection`` (``{"id", "contents", "vector": {term: weight}}``, one
JSON object per line) carries documents encoded elsewhere, e.g. by a learned sparse model
run on a GPU cluster. ``lsr index CORPUS --pretokenized`` indexes those weights as they are.
Without ``--encoder`` the collection's encoder is a :class:`PretokenizedEncoder`: its
vocabulary is every term of the corpus and a query is pretokenized too, white-space
separated terms each counting once (Pyserini's ``--impact --pretokenized`` search); with
``--encoder`` the terms must belong to that encoder's vocabulary and queries go through it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lsr.corpus import Document, json_records
from lsr.encoder import read_config, write_config
from lsr.errors import CorpusError, EncoderError
from lsr.sparse import decode, term_counts


class PretokenizedEncoder:
    """White-space separated terms of a fixed vocabulary, each occurrence counting 1."""

    name = "pretokenized"
    queries_need_model = False  # a table lookup

    def __init__(self, vocab: Sequence[str]) -> None:
        if not vocab:
            raise EncoderError("A pretokenized encoder needs a vocabulary of at least one term.")
        self._vocab = list(vocab)
        self._ids = {t: i for i, t in enumerate(self._vocab)}
        if len(self._ids) != len(self._vocab):
            raise EncoderError("A pretokenized vocabulary lists a term twice.")

    @property
    def vocab(self) -> list[str]:
        return self._vocab

    @property
    def config(self) -> dict:
        return {"type": self.name, "vocab_size": len(self._vocab)}

    def _encode(self, texts: Sequence[str]) -> sp.csr_array:
        ids = self._ids
        rows = [
            np.fromiter((ids[t] for t in text.split() if t in ids), dtype=np.int32)
            for text in texts
        ]
        return term_counts(rows, len(self._vocab))

    def encode_queries(self, texts: Sequence[str]) -> sp.csr_array:
        """Each query's known terms, counted (unknown terms match nothing)."""
        return self._encode(texts)

    def encode_documents(self, texts: Sequence[str]) -> sp.csr_array:
        """Documents given as text (a write over REST): their known terms, counted."""
        return self._encode(texts)

    def decode(self, vector: sp.csr_array, top_k: int | None = None) -> list[tuple[str, float]]:
        return decode(vector, self._vocab, top_k)

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_config(folder, {**self.config, "vocab": self._vocab})

    @classmethod
    def from_pretrained(cls, folder: str | Path, **options) -> PretokenizedEncoder:
        if options:
            raise EncoderError(
                f"A pretokenized encoder takes no options (got {', '.join(sorted(options))})."
            )
        config = read_config(folder, cls.name)
        if not config:
            raise EncoderError(f"Cannot read a pretokenized encoder from {folder}.")
        return cls(config["vocab"])


def vector_files(path: str | Path) -> list[Path]:
    """The JSON-lines files of a JsonVectorCollection: the file given, or a folder's
    ``*.jsonl`` / ``*.jsonl.gz`` / ``*.json`` files in name order."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz", ".json"))
        )
        if files:
            return files
        raise CorpusError(f"{path} holds no .jsonl files of pretokenized documents.")
    raise CorpusError(f"Pretokenized corpus {path} does not exist.")


def read_vector_corpus(path: str | Path) -> Iterator[tuple[Document, dict[str, float]]]:
    """``(document, {term: weight})`` for each line of a JsonVectorCollection (Pyserini's
    ``{"id", "contents", "vector"}``; ``_id``/``docid`` and ``text`` are accepted too).
    Each bad record is reported with its file and line."""
    for file in vector_files(path):
        for where, record in json_records(file, "id and vector"):
            doc_id = next((record[k] for k in ("id", "_id", "docid") if k in record), None)
            if doc_id is None or str(doc_id) == "":
                raise CorpusError(f"{where}: the record has no id.")
            vector = record.get("vector")
            if not isinstance(vector, dict):
                raise CorpusError(
                    f"{where}: a pretokenized record needs 'vector': {{term: weight}}."
                )
            for term, weight in vector.items():
                ok = isinstance(weight, (int, float)) and not isinstance(weight, bool)
                if not term or not ok or not math.isfinite(weight) or weight < 0:
                    raise CorpusError(
                        f"{where}: term {term!r} has weight {weight!r}; weights are finite "
                        "numbers >= 0 and terms non-empty."
                    )
            text = record.get("contents", record.get("text", ""))
            fields = {
                k: v
                for k, v in record.items()
                if k not in ("id", "_id", "docid", "contents", "text", "vector")
            }
            yield Document(id=str(doc_id), text=str(text), fields=fields), vector


def vectors_to_rows(
    vectors: Sequence[dict[str, float]], ids: dict[str, int], vocab_size: int
) -> sp.csr_array:
    """The ``{term: weight}`` dicts as rows over a vocabulary (terms must be in ``ids``)."""
    indptr, indices, data = [0], [], []
    for vector in vectors:
        row = sorted((ids[t], float(w)) for t, w in vector.items() if w > 0)
        indices += [i for i, _ in row]
        data += [w for _, w in row]
        indptr.append(len(indices))
    return sp.csr_array(
        (np.asarray(data, np.float32), np.asarray(indices, np.int32), np.asarray(indptr)),
        shape=(len(vectors), vocab_size),
    )
