"""SPLADE: queries and documents both encoded by a masked-LM head (siamese or two models)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import scipy.sparse as sp

from lsr.encoder import read_config, write_config
from lsr.errors import EncoderError
from lsr.mlm import PROMPTS, DocumentModelEncoder, MLMSparseModel
from lsr.st_folder import check_dimension, sparse_settings

QUERY_MODEL_DIR = "query_model"


class SpladeEncoder(DocumentModelEncoder):
    """SPLADE encoder: ``encode_queries`` / ``encode_documents`` return ``csr_array`` rows.

    ``max_active_dims`` keeps only the N largest weights per vector and ``threshold`` drops
    weights at or below it, both after pooling; ``query_model`` makes the encoder asymmetric.
    """

    name = "splade"
    queries_need_model = True  # queries run through the model (see lsr.encoder.Encoder)
    model_class = MLMSparseModel  # the model family; subclasses name theirs

    def __init__(
        self,
        doc_model: MLMSparseModel,
        query_model: MLMSparseModel | None = None,
        query_max_length: int = 64,
        batch_size: int = 32,
        max_active_dims: int | None = None,
        threshold: float = 0.0,
        query_prompt: str = "",
        document_prompt: str = "",
    ) -> None:
        if query_model is not None and query_model.vocab_size != doc_model.vocab_size:
            raise EncoderError("The query and document models must share one vocabulary.")
        self.doc_model = doc_model
        self.query_model = query_model
        self.query_max_length = query_max_length
        self.batch_size = batch_size
        self.max_active_dims = max_active_dims
        self.threshold = threshold
        self.progress = False
        self._set_prompts(query_prompt, document_prompt)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        query_model: str | Path | None = None,
        max_length: int | None = None,
        device: str | None = None,
        **options,
    ) -> SpladeEncoder:
        """Load a saved encoder folder, a plain ``*ForMaskedLM`` folder, or a Hub id."""
        folder = Path(name_or_path)
        cfg = read_config(folder, cls.name) if folder.is_dir() else {}
        st_folder = False
        if not cfg:  # a sentence-transformers SparseEncoder says how it pools and prunes
            cfg = sparse_settings(name_or_path)
            st_folder = bool(cfg)
        if cfg and query_model is None and (folder / QUERY_MODEL_DIR).is_dir():
            query_model = folder / QUERY_MODEL_DIR
        max_length = max_length or cfg.get("max_length", 256)
        common = {
            "device": device,
            "dtype": options.pop("dtype", "auto"),
            **{k: cfg[k] for k in ("activation", "pooling", "zero_special") if k in cfg},
        }
        for key in cls.model_class.settings:  # the family's own: given, else as saved
            if options.get(key) is not None:
                common[key] = options.pop(key)
            elif key in cfg:
                common[key] = cfg[key]
            options.pop(key, None)
        doc = cls.model_class.from_pretrained(
            name_or_path,
            max_length=max_length,
            max_chunks=options.pop("max_chunks", cfg.get("max_chunks", 1)),
            **common,
        )
        check_dimension(cfg, doc.vocab_size, name_or_path)
        query = (
            cls.model_class.from_pretrained(query_model, max_length=max_length, **common)
            if query_model is not None
            else None
        )
        keys = ("query_max_length", "max_active_dims", "threshold", *PROMPTS)
        settings = {k: cfg[k] for k in keys if k in cfg}
        if st_folder:  # sentence-transformers cuts queries where it cuts documents
            settings["query_max_length"] = doc.max_length
        settings.update({k: v for k, v in options.items() if v is not None or k not in settings})
        return cls(doc, query, **settings)

    def encode_queries(self, texts: Sequence[str]) -> sp.csr_array:
        model = self.query_model or self.doc_model
        return model.encode(
            self.query_texts(texts),
            self.batch_size,
            self.query_max_length,
            self.max_active_dims,
            self.threshold,
        )

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.doc_model.save_pretrained(folder)
        if self.query_model is not None:
            self.query_model.save_pretrained(folder / QUERY_MODEL_DIR)
        write_config(folder, self.config)

    @property
    def config(self) -> dict:
        return self._config(query_max_length=self.query_max_length)
