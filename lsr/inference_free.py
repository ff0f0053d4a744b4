"""Inference-free sparse retrieval: documents by a masked-LM model, queries by table lookup.

A query is tokenized with the document model's tokenizer; each distinct non-special token t
gets weight ``table[t]`` (IDF, or a learned weight), so no model runs at query time. The
table is read from / written to ``idf.json`` ({token: weight}), the convention of public
inference-free checkpoints (e.g. OpenSearch's doc-v2/v3 models), which therefore load as is.

A model that ships no table is fitted on the corpus it encodes (IDF of that corpus). One that
ships a table keeps it, as its publisher meant; ``fit_idf=True`` (``--fit-idf``) drops the
shipped table so that the model is fitted on the corpus at hand like one without: the fair
way to compare a model trained on one corpus with the zero-shot model on another.

A model trained with ``query_factors`` (:mod:`lsr.query_factors`) also ships
``query_factors.json`` ({token: factor}, the tokens whose factor is not 1): learned
multipliers of IDF. Its ``idf.json`` holds the product on the training corpus, what queries
use as shipped; fitted on another corpus, the table is that corpus's IDF times the factors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lsr.checks import positive_int
from lsr.encoder import read_config, write_config
from lsr.errors import EncoderError
from lsr.hf import hub_file
from lsr.mlm import PROMPTS, DocumentModelEncoder, MLMSparseModel
from lsr.st_folder import (
    check_dimension,
    load_query_weights,
    router_settings,
    sparse_settings,
)
from lsr.tokenization import save_json

IDF_FILE = "idf.json"
FACTORS_FILE = "query_factors.json"  # learned multipliers of IDF (lsr.query_factors)
QUERY_WEIGHTS_FILE = "query_token_weights.txt"  # OpenSearch: token<TAB>weight per line


def idf_from_corpus(
    model: MLMSparseModel, texts: Iterable[str], batch_size: int = 1024
) -> np.ndarray:
    """IDF over the model's vocabulary, log(1 + (N - df + 0.5) / (df + 0.5)); unseen terms get 0."""
    df = np.zeros(model.vocab_size, dtype=np.int64)
    n = 0
    batch: list[str] = []

    def flush():
        ids = model.tokenizer(batch, add_special_tokens=False, truncation=False, verbose=False)[
            "input_ids"
        ]
        for seq in ids:
            df[np.unique(np.asarray(seq, dtype=np.int64))] += 1

    for text in texts:
        batch.append(text)
        n += 1
        if len(batch) == batch_size:
            flush()
            batch = []
    if batch:
        flush()
    if n == 0:
        raise EncoderError("Cannot compute IDF from an empty corpus.")
    idf = np.log1p((n - df + 0.5) / (df + 0.5))
    idf[df == 0] = 0.0
    idf[model.special_ids.numpy()] = 0.0
    return idf.astype(np.float32)


