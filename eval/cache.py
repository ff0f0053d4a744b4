"""A cache of encoded corpora keyed by encoder + corpus, so re-running an evaluation skips encoding.

An entry is a directory holding ``vectors.parquet`` (the document vectors), ``encoder/`` (the
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

from lsr import load_encoder
from lsr.vector_files import VectorFile

OPTION_ATTRS = ("k1", "b", "max_active_dims", "threshold", "query_max_length")
MODEL_ATTRS = ("max_length", "max_chunks", "activation")


def default_cache_dir() -> Path:
    return Path(os.environ.get("LSR_CACHE", Path.home() / ".cache" / "lsr")) / "encoded"


def encoder_fingerprint(spec: str, encoder) -> str:
    """What identifies an encoding: the spec, the model files' sizes/mtimes and the options."""
    parts: dict = {"spec": str(spec), "type": getattr(encoder, "name", type(encoder).__name__)}
    folder = Path(str(spec).split(":", 1)[-1])
    if folder.is_dir():
        parts["spec"] = str(folder.resolve())
        parts["files"] = sorted(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")
            if p.is_file()
        )
    parts["options"] = {a: getattr(encoder, a) for a in OPTION_ATTRS if hasattr(encoder, a)}
    model = getattr(encoder, "doc_model", None)
    if model is not None:
        parts["model"] = {a: getattr(model, a) for a in MODEL_ATTRS}
    tokenizer = getattr(encoder, "tokenizer", None)
    if tokenizer is not None and hasattr(tokenizer, "to_config"):
        parts["tokenizer"] = {k: v for k, v in tokenizer.to_config().items() if k != "vocab"}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class CacheEntry:
    path: Path

    @property
    def vectors(self) -> VectorFile:
        return VectorFile(self.path / "vectors.parquet")

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
        complete = all((path / n).exists() for n in ("vectors.parquet", "encoder", "stats.json"))
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
