"""Dense encoders for hybrid search: texts -> L2-normalized float32 vectors (n, dim).

Two kinds, resolved from the spec ``dense:LOCATION`` (:func:`lsr.encoders.load_encoder`):

- ``dense:wordllama``: the static embedding model the ``wordllama`` package ships inside its
  wheel (``l2_supercat``, 256 dimensions: token embeddings averaged and normalized). Loaded
  from the package folder with downloads disabled, so it works offline.
- ``dense:PATH`` or ``dense:OWNER/NAME``: a Hugging Face transformer (a plain model folder or
  a sentence-transformers folder), pooled over its last hidden states: ``mean`` (over the
  attention mask) or ``cls``; queries and documents may get prompts (``query_prompt``,
  ``document_prompt``) prepended, as E5 or BGE models expect. A sentence-transformers folder
  gives its own pooling (``1_Pooling/config.json``), prompts
  (``config_sentence_transformers.json``) and ``max_seq_length``; options given override them.

Vectors are always normalized, so inner product is cosine similarity (what the collection's
faiss indexes score). A saved encoder folder holds ``encoder.json`` (type ``dense``, its
``backend`` and settings) and, for a transformer, the model and tokenizer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lsr.encoder import read_config, write_config
from lsr.errors import EncoderError
from lsr.st_folder import prompt_settings, read_json

logger = logging.getLogger(__name__)
POOLINGS = ("mean", "cls")
WORDLLAMA = "wordllama"


def _normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


class DenseEncoder:
    """What every dense encoder offers (the dense counterpart of :class:`lsr.encoder.Encoder`):
    ``name``, ``dim``, ``config``, ``encode_queries`` / ``encode_documents`` (float32 rows, unit
    length), ``save_pretrained`` and ``from_pretrained``."""

    name = "dense"
    kind = "dense"  # what tells a dense encoder from a sparse one
    queries_need_model = True
    dim: int

    @property
    def config(self) -> dict:
        raise NotImplementedError

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def save_pretrained(self, folder: str | Path) -> None:
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, location: str | Path, **options) -> DenseEncoder:
        """``wordllama``, a saved dense encoder folder, or a transformer folder / Hub id."""
        text = str(location)
        config = read_config(location) if Path(text).is_dir() else {}
        if config and config.get("type") != "dense":
            raise EncoderError(
                f"{location} holds a {config.get('type')!r} encoder, not a dense one."
            )
        backend = config.get("backend")
        if text.lower() == WORDLLAMA or backend == WORDLLAMA:
            return WordLlamaEncoder(**{**_settings(config, WordLlamaEncoder.OPTIONS), **options})
        return TransformerDenseEncoder.load(location, config, **options)


def _settings(config: dict, names: Sequence[str]) -> dict:
    return {k: config[k] for k in names if k in config}


class WordLlamaEncoder(DenseEncoder):
    """The ``wordllama`` package's shipped static embedding model (offline, no torch)."""

    OPTIONS = ("dim", "batch_size", "max_length")

    def __init__(
        self,
        dim: int = 256,
        batch_size: int = 256,
        max_length: int | None = None,
        device: str | None = None,
    ) -> None:
        if device not in (None, "cpu"):
            raise EncoderError(
                f"dense:wordllama runs on the CPU (numpy); --device {device} cannot apply."
            )
        try:
            import wordllama
            from wordllama import WordLlama
        except ImportError as e:
            raise EncoderError(
                "dense:wordllama needs the wordllama package: pip install 'lsr-engine[dense]'."
            ) from e
        folder = Path(wordllama.__file__).parent
        try:  # both shipped files are found in the package folder; never download
            self.model = WordLlama.load(dim=dim, cache_dir=folder, disable_download=True)
        except Exception as e:  # its loader raises plain errors for a missing file or a bad dim
            raise EncoderError(f"Cannot load the wordllama model shipped in {folder}: {e}") from e
        self.dim = int(dim)
        self.batch_size = int(batch_size)
        self.version = getattr(wordllama, "__version__", "")
        if max_length is not None:
            if not isinstance(max_length, int) or max_length < 1:
                raise EncoderError(f"max_length must be an integer >= 1, got {max_length!r}.")
            self.model.tokenizer.enable_truncation(max_length)
        truncation = self.model.tokenizer.truncation
        self.max_length = truncation["max_length"] if truncation else None

    @property
    def name(self) -> str:
        return "dense:wordllama"

    @property
    def config(self) -> dict:
        return {"type": "dense", "backend": WORDLLAMA, "model": "l2_supercat", "dim": self.dim,
                "max_length": self.max_length, "wordllama": self.version}  # fmt: skip

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = self.model.embed(texts, norm=False, batch_size=self.batch_size)
        return _normalize(np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim))

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)

    def save_pretrained(self, folder: str | Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        write_config(folder, {**self.config, "batch_size": self.batch_size})


class TransformerDenseEncoder(DenseEncoder):
    """A Hugging Face transformer pooled into one vector per text (see the module docstring)."""

    def __init__(
        self,
        model,
        tokenizer,
        pooling: str = "mean",
        max_length: int = 512,
        query_prompt: str = "",
        document_prompt: str = "",
        batch_size: int = 32,
        device: str | None = None,
        source: str = "",
    ) -> None:
        from lsr.mlm import pick_device

        if pooling not in POOLINGS:
            raise EncoderError(f"Unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}.")
        if not isinstance(max_length, int) or max_length < 2:
            raise EncoderError(f"max_length must be an integer >= 2, got {max_length!r}.")
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.query_prompt = query_prompt or ""
        self.document_prompt = document_prompt or ""
        self.batch_size = int(batch_size)
        self.dim = int(model.config.hidden_size)
        self.source = source

    @property
    def name(self) -> str:
        return f"dense:{self.source}" if self.source else "dense"

    @property
    def config(self) -> dict:
        return {"type": "dense", "backend": "transformers", "pooling": self.pooling,
                "max_length": self.max_length, "query_prompt": self.query_prompt,
                "document_prompt": self.document_prompt, "dim": self.dim}  # fmt: skip

    @classmethod
    def load(cls, location: str | Path, config: dict | None = None, **options):
        """A transformer folder or Hub id, with the settings of ``config`` (a saved lsr
        encoder) or of its sentence-transformers files; ``options`` override both."""
        from lsr.hf import load_pretrained

        settings = {**_sentence_transformers_settings(location), **(config or {})}
        settings = _settings(settings, ("pooling", "max_length", "query_prompt", "document_prompt"))
        settings.update({k: v for k, v in options.items() if v is not None})
        tokenizer, model = load_pretrained(location, "AutoModel", "a transformer model")
        settings.setdefault("max_length", min(512, getattr(tokenizer, "model_max_length", 512)))
        return cls(model, tokenizer, source=str(location), **settings)

    def _embed(self, texts: Sequence[str], prompt: str) -> np.ndarray:
        import torch

        texts = [prompt + t for t in texts]
        out = np.zeros((len(texts), self.dim), np.float32)
        with torch.inference_mode():
            for lo in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[lo : lo + self.batch_size], padding=True, truncation=True,
                    max_length=self.max_length, return_tensors="pt",
                ).to(self.device)  # fmt: skip
                hidden = self.model(**batch).last_hidden_state.float()
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                out[lo : lo + len(pooled)] = pooled.cpu().numpy()
        return _normalize(out)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, self.query_prompt)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, self.document_prompt)

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))
        write_config(folder, {**self.config, "batch_size": self.batch_size})


