"""The encoder registry, and resolving an encoder spec to an encoder object.

Specs: ``bm25``; a folder saved by an lsr encoder (``encoder.json`` names its type); a
``*ForMaskedLM`` folder or Hugging Face id (SPLADE, or inference-free when it ships
``idf.json``); a uniCOIL checkpoint or a ``*ForCausalLM`` folder (causal SPLADE); or an
explicit ``TYPE:PATH`` (``splade:PATH``, ``inference-free:PATH``, ``unicoil:PATH``,
``causal-splade:PATH``).

Adding an encoder type is one module with a class that follows :class:`lsr.encoder.Encoder`
plus one line in :data:`ENCODERS` (or a call to :func:`register_encoder`); classes are
imported only when used, so resolving a spec loads no model library.
"""

from __future__ import annotations

import json
from importlib import import_module
from pathlib import Path

from lsr.encoder import read_config
from lsr.errors import EncoderError
from lsr.st_folder import is_router, is_sentence_transformers

# type name -> "module:Class"; the first is built without a location (a fresh BM25)
ENCODERS: dict[str, str] = {
    "bm25": "lsr.bm25:BM25Encoder",
    "splade": "lsr.splade:SpladeEncoder",
    "unicoil": "lsr.term_weighting:UniCOILEncoder",
    "causal-splade": "lsr.causal_splade:CausalSpladeEncoder",
    "inference-free": "lsr.inference_free:InferenceFreeEncoder",
    "pretokenized": "lsr.pretokenized:PretokenizedEncoder",
    "dense": "lsr.dense:DenseEncoder",
}
FRESH = ("bm25",)  # types a bare name builds, unfitted, with the options given


def register_encoder(name: str, target: str) -> None:
    """Make ``name`` an encoder type: ``target`` is ``"module:Class"`` of an Encoder."""
    if ":" not in target:
        raise EncoderError(f"An encoder target is 'module:Class', got {target!r}.")
    ENCODERS[name] = target


def encoder_class(name: str) -> type:
    """The class registered for encoder type ``name``."""
    target = ENCODERS.get(name)
    if target is None:
        raise EncoderError(f"Unknown encoder type {name!r}; known: {', '.join(ENCODERS)}.")
    module, _, cls = target.partition(":")
    return getattr(import_module(module), cls)


def encoder_kind(spec: str | Path) -> tuple[str, str]:
    """``(type, location)`` for a spec, reading only small config files (no model load)."""
    text = str(spec)
    for kind in ENCODERS:
        if text.startswith(kind + ":"):
            location = text[len(kind) + 1 :]
            if not location:
                raise EncoderError(f"{text!r} names no model: give {kind}:PATH.")
            return kind, location
    if text.lower() in FRESH:
        return text.lower(), ""
    folder = Path(text)
    config = read_config(folder) if folder.is_dir() else {}
    if config:
        kind = config.get("type")
        if kind not in ENCODERS:
            raise EncoderError(f"{folder} holds an encoder of unknown type {kind!r}.")
        return kind, text
    if folder.is_dir():
        tables = ("idf.json", "query_token_weights.txt")
        if any((folder / name).is_file() for name in tables) or is_router(folder):
            return "inference-free", text
        architectures = _architectures(folder)
        if any("unicoil" in name.lower() for name in architectures):
            return "unicoil", text  # castorini's uniCOIL checkpoints
        if any(name.endswith("ForCausalLM") for name in architectures):
            return "causal-splade", text
        if (folder / "config.json").is_file() or is_sentence_transformers(folder):
            return "splade", text  # a sentence-transformers folder: lsr.st_folder checks it
        raise EncoderError(
            f"{folder} is neither a saved lsr encoder nor a Hugging Face model folder."
        )
    if folder.suffix or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise EncoderError(
            f"Unknown encoder {text!r}: use 'bm25', a saved encoder or model folder, "
            "or a Hugging Face model id (owner/name)."
        )
    return ("inference-free" if is_router(text) else "splade"), text


def _architectures(folder: Path) -> list[str]:
    """The model classes a Hugging Face folder's ``config.json`` names (none if unreadable)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    names = config.get("architectures") if isinstance(config, dict) else None
    return [n for n in names or [] if isinstance(n, str)]


# Options a fresh BM25 encoder takes, and those only a model encoder has a use for: a
# front end routes each option to the encoders it applies to and refuses one that applies to
# none of them (an option must take effect or be refused, never be ignored).
BM25_OPTIONS = ("k1", "b", "tokenizer", "doc_length")
MODEL_OPTIONS = ("max_length", "max_chunks", "max_active_dims", "device")
DENSE_OPTIONS = ("max_length", "device")  # the model options a dense encoder has a use for
# an inference-free encoder's own: fit its query table (IDF) on the corpus being encoded,
# in place of the table the model ships (a model trained on one corpus, used on another)
INFERENCE_FREE_OPTIONS = ("fit_idf",)
ENCODER_OPTIONS = (*BM25_OPTIONS, *MODEL_OPTIONS, *INFERENCE_FREE_OPTIONS)


def options_for(spec: str | Path, options: dict) -> dict:
    """The ``options`` that apply to the encoder ``spec`` names: BM25's to a fresh ``bm25``,
    model options to every other encoder (a dense one takes ``max_length`` and ``device``)."""
    kind, location = encoder_kind(spec)
    takes = BM25_OPTIONS if kind in FRESH and not location else MODEL_OPTIONS
    if kind == "dense":
        takes = DENSE_OPTIONS
    if kind == "inference-free":
        takes = (*MODEL_OPTIONS, *INFERENCE_FREE_OPTIONS)
    return {name: value for name, value in options.items() if name in takes}


def option_flags(names) -> str:
    """Option names as the command line spells them: ``--max-length, --k1``."""
    return ", ".join("--" + name.replace("_", "-") for name in names)


def check_options(specs: list[str | Path] | tuple, options: dict) -> None:
    """An :class:`EncoderError` naming each option that none of ``specs`` takes."""
    unused = [name for name in options if not any(name in options_for(s, options) for s in specs)]
    unknown = [name for name in unused if name not in ENCODER_OPTIONS]
    if unknown:
        raise EncoderError(f"Unknown encoder options: {', '.join(unknown)}.")
    if unused:
        flags = option_flags(unused)
        what = "options of model encoders"
        if unused[0] in BM25_OPTIONS:
            what = "BM25 options"
        elif unused[0] in INFERENCE_FREE_OPTIONS:
            what = "an option of inference-free encoders"
        raise EncoderError(
            f"{flags}: {what}, which no encoder given ({', '.join(map(str, specs))}) takes."
        )


def load_encoder(spec: str | Path, **options):
    """Build the encoder a spec names; ``options`` go to its constructor / ``from_pretrained``."""
    kind, location = encoder_kind(spec)
    cls = encoder_class(kind)
    return cls.from_pretrained(location, **options) if location else cls(**options)
