"""Stored documents: each document's ``_id``, ``title``, ``text`` and other JSON fields, in a
compressed columnar file beside the postings (``store.arrow``).

The file is Arrow IPC with zstd-compressed record batches of ``ROWS_PER_BATCH`` documents, in
doc-number order, so fetching the documents of a page of hits decompresses only their batches,
and a filter reads only the columns it names (``IpcReadOptions.included_fields``). Each
top-level field is one typed column (nested objects such as BEIR's ``metadata`` become
struct columns, lists list columns), so filters compare typed values; a field whose values
mix types across documents (a number here, a string there) is stored as JSON text and
flagged in the column's metadata, and read back as the original values. A ``null`` value and
a missing field read back alike (absent).

What is kept is a build-time choice (:class:`StoreSpec`): ``all`` fields, ``fields:a,b``
(``_id`` and those), or ``none`` (no file).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from lsr.errors import InputError
from lsr.index.errors import IndexFormatError

STORE_FILE = "store.arrow"
ID_FIELD = "_id"
ROWS_PER_BATCH = 128
JSON_FLAG = b"lsr.json"  # column metadata key: values are JSON texts of mixed-type values
_CACHED_BATCHES = 64


@dataclass(frozen=True)
class StoreSpec:
    """Which fields of a document record are stored: ``mode`` is ``all``, ``fields`` (only
    ``fields``, plus ``_id``) or ``none``."""

    mode: str = "all"
    fields: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | StoreSpec | None) -> StoreSpec:
        """``all``, ``none`` or ``fields:a,b`` (the ``--store`` option), or a clear error."""
        if isinstance(text, StoreSpec):
            return text
        if text is None or text == "all":
            return cls("all")
        if text == "none":
            return cls("none")
        if isinstance(text, str) and text.startswith("fields:"):
            names = tuple(dict.fromkeys(f.strip() for f in text[len("fields:") :].split(",")))
            if not names or any(not n for n in names):
                raise InputError(
                    f"--store {text!r}: name the fields after 'fields:', e.g. fields:title,text."
                )
            return cls("fields", tuple(n for n in names if n != ID_FIELD))
        raise InputError(f"--store must be all, none or fields:a,b (got {text!r}).")

    @property
    def stores(self) -> bool:
        return self.mode != "none"

    def select(self, record: dict) -> dict:
        """The part of ``record`` this spec keeps."""
        if self.mode == "all":
            return record
        kept = {ID_FIELD: record[ID_FIELD]} if ID_FIELD in record else {}
        kept.update((f, record[f]) for f in self.fields if f in record)
        return kept

    def to_dict(self) -> dict:
        return {"mode": self.mode, "fields": list(self.fields)}

    @classmethod
    def from_dict(cls, d: dict) -> StoreSpec:
        return cls(d.get("mode", "all"), tuple(d.get("fields", ())))


def records_table(records: Sequence[dict]) -> pa.Table:
    """The Arrow table of document records (one row each, ``_id`` first): a typed column per
    field, JSON text for a field whose values do not share one type."""
    names: dict[str, None] = {ID_FIELD: None}
    for rec in records:
        names.update(dict.fromkeys(rec))
    columns, fields = [], []
    for name in names:
        values = [rec.get(name) for rec in records]
        try:
            column = pa.array(values)
            flagged = False
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            column = pa.array(
                [None if v is None else json.dumps(v, ensure_ascii=False) for v in values],
                pa.large_string(),
            )
            flagged = True
        if pa.types.is_null(column.type):
            column = column.cast(pa.string())
        fields.append(pa.field(name, column.type, metadata={JSON_FLAG: b"1"} if flagged else None))
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def json_fields(schema: pa.Schema) -> set[str]:
    """The fields of ``schema`` stored as JSON text (their values mix types)."""
    return {f.name for f in schema if f.metadata and f.metadata.get(JSON_FLAG) == b"1"}


def concat_records(first: pa.Table, second: pa.Table) -> pa.Table | None:
    """The rows of two record tables as one (columns unified: a field missing on one side is
    null there), or None when a field's types cannot be unified (then rebuild from records)."""
    a, b = json_fields(first.schema), json_fields(second.schema)
    # a JSON-text column on one side only: its types would not match the other side's
    if (a - b) & set(second.schema.names) or (b - a) & set(first.schema.names):
        return None
    try:
        return pa.concat_tables([first, second], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def _clean(value):
    """Drop the ``None`` members struct columns add for keys a document did not have."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _rows(table: pa.Table) -> list[dict]:
    """A table's rows as records, JSON-flagged columns decoded, absent fields left out."""
    flagged = json_fields(table.schema)
    out = []
    for row in table.to_pylist():
        rec = {}
        for k, v in row.items():
            if v is None:
                continue
            rec[k] = json.loads(v) if k in flagged else _clean(v)
        out.append(rec)
    return out


def write_store(path: Path, records: Sequence[dict] | pa.Table) -> int:
    """Write ``records`` (in doc-number order; or their table) to the store file ``path``;
    returns its bytes."""
    table = records if isinstance(records, pa.Table) else records_table(records)
    table = table.combine_chunks()  # batches of exactly ROWS_PER_BATCH rows (get relies on it)
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with (
        pa.OSFile(str(path), "wb") as sink,
        pa.ipc.new_file(sink, table.schema, options=options) as writer,
    ):
        writer.write_table(table, max_chunksize=ROWS_PER_BATCH)
    return Path(path).stat().st_size


class DocumentStore:
    """Read access to a store file: documents by doc number, columns for filters.

    The file is memory mapped; decoded batches are kept in a small LRU cache, decoded
    columns (for filters) until the store is dropped. Safe to use from several threads.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._source = pa.memory_map(str(self.path), "r")
            self._reader = pa.ipc.open_file(self._source)
        except (pa.ArrowInvalid, OSError) as e:
            raise IndexFormatError(
                f"{self.path} is not a readable document store ({e}); rebuild the index."
            ) from e
        self.schema = self._reader.schema
        self._batches: OrderedDict[int, pa.RecordBatch] = OrderedDict()
        self._columns: dict[str, pa.ChunkedArray] = {}
        self._lock = threading.Lock()

    @property
    def field_names(self) -> list[str]:
        return list(self.schema.names)

    def _batch(self, b: int) -> pa.RecordBatch:
        with self._lock:
            batch = self._batches.get(b)
            if batch is not None:
                self._batches.move_to_end(b)
                return batch
        batch = self._reader.get_batch(b)
        with self._lock:
            self._batches[b] = batch
            while len(self._batches) > _CACHED_BATCHES:
                self._batches.popitem(last=False)
        return batch

    def get(self, numbers: Iterable[int], fields: Sequence[str] | None = None) -> list[dict]:
        """The stored records of documents ``numbers`` (in that order), restricted to
        ``fields`` (and ``_id``) when given."""
        numbers = [int(n) for n in numbers]
        out = []
        for n in numbers:
            batch = self._batch(n // ROWS_PER_BATCH)
            row = batch.slice(n % ROWS_PER_BATCH, 1)
            if fields is not None:
                keep = [f for f in (ID_FIELD, *fields) if f in row.schema.names]
                row = row.select(list(dict.fromkeys(keep)))
            out.extend(_rows(pa.Table.from_batches([row])))
        return out

    def table(self, numbers: np.ndarray | None = None) -> pa.Table:
        """Every stored record (or those of ``numbers``) as an Arrow table, without turning
        them into Python objects (a merge carries them over this way)."""
        table = self._reader.read_all()
        if numbers is not None:
            table = table.take(pa.array(np.asarray(numbers, dtype=np.int64)))
        return table

    def records(self, numbers: np.ndarray | None = None) -> list[dict]:
        """Every stored record (or those of ``numbers``), in doc-number order."""
        return _rows(self.table(numbers))

    def column(self, name: str) -> pa.ChunkedArray | None:
        """The whole column of top-level field ``name`` (None if no document has it), read
        and decompressed once, without the other columns."""
        with self._lock:
            if name in self._columns:
                return self._columns[name]
        if name not in self.schema.names:
            return None
        options = pa.ipc.IpcReadOptions(included_fields=[self.schema.get_field_index(name)])
        reader = pa.ipc.open_file(self._source, options=options)
        column = reader.read_all().column(0)
        with self._lock:
            self._columns[name] = column
        return column

    def is_json(self, name: str) -> bool:
        """Whether field ``name`` is stored as JSON text (its values mix types)."""
        return name in json_fields(self.schema)


class TableDocuments:
    """Records held in memory (a write buffer's documents) with the column access filters use,
    like :class:`DocumentStore`'s."""

    def __init__(self, records: Sequence[dict]) -> None:
        self.table = records_table(records)
        self.schema = self.table.schema

    @property
    def field_names(self) -> list[str]:
        return list(self.schema.names)

    def column(self, name: str) -> pa.ChunkedArray | None:
        return self.table.column(name) if name in self.schema.names else None

    def is_json(self, name: str) -> bool:
        return name in json_fields(self.schema)