def _sentence_transformers_settings(location: str | Path) -> dict:
    """Pooling, prompts and maximum length from a sentence-transformers model ({} if none):
    a local folder's files, or a Hub id's (downloaded, or from the local cache offline)."""
    out: dict = {}
    try:
        modules = read_json(location, "modules.json")
        if modules is None:
            return {}
        for module in modules:
            if str(module.get("type", "")).endswith("Pooling"):
                pooling = read_json(location, f"{module['path']}/config.json") or {}
                if pooling.get("pooling_mode_cls_token"):
                    out["pooling"] = "cls"
                elif pooling.get("pooling_mode_mean_tokens"):
                    out["pooling"] = "mean"
                else:
                    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
                    raise EncoderError(
                        f"{location}: pooling {', '.join(modes) or 'none'} is not supported "
                        "(mean or cls)."
                    )
        length = (read_json(location, "sentence_bert_config.json") or {}).get("max_seq_length")
        if length:
            out["max_length"] = int(length)
        out.update(prompt_settings(location))
    except (OSError, KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
        raise EncoderError(f"{location} has an unreadable sentence-transformers config: {e}") from e
    return out


def is_dense(encoder) -> bool:
    """Whether ``encoder`` makes dense vectors (rather than sparse term vectors)."""
    return getattr(encoder, "kind", None) == "dense"
