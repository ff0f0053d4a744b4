"""Collection -> another engine's files (``lsr export``): CIFF for PISA, Anserini and BMP;
bulk files for OpenSearch, Elasticsearch and Qdrant, with a query example encoded by the
collection's own encoder."""

from __future__ import annotations

from pathlib import Path

from lsr.encoders import load_encoder
from lsr.errors import InputError
from lsr.index import LiveIndex
from lsr.index.ciff import CiffSummary, write_ciff
from lsr.index.engine_export import FORMATS, EngineExport, export_documents
from lsr.pipeline.indexing import ENCODER_DIR

EXPORT_FORMATS = ("ciff", *FORMATS)
EXAMPLE_WORDS = 12  # the default example query: the first words of the first document


def _example_text(record: dict | None) -> str | None:
    """The first words of a document's title and text (the default example query)."""
    if record is None:
        return None
    words = " ".join(str(record.get(f, "")) for f in ("title", "text")).split()
    return " ".join(words[:EXAMPLE_WORDS]) or None


def _query_tokens(encoder, text: str) -> dict[str, float]:
    vector = encoder.encode_queries([text])
    lo, hi = vector.indptr[0], vector.indptr[1]
    pairs = zip(vector.indices[lo:hi].tolist(), vector.data[lo:hi].tolist(), strict=True)
    return {encoder.vocab[t]: float(w) for t, w in sorted(pairs, key=lambda p: -p[1])}


def export_collection(
    path: str | Path,
    out: str | Path,
    fmt: str,
    *,
    name: str = "lsr",
    field: str = "lsr",
    values: str | None = None,
    example_query: str | None = None,
) -> CiffSummary | EngineExport:
    """Export the collection at ``path`` to ``out`` in ``fmt`` (``EXPORT_FORMATS``): a CIFF
    file, or a folder of another engine's bulk files whose query example is
    ``example_query`` (default: the first words of the first document) encoded by the
    collection's encoder."""
    if fmt not in EXPORT_FORMATS:
        raise InputError(
            f"Unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}."
        )
    with LiveIndex(path, read_only=True) as live:
        if fmt == "ciff":
            if values not in (None, "impacts"):
                raise InputError("CIFF holds 8-bit impacts only: leave out --values.")
            return write_ciff(live.as_index(), out, description=f"Collection {path}.")
        saved = Path(path) / ENCODER_DIR
        if example_query and not saved.is_dir():
            raise InputError(f"{path} has no saved encoder to encode --example-query with.")

        def example(first: dict | None) -> dict[str, float] | None:
            """Called once the export's options are checked: only then is a model loaded."""
            text = example_query or _example_text(first)
            if not text or not saved.is_dir():
                return None
            return _query_tokens(load_encoder(saved), text)

        return export_documents(
            live, out, fmt, index_name=name, field_name=field, values=values,
            query_example=example, source=str(path),
        )  # fmt: skip


__all__ = ["EXPORT_FORMATS", "export_collection"]
