"""Run files: ranked hits per query, written as TREC runs or JSON lines.

A TREC run has one line per hit, ``qid Q0 docid rank score tag`` (what trec_eval,
ir_measures and Pyserini read); the JSON-lines form has one object per query,
``{"query_id", "hits": [{"rank", "id", "score"}]}``. :class:`RunWriter` writes either as hits
arrive, so a run of many queries is never held in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import IO

import orjson

from lsr.errors import InputError

RUN_FORMATS = ("trec", "jsonl")


def run_format(path: str | Path, requested: str | None = None) -> str:
    """The format to write ``path`` in: ``requested``, else ``jsonl`` for a ``.jsonl`` or
    ``.json`` name and ``trec`` for any other."""
    if requested is not None:
        if requested not in RUN_FORMATS:
            raise InputError(f"Unknown run format {requested!r}; use trec or jsonl.")
        return requested
    return "jsonl" if Path(path).suffix.lower() in (".jsonl", ".json") else "trec"


class RunWriter:
    """Writes a run to an open text stream, query by query."""

    def __init__(self, stream: IO[str], fmt: str = "trec", tag: str = "lsr") -> None:
        if fmt not in RUN_FORMATS:
            raise InputError(f"Unknown run format {fmt!r}; use trec or jsonl.")
        if not tag or any(c.isspace() for c in tag):
            raise InputError(f"A run tag is one word without spaces, got {tag!r}.")
        self.stream, self.format, self.tag = stream, fmt, tag
        self.queries = self.hits = 0

    def write(self, query_id: str, hits: Iterable[tuple[str, float]]) -> None:
        """The hits of one query, best first."""
        ranked = list(hits)
        if self.format == "jsonl":
            rows = [{"rank": r, "id": d, "score": s} for r, (d, s) in enumerate(ranked, 1)]
            line = orjson.dumps({"query_id": query_id, "hits": rows}).decode() + "\n"
            self.stream.write(line)
        else:
            if any(c.isspace() for c in query_id):
                raise InputError(
                    f"Query id {query_id!r} has white space, which a TREC run cannot hold; "
                    "write JSON lines (--format jsonl)."
                )
            for rank, (doc, score) in enumerate(ranked, 1):
                self.stream.write(f"{query_id} Q0 {doc} {rank} {score:.6f} {self.tag}\n")
        self.queries += 1
        self.hits += len(ranked)

    def write_all(self, hits: Iterable[tuple[str, Iterable[tuple[str, float]]]]) -> RunWriter:
        """Every ``(query_id, hits best first)`` of ``hits``, in order; returns this writer."""
        for query_id, ranked in hits:
            self.write(query_id, ranked)
        return self


def write_trec_run(path: Path, run: dict[str, dict[str, float]], tag: str) -> None:
    """The run ``{qid: {docid: score}}`` as a TREC run file, each query's hits by score."""
    with open(path, "w", encoding="utf-8") as f:
        ranked = ((qid, sorted(hits.items(), key=lambda h: -h[1])) for qid, hits in run.items())
        RunWriter(f, "trec", tag).write_all(ranked)
