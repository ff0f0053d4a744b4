"""lsr: learned sparse retrieval, under one import namespace.

- ``lsr`` (this package): tokenizers, corpus readers and sparse encoders. Encoders turn text
  into ``scipy.sparse.csr_array`` rows over their vocabulary (``encode_queries`` /
  ``encode_documents``); the index consumes exactly that type.
- ``lsr.kernels``: Numba kernels; ``lsr.index``: the collection and its search;
  ``lsr.eval``: datasets, metrics, reports, benchmarks; ``lsr.service``: the command line
  and the REST app.

The names below are imported on first use, so ``import lsr.index`` loads no encoder and
nothing here imports torch until a model-based encoder is used.
"""

from __future__ import annotations

from importlib import import_module, metadata
from importlib.resources import files
from pathlib import Path

try:
    __version__ = metadata.version("lsr-engine")  # pyproject.toml's version, as installed
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "BM25Encoder": "lsr.bm25",
    "CorpusError": "lsr.errors",
    "Document": "lsr.corpus",
    "Encoder": "lsr.encoder",
    "EncoderError": "lsr.errors",
    "HFTokenizer": "lsr.tokenization",
    "LSRError": "lsr.errors",
    "WordTokenizer": "lsr.tokenization",
    "connect": "lsr.pipeline.cluster",
    "count_documents": "lsr.corpus",
    "decode": "lsr.sparse",
    "load_encoder": "lsr.encoders",
    "read_corpus": "lsr.corpus",
    "read_qrels": "lsr.corpus",
    "read_queries": "lsr.corpus",
    "term_counts": "lsr.sparse",
}


def sample_dataset() -> Path:
    """The BEIR-layout sample bundled with the package (corpus, queries, qrels/test.tsv)."""
    return Path(str(files("lsr") / "data" / "sample"))


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lsr' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = ["__version__", "sample_dataset", *_EXPORTS]
