"""Learned sparse representations: tokenizers, corpus readers and sparse encoders.

Encoders turn text into ``scipy.sparse.csr_array`` rows over their tokenizer's vocabulary
(``encode_queries`` / ``encode_documents``); the index consumes exactly that type. Importing
this package does not import torch: model-based encoders load it when they are used.
"""

from importlib.resources import files
from pathlib import Path

from lsr.bm25 import BM25Encoder
from lsr.corpus import Document, count_documents, read_corpus, read_qrels, read_queries
from lsr.encoders import load_encoder
from lsr.errors import CorpusError, EncoderError
from lsr.sparse import decode, term_counts
from lsr.tokenization import HFTokenizer, WordTokenizer


def sample_dataset() -> Path:
    """The BEIR-layout sample bundled with the package (corpus, queries, qrels/test.tsv)."""
    return Path(str(files("lsr") / "data" / "sample"))


__all__ = [
    "BM25Encoder",
    "CorpusError",
    "Document",
    "EncoderError",
    "HFTokenizer",
    "WordTokenizer",
    "count_documents",
    "decode",
    "load_encoder",
    "read_corpus",
    "read_qrels",
    "read_queries",
    "sample_dataset",
    "term_counts",
]
