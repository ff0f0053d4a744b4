"""A cache of encoded corpora keyed by encoder + corpus, so re-running an evaluation skips encoding.

An entry is a directory holding ``vectors.parquet`` (the document vectors; for a dense
encoder ``vectors.npy`` and ``ids.json``), ``encoder/`` (the
encoder as it was after fitting, e.g. BM25 statistics) and ``stats.json`` (encoding time).
Entries are written to a temporary name and renamed, so an interrupted run leaves no entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lsr import load_encoder
from lsr.encoder import Encoder
from lsr.vector_files import VectorFile

DENSE_VECTORS, DENSE_IDS = "vectors.npy", "ids.json"  # a dense encoder's entry


def default_cache_dir() -> Path:
    return Path(os.environ.get("LSR_CACHE", Path.home() / ".cache" / "lsr")) / "encoded"


def encoder_fingerprint(spec: str, encoder: Encoder) -> str:
    """What identifies an encoding: the spec, the model files' sizes/mtimes and the settings
    the encoder reports as its ``config`` (:class:`lsr.encoder.Encoder`)."""
    parts: dict = {"spec": str(spec), "config": encoder.config}
    folder = Path(str(spec).split(":", 1)[-1])
    if folder.is_dir():
        parts["spec"] = str(folder.resolve())
        parts["files"] = sorted(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")
            if p.is_file()
        )
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def document_fingerprint(spec: str, encoder: Encoder) -> str | None:
    """What identifies the document side of an encoding, for encoders that say what
    determines their document vectors (``document_config``): the document model's files
    and those settings. Two specs with the same one (a SPLADE model and its inference-free
    variant) encode a corpus identically. None for other encoders."""
    settings = getattr(encoder, "document_config", None)
    if settings is None:
        return None
    location = str(spec).split(":", 1)[-1]
    parts: dict = {"documents": settings, "model": location}
    folder = Path(location)
    if folder.is_dir():
        parts["model"] = str(folder.resolve())
        parts["files"] = sorted(
            (str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")
            if p.is_file()
        )
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    return "docs-" + digest.hexdigest()[:16]


class DenseEntry(NamedTuple):
    """A dense encoder's cached encoding: the vectors (memory mapped), their ids, where."""

    matrix: np.ndarray
    ids: list[str]
    path: Path


@dataclass
class CacheEntry:
    path: Path

    @property
    def vectors(self) -> VectorFile | DenseEntry:
        """The document vectors: a Parquet vector file, or a dense encoder's matrix."""
        path = self.path / "vectors.parquet"
        if path.is_file():
            return VectorFile(path)
        ids = json.loads((self.path / DENSE_IDS).read_text(encoding="utf-8"))
        return DenseEntry(np.load(self.path / DENSE_VECTORS, mmap_mode="r"), ids, self.path)

    def encoder(self):
        return load_encoder(self.path / "encoder")

    @property
    def stats(self) -> dict:
        return json.loads((self.path / "stats.json").read_text(encoding="utf-8"))


class EncodingCache:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def _dir(self, encoder_key: str, corpus_key: str) -> Path:
        return self.root / f"{encoder_key}-{corpus_key[:16]}"

    def get(self, encoder_key: str, corpus_key: str) -> CacheEntry | None:
        path = self._dir(encoder_key, corpus_key)
        vectors = (
            ("vectors.parquet",)
            if (path / "vectors.parquet").exists()
            else (DENSE_VECTORS, DENSE_IDS)
        )
        complete = all((path / n).exists() for n in (*vectors, "encoder", "stats.json"))
        return CacheEntry(path) if complete else None

    def put(self, encoder_key: str, corpus_key: str, write) -> CacheEntry:
        """Create an entry: ``write(tmp_dir)`` fills it, then it is renamed into place."""
        final = self._dir(encoder_key, corpus_key)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            write(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return CacheEntry(final)
