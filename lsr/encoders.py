"""Resolve an encoder spec to an encoder object.

Specs: ``bm25``; a folder saved by an lsr encoder (``encoder.json`` names its type); a
``*ForMaskedLM`` folder or Hugging Face id (SPLADE, or inference-free when it ships
``idf.json``); or an explicit ``splade:PATH`` / ``inference-free:PATH``.
"""

from __future__ import annotations

import json
from pathlib import Path

from lsr.errors import EncoderError

CONFIG_NAME = "encoder.json"
KINDS = ("bm25", "splade", "inference-free")


def encoder_kind(spec: str | Path) -> tuple[str, str]:
    """``(kind, location)`` for a spec, reading only small config files (no model load)."""
    text = str(spec)
    for kind in KINDS[1:]:
        if text.startswith(kind + ":"):
            return kind, text[len(kind) + 1 :]
    if text.lower() == "bm25":
        return "bm25", ""
    folder = Path(text)
    if (folder / CONFIG_NAME).is_file():
        try:
            kind = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8")).get("type")
        except (OSError, json.JSONDecodeError, AttributeError) as e:
            raise EncoderError(f"{folder / CONFIG_NAME} is not a valid encoder config: {e}") from e
        if kind not in KINDS:
            raise EncoderError(f"{folder} holds an encoder of unknown type {kind!r}.")
        return kind, text
    if folder.is_dir():
        if (folder / "idf.json").is_file():
            return "inference-free", text
        if (folder / "config.json").is_file():
            return "splade", text
        raise EncoderError(
            f"{folder} is neither a saved lsr encoder nor a Hugging Face model folder."
        )
    if folder.suffix or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise EncoderError(
            f"Unknown encoder {text!r}: use 'bm25', a saved encoder or model folder, "
            "or a Hugging Face model id (owner/name)."
        )
    return "splade", text


def load_encoder(spec: str | Path, **options):
    """Build the encoder a spec names; ``options`` go to its constructor / ``from_pretrained``."""
    kind, location = encoder_kind(spec)
    if kind == "bm25":
        from lsr.bm25 import BM25Encoder

        return BM25Encoder.from_pretrained(location) if location else BM25Encoder(**options)
    if kind == "splade":
        from lsr.splade import SpladeEncoder

        return SpladeEncoder.from_pretrained(location, **options)
    from lsr.inference_free import InferenceFreeEncoder

    return InferenceFreeEncoder.from_pretrained(location, **options)
