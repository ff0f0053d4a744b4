"""A masked-language-model head turned into sparse term vectors (SPLADE pooling).

w_j = max_i mask_i * act(logit_ij) over the sequence positions i (or the sum over them, the
first SPLADE's pooling), with act = log(1 + ReLU(x)) ("log1p_relu", SPLADE) or
log(1 + log(1 + ReLU(x))) ("l0", the L0-style activation used by inference-free document
encoders). Output dimensions of special tokens are zero, except for models whose source keeps
them (sentence-transformers folders: ``zero_special=False``).
torch and transformers are imported here, never at ``import lsr``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from lsr.errors import EncoderError
from lsr.vocab_head import ScreenedDecoder, int8_products_available

logger = logging.getLogger(__name__)
ACTIVATIONS = ("log1p_relu", "l0", "relu")  # relu: uniCOIL's term weights
PROMPTS = ("query_prompt", "document_prompt")  # encoder settings: texts put before inputs
POOLINGS = ("max", "sum")  # over a text's tokens: SPLADE v2 and later / the first SPLADE


def activate(x, activation: str = "log1p_relu"):
    """The SPLADE activation on a tensor (monotone, so it commutes with max pooling)."""
    import torch

    if activation == "log1p_relu":
        return torch.log1p(torch.relu(x))
    if activation == "l0":
        return torch.log1p(torch.log1p(torch.relu(x)))
    if activation == "relu":
        return torch.relu(x)
    raise EncoderError(f"Unknown activation {activation!r}; use one of {', '.join(ACTIVATIONS)}.")


class HeadParts(NamedTuple):
    """A masked LM as ``decoder(transform(body(...).last_hidden_state))``: the vocabulary layer
    (``decoder``, a ``torch.nn.Linear``) apart, so it can run on real tokens only and be
    screened (:mod:`lsr.vocab_head`)."""

    body: object
    transform: Callable
    decoder: object

    def head(self, hidden):
        return self.decoder(self.transform(hidden))


def _head_parts(model) -> HeadParts | None:
    """The parts of the masked-LM families SPLADE models come in (BERT, DistilBERT, RoBERTa);
    None for others, which then run whole."""
    if hasattr(model, "bert") and hasattr(model, "cls"):
        predictions = model.cls.predictions
        return HeadParts(model.bert, predictions.transform, predictions.decoder)
    if hasattr(model, "roberta") and hasattr(model, "lm_head"):
        lm = model.lm_head
        from transformers.activations import gelu

        return HeadParts(model.roberta, lambda h: lm.layer_norm(gelu(lm.dense(h))), lm.decoder)
    parts = ("distilbert", "vocab_transform", "activation", "vocab_layer_norm", "vocab_projector")
    if all(hasattr(model, p) for p in parts):

        def transform(hidden):
            return model.vocab_layer_norm(model.activation(model.vocab_transform(hidden)))

        return HeadParts(model.distilbert, transform, model.vocab_projector)
    return None


def lengths_of(mask) -> list[int]:
    """The number of real tokens of each row of an attention mask."""
    return mask.sum(dim=1).tolist()


def pick_device(device: str | None = None) -> str:
    """``device`` after checking that torch knows it and this machine has it; without one,
    CUDA when available, else the CPU."""
    import torch

    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError as e:
        raise EncoderError(f"Unknown device {device!r}: use cpu, cuda, cuda:N or mps ({e}).") from e
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available(),
    }
    if not available.get(kind, True):
        raise EncoderError(f"Device {device!r} is not available on this machine; use cpu.")
    return device


class MLMSparseModel:
    """A ``*ForMaskedLM`` model + tokenizer producing one sparse vector per text."""

    settings: tuple[str, ...] = ()  # a family's own settings, kept in encoder.json

    def __init__(
        self,
        model,
        tokenizer,
        max_length: int = 256,
        activation: str = "log1p_relu",
        max_chunks: int = 1,
        device: str | None = None,
        dtype: str = "auto",
        pooling: str = "max",
        zero_special: bool = True,
    ) -> None:
        import torch

        if pooling not in POOLINGS:
            raise EncoderError(f"Unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}.")
        if activation not in ACTIVATIONS:
            raise EncoderError(
                f"Unknown activation {activation!r}; use one of {', '.join(ACTIVATIONS)}."
            )
        if max_length < 4 or max_chunks < 1:
            raise EncoderError(
                f"max_length must be >= 4 and max_chunks >= 1 (got {max_length}, {max_chunks})."
            )
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = min(
            max_length, getattr(model.config, "max_position_embeddings", max_length)
        )
        self.activation = activation
        self.pooling = pooling
        self.zero_special = zero_special
        self.max_chunks = max_chunks
        self.device = pick_device(device)
        self.model.to(self.device)
        self.dtype = dtype
        self.vocab_size = int(model.config.vocab_size)
        tokens = tokenizer.convert_ids_to_tokens(list(range(self.vocab_size)))
        self.vocab = [t if t is not None else f"[unused-{i}]" for i, t in enumerate(tokens)]
        special = [i for i in tokenizer.all_special_ids if 0 <= i < self.vocab_size]
        self.special_ids = torch.tensor(sorted(set(special)), dtype=torch.long)
        self._special = torch.zeros(self.vocab_size, dtype=torch.bool)
        self._special[self.special_ids] = True
        self._split = _head_parts(model)
        if self._split is not None and not self._split_agrees():
            self._split = None  # an architecture that only looks familiar: run it whole
        self._screen = None
        on_cpu = self.device.startswith("cpu")
        if self._split is not None and on_cpu and int8_products_available():
            self._screen = ScreenedDecoder(self._split.decoder)
            if not self._screen_agrees():
                self._screen = None

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs) -> MLMSparseModel:
        """Load a ``*ForMaskedLM`` checkpoint and its tokenizer (local folder or Hub id)."""
        from lsr.hf import load_pretrained

        if kwargs.get("activation", "log1p_relu") not in ACTIVATIONS:
            raise EncoderError(
                f"Unknown activation {kwargs['activation']!r}; use one of {', '.join(ACTIVATIONS)}."
            )
        kwargs["device"] = pick_device(kwargs.get("device"))  # before the weights load
        tokenizer, model = load_pretrained(
            name_or_path, "AutoModelForMaskedLM", "a masked-LM model"
        )
        if not getattr(tokenizer, "is_fast", False):
            raise EncoderError(f"{name_or_path} needs a fast tokenizer (tokenizer.json).")
        return cls(model, tokenizer, **kwargs)

    def save_pretrained(self, folder: str | Path) -> None:
        self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))

    # ---- batching ------------------------------------------------------------------------

    def _windows(self, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], list[int]]:
        """Token windows with special tokens (at most ``max_chunks`` per text) and their owners."""
        chunked = self.max_chunks > 1
        enc = self.tokenizer(
            list(texts), truncation=True, max_length=max_length, return_overflowing_tokens=chunked
        )
        if not chunked:
            return enc["input_ids"], list(range(len(texts)))
        windows, owners, seen = [], [], [0] * len(texts)
        for ids, owner in zip(enc["input_ids"], enc["overflow_to_sample_mapping"], strict=True):
            if seen[owner] < self.max_chunks:
                seen[owner] += 1
                windows.append(ids)
                owners.append(owner)
        return windows, owners

    def _tensors(self, windows: list[list[int]]):
        import torch

        width = max(len(w) for w in windows)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(windows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(windows), width), dtype=torch.long)
        for i, w in enumerate(windows):
            input_ids[i, : len(w)] = torch.tensor(w, dtype=torch.long)
            mask[i, : len(w)] = 1
        return input_ids.to(self.device), mask.to(self.device)

    def _autocast(self):
        import contextlib

        import torch

        use_bf16 = self.dtype == "bfloat16" or (
            self.dtype == "auto"
            and self.device.startswith("cuda")
            and torch.cuda.is_bf16_supported()
        )
        if use_bf16:
            return torch.autocast(device_type=self.device.split(":")[0], dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward(self, texts: Sequence[str], max_length: int | None = None):
        """Dense (len(texts), vocab) tensor of term weights, differentiable (for training)."""
        import torch

        windows, owners = self._windows(texts, max_length or self.max_length)
        input_ids, mask = self._tensors(windows)
        pooled = self._pooled(input_ids, mask, self._split)
        if len(windows) != len(texts):
            index = torch.tensor(owners, device=pooled.device).unsqueeze(1).expand_as(pooled)
            out = torch.zeros(
                (len(texts), pooled.shape[1]), device=pooled.device, dtype=pooled.dtype
            )
            reduce = "amax" if self.pooling == "max" else "sum"
            pooled = out.scatter_reduce(0, index, pooled, reduce=reduce, include_self=True)
        if self.zero_special and self.special_ids.numel():
            pooled = pooled.index_fill(1, self.special_ids.to(pooled.device), 0.0)
        return pooled

    def _pooled(self, input_ids, mask, split):
        """Each window's term weights: the activation of its largest logit per term (max
        pooling: the activation is monotone, so max then activate), or the sum over its real
        tokens of their activated logits (sum pooling)."""
        import torch

        with self._autocast():
            if self.pooling == "max":
                top = self._max_logits(input_ids, mask, split)
            else:
                valid = mask.bool()
                if split is None:
                    logits = self.model(input_ids=input_ids, attention_mask=mask).logits[valid]
                else:
                    hidden = split.body(input_ids=input_ids, attention_mask=mask)
                    logits = split.head(hidden.last_hidden_state[valid])
        if self.pooling == "max":
            return activate(top.float(), self.activation)
        weights = activate(logits.float(), self.activation)
        return torch.stack([part.sum(dim=0) for part in torch.split(weights, lengths_of(mask))])

    def _max_logits(self, input_ids, mask, split):
        """Each window's largest MLM logit per vocabulary term, over its real tokens.

        With the model split into its encoder and its vocabulary head (``split``), the head
        runs on the real tokens only: in a batch of short queries most positions can be
        padding, and the head, one row of the vocabulary per position, is most of the work
        (1.8x faster per query for splade-tiny on SciFact queries in batches of 8, with
        identical vectors). Otherwise the whole model runs and padding is masked out."""
        import torch

        valid = mask.bool()
        if split is None:
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits
            return logits.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(dim=1)
        hidden = split.body(input_ids=input_ids, attention_mask=mask).last_hidden_state
        logits = split.head(hidden[valid])
        return torch.stack([part.amax(dim=0) for part in torch.split(logits, lengths_of(mask))])

    def _split_agrees(self) -> bool:
        """Whether the split model gives the whole model's logits on a short sample."""
        import torch

        windows, _ = self._windows(["a check of the vocabulary head", "short"], 16)
        input_ids, mask = self._tensors(windows)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                whole = self._max_logits(input_ids, mask, None).float()
                split = self._max_logits(input_ids, mask, self._split).float()
        except (RuntimeError, TypeError, ValueError, AttributeError):
            return False  # the parts do not fit together as assumed
        finally:
            self.model.train(was_training)
        return whole.shape == split.shape and bool(
            torch.allclose(whole, split, rtol=1e-4, atol=1e-4)
        )

    @property
    def _screening(self) -> bool:
        """Whether ``encode`` screens the vocabulary layer: float32 on the CPU only (on a GPU
        the whole head is cheap; under bfloat16 the float products are not what runs)."""
        return (
            self._screen is not None and self.device.startswith("cpu") and self.dtype != "bfloat16"
        )

    def _screen_agrees(self) -> bool:
        """Whether the screened head gives the whole head's vectors on a short sample."""
        import torch

        sample = ["a check of the screened vocabulary head", "short", ""]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                dense = to_sparse(self.forward(sample, 16))
                screened = self._screened_rows(sample, 16, None, 0.0)
        except (RuntimeError, TypeError, ValueError) as e:
            logger.info("screened vocabulary head not used: %s", e)
            return False
        finally:
            self.model.train(was_training)
        return (
            np.array_equal(dense.indptr, screened.indptr)
            and np.array_equal(dense.indices, screened.indices)
            and np.allclose(dense.data, screened.data, rtol=1e-5, atol=1e-6)
        )

    def _screened_rows(
        self,
        texts: Sequence[str],
        max_length: int | None,
        max_active_dims: int | None,
        threshold: float,
    ) -> sp.csr_array:
        """What ``to_sparse(forward(texts))`` gives, with the vocabulary layer screened
        (:mod:`lsr.vocab_head`): only the terms that can have a positive logit are computed."""
        import torch

        windows, owners = self._windows(texts, max_length or self.max_length)
        input_ids, mask = self._tensors(windows)
        split = self._split
        hidden = split.body(input_ids=input_ids, attention_mask=mask).last_hidden_state
        x = split.transform(hidden[mask.bool()])
        lengths = [0] * len(texts)  # a text's windows are consecutive: its rows are too
        for owner, window in zip(owners, windows, strict=True):
            lengths[owner] += len(window)
        drop = self._special if self.zero_special else torch.zeros_like(self._special)
        indptr, indices, data = [0], [], []
        for terms, logits in self._screen.candidates(x, lengths):
            if self.pooling == "max":
                top = logits.amax(dim=0)
                positive = top > 0
                terms, weights = terms[positive], activate(top[positive], self.activation)
            else:
                weights = activate(logits, self.activation).sum(dim=0)
            keep = ~drop[terms] & (weights > threshold)
            terms, weights = terms[keep], weights[keep]
            if max_active_dims is not None and terms.numel() > max_active_dims:
                top = torch.topk(weights, max_active_dims).indices.sort().values
                terms, weights = terms[top], weights[top]
            indices.append(terms.numpy().astype(np.int32))
            data.append(weights.numpy().astype(np.float32))
            indptr.append(indptr[-1] + terms.numel())
        return sp.csr_array(
            (
                np.concatenate(data) if data else np.zeros(0, np.float32),
                np.concatenate(indices) if indices else np.zeros(0, np.int32),
                np.asarray(indptr, dtype=np.int64),
            ),
            shape=(len(texts), self.vocab_size),
        )

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        max_length: int | None = None,
        max_active_dims: int | None = None,
        threshold: float = 0.0,
        progress: bool = False,
    ) -> sp.csr_array:
        """Sparse vectors for ``texts`` (inference mode, longest first, original order kept)."""
        import torch
        from tqdm.auto import tqdm

        texts = [t if isinstance(t, str) else "" for t in texts]
        order = np.argsort([-len(t) for t in texts], kind="stable")
        rows: list[sp.csr_array] = []
        was_training = self.model.training
        if was_training:  # eval() walks every module: not on each call of a served model
            self.model.eval()
        try:
            with torch.inference_mode():
                for lo in tqdm(
                    range(0, len(texts), batch_size),
                    desc="encode",
                    unit="batch",
                    disable=not progress,
                ):
                    batch = [texts[i] for i in order[lo : lo + batch_size]]
                    if self._screening:
                        rows.append(
                            self._screened_rows(batch, max_length, max_active_dims, threshold)
                        )
                    else:
                        dense = self.forward(batch, max_length)
                        rows.append(to_sparse(dense, max_active_dims, threshold))
        finally:
            if was_training:
                self.model.train()
        if not rows:
            return sp.csr_array((0, self.vocab_size), dtype=np.float32)
        stacked = sp.vstack(rows, format="csr")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.shape[0])
        return sp.csr_array(stacked[inverse])


