"""What a sentence-transformers model folder says about its model: its small JSON files, read
from a local folder or a Hub id (downloaded, or from the local cache offline), and the
settings of a SPLADE ``SparseEncoder`` (v5 ``MLMTransformer`` or v6 ``Transformer`` with
``transformer_task: fill-mask``, then ``SpladePooling``).

Every option such a folder carries either takes effect or is refused by name: pooling
strategy, activation, output dimension, ``max_active_dims``, maximum sequence length. A module
type this project does not run (a ``Router``, a static embedding, an unknown class) is an
:class:`EncoderError` naming it, never a model run without it.
"""

from __future__ import annotations

import json
from pathlib import Path

from lsr.errors import EncoderError
from lsr.hf import hub_file, load_state, weights_file

# sentence-transformers' activation names -> this project's (``lsr.mlm.ACTIVATIONS``): its
# "relu" is log(1 + ReLU(x)), its "log1p_relu" log(1 + log(1 + ReLU(x)))
_ACTIVATIONS = {"relu": "log1p_relu", "log1p_relu": "l0"}
_TRANSFORMERS = ("MLMTransformer", "Transformer")


def read_json(location: str | Path, name: str) -> dict | list | None:
    """The JSON file ``name`` of a model folder or Hub id (None when it has none)."""
    local = Path(str(location))
    path = local / name if local.is_dir() else hub_file(location, name)
    if path is None or not Path(path).is_file():
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EncoderError(f"{location}: {name} is not readable JSON ({e}).") from e


def is_sentence_transformers(location: str | Path) -> bool:
    """Whether a local folder is a sentence-transformers model (it has ``modules.json``)."""
    return (Path(str(location)) / "modules.json").is_file()


def is_router(location: str | Path) -> bool:
    """Whether a local folder or Hub id is a sentence-transformers ``Router``
    (inference-free) model (a Hub id's ``modules.json`` is fetched, or read from the cache)."""
    local = Path(str(location)).is_dir()
    if local and not is_sentence_transformers(location):
        return False
    modules = read_json(location, "modules.json")
    return (
        isinstance(modules, list)
        and len(modules) == 1
        and isinstance(modules[0], dict)
        and str(modules[0].get("type", "")).endswith(".Router")
    )


def sparse_settings(location: str | Path) -> dict:
    """The SPLADE settings of a sentence-transformers ``SparseEncoder`` folder ({} for a
    folder without ``modules.json``): ``pooling``, ``activation``, ``zero_special`` (False:
    sentence-transformers keeps the special tokens' dimensions), and where the folder sets
    them ``max_length`` and ``max_active_dims``."""
    modules = read_json(location, "modules.json")
    if modules is None:
        return {}
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise EncoderError(f"{location}: modules.json must be a list of modules.")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    for module, kind in zip(modules, kinds, strict=True):
        if kind not in (*_TRANSFORMERS, "SpladePooling"):
            raise EncoderError(
                f"{location}: module {module.get('type')!r} ({module.get('path') or 'root'}) "
                "is not supported; lsr loads SPLADE SparseEncoders (MLMTransformer or a "
                "fill-mask Transformer, then SpladePooling), and dense models as dense:PATH."
            )
    if len(modules) != 2 or kinds[0] not in _TRANSFORMERS or kinds[1] != "SpladePooling":
        raise EncoderError(
            f"{location}: modules {kinds} are not a SPLADE SparseEncoder "
            "(a masked-LM Transformer, then SpladePooling)."
        )
    if modules[0].get("path"):
        raise EncoderError(
            f"{location}: the Transformer module is in {modules[0]['path']!r}; lsr reads a "
            "SparseEncoder's model at the folder's root."
        )
    settings: dict = {"zero_special": False}
    settings.update(_transformer_settings(location, modules[0]))
    settings.update(_pooling_settings(location, modules[1]))
    settings.update(_model_settings(location))
    return settings


def _model_settings(location: str | Path) -> dict:
    """``max_active_dims`` and the prompts (:func:`prompt_settings`) of a SparseEncoder."""
    settings = prompt_settings(location)
    model_config = read_json(location, "config_sentence_transformers.json") or {}
    dims = model_config.get("max_active_dims")
    if dims is not None:
        settings["max_active_dims"] = _positive_int(location, "max_active_dims", dims)
    return settings


def prompt_settings(location: str | Path) -> dict:
    """``query_prompt`` and ``document_prompt`` from ``config_sentence_transformers.json``
    (those that are not empty), as sentence-transformers 6 applies them: ``encode_query``
    puts ``prompts["query"]`` before each text and ``encode_document`` ``prompts["document"]``
    (it gives every model both, empty unless saved, so neither falls back to ``passage``,
    ``corpus`` or the ``default_prompt_name``)."""
    model_config = read_json(location, "config_sentence_transformers.json") or {}
    prompts = model_config.get("prompts") or {}
    default = model_config.get("default_prompt_name")
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise EncoderError(f"{location}: prompts must map names to texts.")
    if default is not None and default not in prompts:
        raise EncoderError(f"{location}: default_prompt_name {default!r} names no prompt.")
    chosen = {
        "query_prompt": prompts.get("query", ""),
        "document_prompt": prompts.get("document", ""),
    }
    return {k: v for k, v in chosen.items() if v}