class InferenceFreeEncoder(DocumentModelEncoder):
    """Documents by an ``MLMSparseModel`` (``log1p_relu``/``l0``); queries by a weight table."""

    name = "inference-free"
    queries_need_model = False  # queries are a table lookup (see lsr.encoder.Encoder)

    def __init__(
        self,
        doc_model: MLMSparseModel,
        query_weights: np.ndarray | None = None,
        batch_size: int = 32,
        max_active_dims: int | None = None,
        threshold: float = 0.0,
        query_prompt: str = "",
        document_prompt: str = "",
        query_max_active_dims: int | None = None,
    ) -> None:
        self.doc_model = doc_model
        self.query_max_active_dims = positive_int(
            query_max_active_dims, "query_max_active_dims", optional=True, error=EncoderError
        )
        self.query_weights = None if query_weights is None else self._checked(query_weights)
        self.query_factors: np.ndarray | None = None  # multiplies IDF when the table is fitted
        self.batch_size = batch_size
        self.max_active_dims = max_active_dims
        self.threshold = threshold
        self.progress = False
        self._set_prompts(query_prompt, document_prompt)

    def _checked(self, weights: np.ndarray) -> np.ndarray:
        weights = np.asarray(weights, dtype=np.float32)
        if weights.shape != (self.doc_model.vocab_size,):
            raise EncoderError(
                f"The query weight table has {weights.shape[0]} entries, the vocabulary "
                f"{self.doc_model.vocab_size}."
            )
        if not np.isfinite(weights).all() or (weights < 0).any():
            raise EncoderError("Query weights must be finite and non-negative.")
        return weights

    @property
    def fitted(self) -> bool:
        return self.query_weights is not None

    def fit(self, texts: Iterable[str], progress: bool = False) -> InferenceFreeEncoder:
        """Compute the IDF query table from a corpus (only when no table was loaded), times
        the model's learned factors if it has them."""
        idf = idf_from_corpus(self.doc_model, texts)
        self.query_weights = idf if self.query_factors is None else idf * self.query_factors
        return self

    def set_query_factors(self, factors: np.ndarray) -> None:
        """Multiply the query table by learned ``factors`` and keep them (times any the model
        had already), so that a table fitted later (on another corpus) gets them too."""
        factors = self._checked(factors)
        if self.query_weights is not None:
            self.query_weights = self._checked(self.query_weights * factors)
        known = self.query_factors
        self.query_factors = factors if known is None else self._checked(known * factors)

    def encode_queries(self, texts: Sequence[str]) -> sp.csr_array:
        """Each distinct non-special query token weighted by the table; no model involved."""
        if self.query_weights is None:
            raise EncoderError(
                "This inference-free encoder has no query weights (idf.json); "
                "call fit(corpus) first."
            )
        tok = self.doc_model.tokenizer
        texts = self.query_texts(texts)
        ids = tok(list(texts), add_special_tokens=False, truncation=False, verbose=False)[
            "input_ids"
        ]
        special = set(self.doc_model.special_ids.tolist()) if self.doc_model.zero_special else ()
        indptr, indices = [0], []
        top = self.query_max_active_dims
        for seq in ids:
            row = sorted({i for i in seq if i not in special and self.query_weights[i] > 0})
            if top is not None and len(row) > top:  # the heaviest, as a Router's queries
                row = sorted(sorted(row, key=lambda i: -self.query_weights[i])[:top])
            indices.extend(row)
            indptr.append(len(indices))
        indices_arr = np.asarray(indices, dtype=np.int32)
        return sp.csr_array(
            (self.query_weights[indices_arr], indices_arr, np.asarray(indptr, dtype=np.int64)),
            shape=(len(ids), self.doc_model.vocab_size),
        )

    # ---- idf.json ------------------------------------------------------------------------

    def weights_as_dict(self) -> dict[str, float]:
        return {self.vocab[i]: float(w) for i, w in enumerate(self.query_weights) if w > 0}

    def load_idf(self, path: str | Path) -> None:
        """Read an ``idf.json`` table, or OpenSearch's ``query_token_weights.txt`` (one
        ``token<TAB>weight`` per line); tokens it does not list get weight 0. The table is
        used as it is: learned factors apply to a table the encoder fits, not to one read."""
        table = _read_table(path)
        self.query_weights = self._checked(_vocab_weights(self, table, path, default=0.0))

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, device: str | None = None, **options
    ) -> InferenceFreeEncoder:
        """Load a document model folder (or Hub id) with its ``idf.json``, if it has one
        (and ``fit_idf`` is not set: then the encoder is left to be fitted on a corpus)."""
        fit_idf = options.pop("fit_idf", False)
        folder = Path(name_or_path)
        cfg = read_config(folder, cls.name) if folder.is_dir() else {}
        if not cfg:  # sentence-transformers: a Router, or a SparseEncoder as document model
            cfg = router_settings(folder) or sparse_settings(name_or_path)
        model_opts = {
            "max_length": options.pop("max_length", None) or cfg.get("max_length", 256),
            "activation": options.pop("activation", None) or cfg.get("activation", "log1p_relu"),
            "max_chunks": options.pop("max_chunks", None) or cfg.get("max_chunks", 1),
            "dtype": options.pop("dtype", "auto"),
            **{k: cfg[k] for k in ("pooling", "zero_special") if k in cfg},
        }
        doc = MLMSparseModel.from_pretrained(
            cfg.get("document", name_or_path), device=device, **model_opts
        )
        check_dimension(cfg, doc.vocab_size, name_or_path)
        keys = ("max_active_dims", "threshold", "query_max_active_dims", *PROMPTS)
        settings = {k: cfg[k] for k in keys if k in cfg}
        settings.update(options)
        enc = cls(doc, **settings)
        factors = folder / FACTORS_FILE if folder.is_dir() else None
        if factors is not None and factors.is_file():
            table = _vocab_weights(enc, _read_table(factors), factors, default=1.0)
            enc.query_factors = enc._checked(table)
        if fit_idf:
            return enc
        if "query_weights" in cfg:  # a Router's SparseStaticEmbedding
            enc.query_weights = enc._checked(load_query_weights(cfg["query_weights"]))
            return enc
        for name in (IDF_FILE, QUERY_WEIGHTS_FILE):
            table = folder / name if folder.is_dir() else hub_file(name_or_path, name)
            if table is not None and Path(table).is_file():
                enc.load_idf(table)
                break
        return enc

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.doc_model.save_pretrained(folder)
        if self.query_weights is not None:
            save_json(folder / IDF_FILE, self.weights_as_dict())
        if self.query_factors is not None:
            moved = np.flatnonzero(self.query_factors != 1.0)
            save_json(
                folder / FACTORS_FILE,
                {self.vocab[i]: float(self.query_factors[i]) for i in moved},
            )
        write_config(folder, self.config)

    @property
    def config(self) -> dict:
        top = self.query_max_active_dims
        return self._config(**({"query_max_active_dims": top} if top is not None else {}))


def _vocab_weights(
    enc: InferenceFreeEncoder, table: object, path: str | Path, default: float
) -> np.ndarray:
    """A {token: weight} table over the encoder's vocabulary; tokens it does not list (or
    lists with a weight that is not a finite number) get ``default``, negatives 0."""
    if not isinstance(table, dict):
        raise EncoderError(f"{path} must map tokens to weights.")
    position = {t: i for i, t in enumerate(enc.vocab)}
    weights = np.full(enc.doc_model.vocab_size, default, dtype=np.float32)
    for token, w in table.items():
        i = position.get(token)
        if i is not None and isinstance(w, (int, float)) and math.isfinite(w):
            weights[i] = max(float(w), 0.0)
    return weights


def _read_table(path: str | Path) -> object:
    """A JSON table, or ``token<TAB>weight`` lines for a ``.txt`` file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        return _weights_text(text, path) if Path(path).suffix == ".txt" else json.loads(text)
    except (OSError, json.JSONDecodeError) as e:
        raise EncoderError(f"Cannot read {path}: {e}") from e


def _weights_text(text: str, path: str | Path) -> dict[str, float]:
    """``token<TAB>weight`` lines as a table; a malformed line is an error naming it."""
    table = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        token, sep, weight = line.rpartition("\t")
        try:
            if not sep:
                raise ValueError
            table[token] = float(weight)
        except ValueError:
            raise EncoderError(
                f"{path}, line {number}: expected a token, a tab and a weight, got {line[:60]!r}."
            ) from None
    return table