def _prompted(texts: Sequence[str], prompt: str) -> Sequence[str]:
    return [prompt + t if isinstance(t, str) else t for t in texts] if prompt else texts


def to_sparse(dense, max_active_dims: int | None = None, threshold: float = 0.0) -> sp.csr_array:
    """A dense (n, V) weight tensor as CSR: weights > ``threshold``, the top N per row."""
    import torch

    dense = dense.detach().float()
    if max_active_dims is not None and max_active_dims < dense.shape[1]:
        top = torch.topk(dense, max_active_dims, dim=1)
        dense = torch.zeros_like(dense).scatter_(1, top.indices, top.values)
    dense = dense.cpu().numpy()
    dense[dense <= threshold] = 0.0
    out = sp.csr_array(dense)
    out.sort_indices()
    return out


class DocumentModelEncoder:
    """What SPLADE and inference-free encoders share: documents go through ``doc_model``."""

    doc_model: MLMSparseModel
    batch_size: int
    max_active_dims: int | None
    threshold: float
    progress: bool
    name: str
    query_prompt: str = ""  # text put before each query (a sentence-transformers prompt)
    document_prompt: str = ""  # ... and before each document

    def _set_prompts(self, query_prompt: str, document_prompt: str) -> None:
        if not isinstance(query_prompt, str) or not isinstance(document_prompt, str):
            raise EncoderError("query_prompt and document_prompt must be text.")
        self.query_prompt, self.document_prompt = query_prompt, document_prompt

    def query_texts(self, texts: Sequence[str]) -> Sequence[str]:
        """``texts`` as the model reads them as queries: after the query prompt, if any."""
        return _prompted(texts, self.query_prompt)

    def document_texts(self, texts: Sequence[str]) -> Sequence[str]:
        """``texts`` as the model reads them as documents: after the document prompt."""
        return _prompted(texts, self.document_prompt)

    @property
    def vocab(self) -> list[str]:
        return self.doc_model.vocab

    def encode_documents(self, texts: Sequence[str]) -> sp.csr_array:
        return self.doc_model.encode(
            self.document_texts(texts),
            self.batch_size,
            None,
            self.max_active_dims,
            self.threshold,
            progress=self.progress,
        )

    def decode(self, vector: sp.csr_array, top_k: int | None = None) -> list[tuple[str, float]]:
        from lsr.sparse import decode

        return decode(vector, self.vocab, top_k)

    @property
    def document_config(self) -> dict:
        """The settings that determine the document vectors, whatever the query side does:
        encoders with equal ones over the same document model encode documents alike (a
        SPLADE model and its inference-free variant), so an evaluation encodes them once."""
        return {k: v for k, v in self._config().items() if k != "type"}

    def _config(self, **extra) -> dict:
        """The ``encoder.json`` content: type, document model settings, pruning, ``extra``."""
        return {
            "type": self.name,
            "max_length": self.doc_model.max_length,
            "max_chunks": self.doc_model.max_chunks,
            "activation": self.doc_model.activation,
            "pooling": self.doc_model.pooling,
            "zero_special": self.doc_model.zero_special,
            "max_active_dims": self.max_active_dims,
            "threshold": self.threshold,
            **{k: getattr(self.doc_model, k) for k in self.doc_model.settings},
            **{k: getattr(self, k) for k in PROMPTS if getattr(self, k)},
            **extra,
        }
