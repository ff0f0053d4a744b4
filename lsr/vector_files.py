"""Encoded vectors on disk as Parquet: one row per document (doc_id, term_ids, weights).

The file's schema metadata carries the vocabulary and the encoder spec, so vectors encoded
on one machine can be indexed on another and checked against the query encoder's vocabulary.
``lsr encode --ray`` writes a folder of such files (``part-00000.parquet`` ...) with a
``manifest.json``; :func:`open_vectors` reads either as one sequence of rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from lsr.errors import CorpusError, InputError

SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("term_ids", pa.list_(pa.int32())),
        ("weights", pa.list_(pa.float32())),
    ]
)
VOCAB_KEY = b"lsr.vocab"
ENCODER_KEY = b"lsr.encoder"


def _batch_table(vectors: sp.csr_array, doc_ids: Sequence[str]) -> pa.Table:
    csr = sp.csr_array(vectors, dtype=np.float32)
    csr.sort_indices()
    offsets = pa.array(csr.indptr.astype(np.int32))
    return pa.Table.from_arrays(
        [
            pa.array([str(d) for d in doc_ids], pa.string()),
            pa.ListArray.from_arrays(offsets, pa.array(csr.indices.astype(np.int32))),
            pa.ListArray.from_arrays(offsets, pa.array(csr.data)),
        ],
        schema=SCHEMA,
    )


def write_vectors(
    path: str | Path,
    batches: Iterable[tuple[sp.csr_array, Sequence[str]]],
    vocab: Sequence[str],
    encoder: str = "",
) -> int:
    """Write ``(vectors, doc_ids)`` batches to one Parquet file atomically; returns rows written."""
    path = Path(path)
    schema = SCHEMA.with_metadata(
        {
            VOCAB_KEY: json.dumps(list(vocab), ensure_ascii=False).encode("utf-8"),
            ENCODER_KEY: encoder.encode("utf-8"),
        }
    )
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    rows = 0
    try:
        with pq.ParquetWriter(str(tmp), schema, compression="zstd") as writer:
            for vectors, ids in batches:
                if vectors.shape[0] != len(ids):
                    raise InputError(f"{vectors.shape[0]} vectors but {len(ids)} doc ids.")
                if vectors.shape[1] != len(vocab):
                    raise InputError(
                        f"Vectors have {vectors.shape[1]} columns, vocab {len(vocab)}."
                    )
                writer.write_table(
                    _batch_table(vectors, ids).replace_schema_metadata(schema.metadata)
                )
                rows += len(ids)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return rows


class VectorFile:
    """A Parquet file written by :func:`write_vectors`: its vocabulary and batches of rows."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CorpusError(f"Vector file {self.path} does not exist.")
        try:
            self._file = pq.ParquetFile(str(self.path))
        except (pa.ArrowInvalid, OSError) as e:
            raise CorpusError(f"{self.path} is not a readable Parquet file ({e}).") from e
        meta = self._file.schema_arrow.metadata or {}
        if VOCAB_KEY not in meta or not {"doc_id", "term_ids", "weights"} <= set(
            self._file.schema_arrow.names
        ):
            raise CorpusError(f"{self.path} is not an lsr vector file (written by `lsr encode`).")
        self.vocab: list[str] = json.loads(meta[VOCAB_KEY].decode("utf-8"))
        self.encoder: str = meta.get(ENCODER_KEY, b"").decode("utf-8")

    def __len__(self) -> int:
        return self._file.metadata.num_rows

    def batches(self, batch_size: int = 10_000) -> Iterator[tuple[sp.csr_array, list[str]]]:
        """``(csr_array, doc_ids)`` batches in file order."""
        for batch in self._file.iter_batches(batch_size=batch_size):
            ids = batch.column("doc_id").to_pylist()
            terms, weights = batch.column("term_ids"), batch.column("weights")
            offsets = terms.offsets.to_numpy()
            if not np.array_equal(offsets, weights.offsets.to_numpy()):
                raise CorpusError(f"{self.path}: term_ids and weights differ in length.")
            start = offsets[0]
            indices = terms.values.to_numpy()[start : offsets[-1]]
            data = weights.values.to_numpy()[start : offsets[-1]]
            if indices.size and (indices.min() < 0 or indices.max() >= len(self.vocab)):
                raise CorpusError(f"{self.path}: term ids outside the vocabulary.")
            yield (
                sp.csr_array(
                    (data.astype(np.float32), indices, offsets - start),
                    shape=(len(ids), len(self.vocab)),
                ),
                ids,
            )


MANIFEST = "manifest.json"  # of a folder of parts (lsr encode --ray)
FORMAT_NAME = "lsr-vectors"


def part_name(number: int) -> str:
    return f"part-{number:05d}.parquet"


class VectorParts:
    """A folder of parts written by ``lsr encode --ray``, read as one vector file: its
    parts in order (the interface of :class:`VectorFile`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest = self.path / MANIFEST
        try:
            plan = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorpusError(f"{self.path} is not an encoding of lsr encode --ray ({e}).") from e
        if not isinstance(plan, dict) or plan.get("format") != FORMAT_NAME:
            raise CorpusError(f"{self.path} is not an encoding of lsr encode --ray.")
        if not plan.get("complete"):
            raise CorpusError(
                f"{self.path} is an unfinished encoding; run the same lsr encode --ray again."
            )
        self.files = [VectorFile(self.path / name) for name in plan["parts"]]
        if not self.files or any(f.vocab != self.files[0].vocab for f in self.files):
            raise CorpusError(f"{self.path}: its parts are missing or disagree on the vocabulary.")
        self.vocab = self.files[0].vocab
        self.encoder = self.files[0].encoder

    def __len__(self) -> int:
        return sum(len(f) for f in self.files)

    def batches(self, batch_size: int = 10_000) -> Iterator[tuple[sp.csr_array, list[str]]]:
        """``(csr_array, doc_ids)`` batches, part after part."""
        for part in self.files:
            yield from part.batches(batch_size)


def is_vectors(path) -> bool:
    """Whether ``path`` names encoded vectors: a ``.parquet`` file or a folder of parts."""
    if not isinstance(path, (str, Path)):
        return False
    return str(path).endswith(".parquet") or (Path(path) / MANIFEST).is_file()


def open_vectors(path: str | Path) -> VectorFile | VectorParts:
    """The vectors of a ``.parquet`` file of ``lsr encode`` or a folder of ``--ray``."""
    return VectorParts(path) if Path(path).is_dir() else VectorFile(path)
