"""Export an encoder as a folder other tools load (``lsr export-model``):

- **sentence-transformers**: a ``SparseEncoder`` saved by sentence-transformers itself. A
  SPLADE model becomes the masked-LM module and ``SpladePooling`` (its pooling and activation,
  ``max_active_dims``); an inference-free encoder, or a SPLADE with its own query model,
  becomes a ``Router`` (queries: ``SparseStaticEmbedding`` over the weight table, or their
  model; documents: the document model), as sentence-transformers saves inference-free
  models. ``SparseEncoder(folder)`` then gives our vectors.
- **opensearch**: the layout of OpenSearch's neural sparse models: the masked-LM model and
  tokenizer at the root and, for an inference-free encoder, the query weights as ``idf.json``
  (token -> weight) and ``query_token_weights.txt`` (``token<TAB>weight`` per line).

Special tokens: lsr leaves [CLS], [SEP] and the other special tokens out of a vector where the
model says so (``zero_special``, the default of models lsr loads from a masked-LM checkpoint);
sentence-transformers keeps them. The export then sets those tokens' bias in the vocabulary
layer to ``SPECIAL_BIAS``, so their logits are negative for any text and the activation zeroes
them there too: the exported model gives the same vectors without any option.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lsr.checks import new_folder
from lsr.errors import EncoderError, InputError
from lsr.inference_free import IDF_FILE, QUERY_WEIGHTS_FILE
from lsr.mlm import MLMSparseModel
from lsr.tokenization import save_json

FORMATS = ("sentence-transformers", "opensearch")
SPECIAL_BIAS = -1e4  # far below any logit a text produces, and finite in float16
# lsr's activation -> SpladePooling's activation_function of the same function
ST_ACTIVATION = {"log1p_relu": "relu", "l0": "log1p_relu"}


@dataclass
class ModelExport:
    """What :func:`export_model` wrote: the folder, its format and architecture, and what
    the other tool does differently from lsr with it (``notes``)."""

    path: Path
    format: str
    architecture: str
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {**self.__dict__, "path": str(self.path)}


def _masked_lm_copy(model) -> object:
    """A copy of ``model`` (an ``MLMSparseModel``) whose masked-LM gives special tokens no
    weight when ``model`` zeroes them; a clear error when its vocabulary layer has no bias."""
    import torch

    copied = copy.deepcopy(model.model).to("cpu")
    if not model.zero_special or not len(model.special_ids):
        return copied
    layer = copied.get_output_embeddings()
    bias = getattr(layer, "bias", None)
    if bias is None:
        raise EncoderError(
            "This model leaves special tokens out of its vectors, and its vocabulary layer "
            "has no bias to carry that into the exported model."
        )
    with torch.no_grad():
        bias[model.special_ids] = SPECIAL_BIAS
    return copied


def _save_masked_lm(model, folder: Path) -> None:
    """The masked-LM model (special tokens baked in, see the module) and its tokenizer."""
    _masked_lm_copy(model).save_pretrained(str(folder))
    model.tokenizer.save_pretrained(str(folder))


def _check_exportable(encoder) -> None:
    from lsr.inference_free import InferenceFreeEncoder
    from lsr.splade import SpladeEncoder

    if not isinstance(encoder, (SpladeEncoder, InferenceFreeEncoder)):
        raise InputError(
            f"{type(encoder).__name__} has no model to export: export-model takes SPLADE and "
            "inference-free encoders (lsr export writes a collection's vectors for other "
            "engines)."
        )
    if type(encoder.doc_model) is not MLMSparseModel:
        raise InputError(
            f"A {encoder.name} encoder has no masked-LM head: sentence-transformers' "
            "SparseEncoder and OpenSearch's layout hold masked-LM (SPLADE) models only."
        )
    if encoder.threshold:
        raise InputError(
            f"This encoder drops weights at or below {encoder.threshold}; sentence-transformers "
            "and OpenSearch have no such setting, so the exported model would differ."
        )
    if isinstance(encoder, InferenceFreeEncoder) and encoder.query_weights is None:
        raise InputError("This inference-free encoder has no query weights yet: fit it first.")


def _notes(encoder, fmt: str) -> list[str]:
    from lsr.inference_free import InferenceFreeEncoder

    doc = encoder.doc_model
    notes = []
    if doc.max_chunks > 1:
        notes.append(
            f"documents longer than {doc.max_length} tokens are cut there; lsr max-pooled "
            f"up to {doc.max_chunks} windows"
        )
    inference_free = isinstance(encoder, InferenceFreeEncoder)
    symmetric = not inference_free and encoder.query_model is None
    if fmt == "sentence-transformers" and symmetric and encoder.query_max_length != doc.max_length:
        notes.append(
            f"queries are cut at {doc.max_length} tokens as sentence-transformers cuts "
            f"documents (lsr cut them at {encoder.query_max_length})"
        )
    pruned = inference_free and encoder.max_active_dims != encoder.query_max_active_dims
    if fmt == "sentence-transformers" and pruned and encoder.max_active_dims:
        notes.append(
            f"max_active_dims={encoder.max_active_dims} applies to queries too in "
            "sentence-transformers"
        )
    if fmt == "opensearch":
        if not doc.zero_special:
            notes.append("OpenSearch zeroes special tokens, which this model keeps")
        if doc.pooling != "max" or doc.activation != "log1p_relu":
            notes.append(
                f"OpenSearch pools with max and log(1 + ReLU); this model uses "
                f"{doc.pooling} and {doc.activation}"
            )
        if encoder.max_active_dims:
            notes.append("OpenSearch keeps every weight (max_active_dims is not carried)")
        if encoder.query_prompt or encoder.document_prompt:
            notes.append("OpenSearch has no prompts: put them before the texts yourself")
    return notes


def _st_modules():
    """sentence-transformers' classes for a masked-LM module, SpladePooling, the static query
    embedding and the Router, in its v6 or v5 location."""
    from lsr.hf import import_transformers

    import_transformers()  # first, with a source checkout's kernels/ folder out of the way
    try:
        import sentence_transformers  # noqa: F401
    except ImportError as e:
        raise InputError(
            "Exporting for sentence-transformers needs it installed: "
            "pip install 'sentence-transformers>=5'."
        ) from e
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding, SpladePooling

    try:
        from sentence_transformers.base.modules import Router, Transformer

        def masked_lm(path: str, max_length: int):
            return Transformer(path, transformer_task="fill-mask", max_seq_length=max_length)
    except ImportError:  # sentence-transformers 5
        from sentence_transformers.models import Router
        from sentence_transformers.sparse_encoder.models import MLMTransformer

        def masked_lm(path: str, max_length: int):
            return MLMTransformer(path, max_seq_length=max_length)

    return masked_lm, SpladePooling, SparseStaticEmbedding, Router


def _st_document_modules(model, folder: Path, classes) -> list:
    masked_lm, splade_pooling, _, _ = classes
    _save_masked_lm(model, folder)
    activation = ST_ACTIVATION.get(model.activation)
    if activation is None:
        raise InputError(f"sentence-transformers has no activation like {model.activation!r}.")
    return [
        masked_lm(str(folder), model.max_length),
        splade_pooling(pooling_strategy=model.pooling, activation_function=activation),
    ]


def _query_table(encoder) -> np.ndarray:
    """The query weight table with the special tokens at 0 where the encoder drops them."""
    weights = np.array(encoder.query_weights, dtype=np.float32)
    if encoder.doc_model.zero_special:
        weights[encoder.doc_model.special_ids.numpy()] = 0.0
    return weights


def _write_sentence_transformers(encoder, out: Path, scratch: Path) -> str:
    import torch
    from sentence_transformers import SparseEncoder

    from lsr.inference_free import InferenceFreeEncoder

    classes = _st_modules()
    _, _, static_embedding, router = classes
    documents = _st_document_modules(encoder.doc_model, scratch / "document", classes)
    if isinstance(encoder, InferenceFreeEncoder):
        query = [
            static_embedding(
                tokenizer=encoder.doc_model.tokenizer,
                weight=torch.from_numpy(_query_table(encoder)),
                frozen=True,
            )
        ]
        modules = [router.for_query_document(query_modules=query, document_modules=documents)]
        architecture = "Router (query: SparseStaticEmbedding; document: MLM + SpladePooling)"
    elif encoder.query_model is not None:
        query = _st_document_modules(encoder.query_model, scratch / "query", classes)
        modules = [router.for_query_document(query_modules=query, document_modules=documents)]
        architecture = "Router (query and document: MLM + SpladePooling)"
    else:
        modules = documents
        architecture = "MLM + SpladePooling"
    prompts = {"query": encoder.query_prompt, "document": encoder.document_prompt}
    model = SparseEncoder(
        modules=modules,
        max_active_dims=encoder.max_active_dims,
        prompts={k: v for k, v in prompts.items() if v} or None,
        device="cpu",
    )
    model.save(str(out))
    return architecture


def _write_opensearch(encoder, out: Path) -> str:
    from lsr.inference_free import InferenceFreeEncoder

    if getattr(encoder, "query_model", None) is not None:
        raise InputError(
            "OpenSearch's layout has one model; this SPLADE has a separate query model "
            "(export it for sentence-transformers, as a Router)."
        )
    _save_masked_lm(encoder.doc_model, out)
    if not isinstance(encoder, InferenceFreeEncoder):
        return "masked LM (bi-encoder mode)"
    weights = _query_table(encoder)
    vocab = encoder.vocab
    table = {vocab[i]: float(weights[i]) for i in np.flatnonzero(weights > 0)}
    bad = [t for t in table if "\t" in t or "\n" in t]
    if bad:
        raise InputError(f"The token {bad[0]!r} cannot be written to {QUERY_WEIGHTS_FILE}.")
    save_json(out / IDF_FILE, table)  # as InferenceFreeEncoder.save_pretrained writes it
    lines = "".join(f"{token}\t{weight!r}\n" for token, weight in table.items())
    (out / QUERY_WEIGHTS_FILE).write_text(lines, encoding="utf-8")
    return "masked LM for documents; query weights (doc-only mode)"


def export_model(encoder, out: str | Path, fmt: str) -> ModelExport:
    """Write ``encoder`` (a SPLADE or inference-free encoder) to the new folder ``out`` in
    ``fmt`` (``FORMATS``); the folder appears whole or not at all."""
    if fmt not in FORMATS:
        raise InputError(f"Unknown model format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    _check_exportable(encoder)
    out = new_folder(out)
    notes = _notes(encoder, fmt)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        if fmt == "sentence-transformers":
            with tempfile.TemporaryDirectory(prefix="lsr-export-") as scratch:
                architecture = _write_sentence_transformers(encoder, tmp, Path(scratch))
        else:
            architecture = _write_opensearch(encoder, tmp)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ModelExport(path=out, format=fmt, architecture=architecture, notes=notes)
