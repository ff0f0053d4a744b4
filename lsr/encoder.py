"""The :class:`Encoder` protocol every sparse encoder follows, and its saved config.

An encoder turns texts into ``scipy.sparse.csr_array`` rows over its vocabulary and saves
itself to a folder whose ``encoder.json`` (:data:`CONFIG_NAME`) names its ``type``, the key
under which :mod:`lsr.encoders` finds its class. Encoder modules import this module, never
:mod:`lsr.encoders` (which imports them, lazily, by name).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import scipy.sparse as sp

from lsr.errors import EncoderError

CONFIG_NAME = "encoder.json"


@runtime_checkable
class Encoder(Protocol):
    """What the index, the evaluation, the service and the trainer need of an encoder.

    ``config`` holds the settings that determine its vectors (type, options, model settings;
    not corpus statistics learned by fitting): it is what the encoding cache fingerprints.
    An encoder may also say ``queries_need_model`` (True when its queries run through a
    model, False for a table lookup such as BM25's); the service batches the queries of
    concurrent requests for a model, and takes one that does not say to need one.
    """

    name: str

    @property
    def vocab(self) -> list[str]: ...

    @property
    def config(self) -> dict: ...

    def encode_queries(self, texts: Sequence[str]) -> sp.csr_array: ...

    def encode_documents(self, texts: Sequence[str]) -> sp.csr_array: ...

    def save_pretrained(self, folder: str | Path) -> None: ...

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **options) -> Encoder: ...


def read_config(folder: str | Path, expected_type: str | None = None) -> dict:
    """The ``encoder.json`` of ``folder`` ({} when it has none); with ``expected_type``, an
    :class:`EncoderError` unless the folder holds an encoder of that type."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise EncoderError(f"{path} is not a valid encoder config: {e}") from e
    if not isinstance(config, dict):
        raise EncoderError(f"{path} is not a valid encoder config: not a JSON object.")
    if expected_type is not None and config.get("type") != expected_type:
        raise EncoderError(
            f"{folder} holds a {config.get('type')!r} encoder, not {expected_type!r}."
        )
    return config


def write_config(folder: str | Path, config: dict) -> None:
    """Write ``config`` (which names the encoder's ``type``) as the folder's ``encoder.json``."""
    if "type" not in config:
        raise EncoderError("An encoder config must name the encoder's type.")
    path = Path(folder) / CONFIG_NAME
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
