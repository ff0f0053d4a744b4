"""``lsr index CORPUS --append --out DIR``: add a corpus to an existing collection.

The collection's own encoders (saved beside it: the main one and those of its extra
representations) encode the new documents, so their vectors
share its vocabulary and, for BM25, its fitted statistics. The documents go through the
collection's writer (:class:`lsr.index.LiveIndex`: the writer lock, the write-ahead log, one
logged and fsynced write per batch, stored fields as the collection's ``--store`` setting
says, new segments flushed as the buffer fills), flushed at the end and merged as the
collection's merge policy says, so an interrupted append keeps every batch that was
acknowledged and a running ``lsr serve`` (the writer) makes it fail at once with a clear
error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lsr.corpus import Document
from lsr.encoders import load_encoder
from lsr.encoding import encode_with_unknown
from lsr.errors import CorpusError
from lsr.index import LiveIndex
from lsr.index.validation import empty_rows
from lsr.pipeline.hybrid import load_encoders
from lsr.pipeline.indexing import ENCODER_DIR, read_documents

logger = logging.getLogger(__name__)


@dataclass
class AppendSummary:
    """What an append did."""

    path: str
    added: int  # new ids
    replaced: int  # ids the collection already held (their new version replaces the old)
    skipped_empty: int  # documents with no indexable term (no query could find them)
    with_unknown_words: int  # documents with words the fitted vocabulary lacks
    n_docs: int  # documents in the collection afterwards
    seconds: float

    def line(self) -> str:
        extra = ""
        if self.skipped_empty:
            extra += f", skipped {self.skipped_empty:,} with no indexable term"
        if self.with_unknown_words:
            extra += f", {self.with_unknown_words:,} with words the vocabulary lacks"
        return (
            f"appended {self.added:,} docs (replaced {self.replaced:,}{extra}) in "
            f"{self.seconds:.1f}s -> {self.path} ({self.n_docs:,} docs)"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def append_corpus(
    corpus: str | Path | Iterable[Document],
    out: str | Path,
    batch_size: int = 256,
    progress: bool = False,
) -> AppendSummary:
    """Encode ``corpus`` with the collection's encoder and add it to the collection at
    ``out`` (ids it already holds are replaced); see the module docstring."""
    start = time.perf_counter()
    out = Path(out)
    with LiveIndex(out) as live:
        encoder = load_encoder(out / ENCODER_DIR)
        extra_encoders = load_encoders(out, live)
        docs = read_documents(corpus, progress)
        seen: set[str] = set()
        for d in docs:
            if d.id in seen:
                raise CorpusError(f"{corpus}: the id {d.id!r} appears twice; ids must be unique.")
            seen.add(d.id)
        added = replaced = skipped = unknown = 0
        bar = tqdm(total=len(docs), desc="append", unit="doc", disable=not progress)
        for lo in range(0, len(docs), batch_size):
            batch = docs[lo : lo + batch_size]
            vectors, unknown_lists = encode_with_unknown(encoder, [d.contents for d in batch])
            unknown += sum(1 for words in unknown_lists if words)
            keep = np.setdiff1d(np.arange(len(batch)), empty_rows(vectors))
            skipped += len(batch) - len(keep)
            if len(keep):
                kept = [batch[i] for i in keep]
                existing = sum(1 for d in kept if live.document(d.id, []) is not None)
                texts = [d.contents for d in kept]
                extras = {n: e.encode_documents(texts) for n, e in extra_encoders.items()}
                live.upsert(
                    vectors[keep], [d.id for d in kept], [d.record() for d in kept], extras or None
                )
                replaced += existing
                added += len(kept) - existing
            bar.update(len(batch))
        bar.close()
        if added or replaced:  # a segment of what the buffer holds, then the policy's merges
            live.flush()
            live.merge()
        summary = AppendSummary(
            str(out), added, replaced, skipped, unknown, live.n_docs, time.perf_counter() - start
        )
    logger.info(summary.line())
    return summary