def router_settings(location: str | Path) -> dict:
    """The settings of an inference-free ``SparseEncoder`` saved by sentence-transformers
    ({} for a folder that is not one): a ``Router`` whose query route is one
    ``SparseStaticEmbedding`` (or the legacy ``IDF``) and whose document route is a SPLADE
    model. ``document``: the document model's folder; ``query_weights``: the file of the
    query side's weights; and the document model's settings, as :func:`sparse_settings`.
    A Hub id's files are fetched (or read from the local cache when offline)."""
    if not is_router(location):
        return {}
    local = _local_folder(location)
    config = read_json(local, "router_config.json") or {}
    types, routes = config.get("types") or {}, config.get("structure") or {}
    query, document = routes.get("query") or [], routes.get("document") or []
    kinds = {name: str(types.get(name, "")).rsplit(".", 1)[-1] for name in (*query, *document)}
    if len(query) != 1 or kinds[query[0]] not in ("SparseStaticEmbedding", "IDF"):
        raise EncoderError(
            f"{location}: the Router's query route {[types.get(n) for n in query]} is not one "
            "SparseStaticEmbedding (or IDF) module; lsr runs inference-free models."
        )
    if (
        len(document) != 2
        or kinds[document[0]] not in _TRANSFORMERS
        or kinds[document[1]] != "SpladePooling"
    ):
        raise EncoderError(
            f"{location}: the Router's document route {[types.get(n) for n in document]} is "
            "not a SPLADE model (a masked-LM Transformer, then SpladePooling)."
        )
    weights = weights_file(local / query[0])
    if weights is None:
        raise EncoderError(f"{location}: {query[0]} holds no weights (model.safetensors).")
    settings = {"zero_special": False, "document": str(local / document[0])}
    settings["query_weights"] = str(weights)
    settings.update(_transformer_settings(local, {"path": document[0]}))
    settings.update(_pooling_settings(local, {"path": document[1]}))
    settings.update(_model_settings(local))
    if "max_active_dims" in settings:  # sentence-transformers prunes both routes
        settings["query_max_active_dims"] = settings["max_active_dims"]
    return settings


def _local_folder(location: str | Path) -> Path:
    """A local folder, or a Hub model's files as a local snapshot (downloaded, or from the
    cache offline); a clear error when neither can be had."""
    local = Path(str(location))
    if local.is_dir():
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(location)))
    except Exception as e:  # offline without a cached copy, no such repository, ...
        raise EncoderError(
            f"{location}: cannot fetch this Router model's files from the Hugging Face Hub "
            f"({type(e).__name__}); download it to a folder and pass that."
        ) from e


def load_query_weights(path: str | Path):
    """The ``weight`` vector of a saved ``SparseStaticEmbedding`` / ``IDF`` module."""
    state = load_state(path)
    if "weight" not in state:
        raise EncoderError(f"Cannot read the query weights in {path}: it has no 'weight'.")
    return state["weight"].float().numpy()


def check_dimension(settings: dict, vocab_size: int, location: str | Path) -> None:
    """An :class:`EncoderError` when the folder's ``SpladePooling`` dimension is not the
    size of the model's vocabulary."""
    if settings.get("dimension", vocab_size) != vocab_size:
        raise EncoderError(
            f"{location}: SpladePooling says {settings['dimension']} dimensions, "
            f"the model's vocabulary has {vocab_size}."
        )


def _transformer_settings(location: str | Path, module: dict) -> dict:
    config = read_json(location, _module_file(module, "sentence_bert_config.json")) or {}
    task = config.get("transformer_task")
    if task not in (None, "fill-mask"):
        raise EncoderError(
            f"{location}: a Transformer with transformer_task {task!r} has no vocabulary head; "
            "SPLADE needs fill-mask."
        )
    if config.get("do_lower_case"):
        raise EncoderError(f"{location}: do_lower_case is not supported for sparse encoders yet.")
    length = config.get("max_seq_length")
    return {"max_length": _positive_int(location, "max_seq_length", length)} if length else {}


def _pooling_settings(location: str | Path, module: dict) -> dict:
    config = read_json(location, _module_file(module, "config.json")) or {}
    strategy = config.get("pooling_strategy", "max")
    if strategy not in ("max", "sum"):
        raise EncoderError(f"{location}: SpladePooling pooling_strategy {strategy!r} (max or sum).")
    activation = config.get("activation_function", "relu")
    if activation not in _ACTIVATIONS:
        raise EncoderError(
            f"{location}: SpladePooling activation_function {activation!r} (relu or log1p_relu)."
        )
    out = {"pooling": strategy, "activation": _ACTIVATIONS[activation]}
    dimension = config.get("embedding_dimension", config.get("word_embedding_dimension"))
    if dimension is not None:
        out["dimension"] = _positive_int(location, "SpladePooling embedding_dimension", dimension)
    return out


def _module_file(module: dict, name: str) -> str:
    """The path of a module's file ``name`` inside the model folder."""
    path = str(module.get("path") or "")
    return f"{path}/{name}" if path else name


def _positive_int(location: str | Path, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise EncoderError(f"{location}: {name} must be a positive integer: {value!r}.")
    return value
