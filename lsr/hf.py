"""Importing Hugging Face ``transformers`` safely from a source checkout of lsr.

transformers (5.x) imports Hugging Face's ``kernels`` package whenever it is installed. A
source checkout of lsr has a top-level folder of that name (the sources of ``lsr.kernels``),
and when the checkout's root is on ``sys.path`` (``python -m pytest`` or ``python -c`` run
from there) ``import kernels`` finds that folder first, and transformers fails with
``cannot import name ... from 'kernels'``. :func:`import_transformers` loads Hugging Face's
package under its own name before transformers asks for it, so the two never meet. An
installed lsr (a wheel) has no such folder: then this does nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_CHECKOUT = Path(__file__).resolve().parents[1]  # the source tree's root, for a checkout
_SHADOWED = "kernels"  # folder names of the checkout that are also installed packages


def import_transformers() -> ModuleType:
    """The ``transformers`` module, imported with the checkout's folders out of the way;
    its own progress bars (loading weights) only on a terminal, never in logs."""
    first = "transformers" not in sys.modules
    if first:
        _import_without_checkout(_SHADOWED)
    module = importlib.import_module("transformers")
    if first and not sys.stderr.isatty():
        module.utils.logging.disable_progress_bar()
    return module


def _import_without_checkout(name: str) -> None:
    """Import the installed package ``name`` when the checkout's folder of that name would
    shadow it (nothing when it is not shadowed, already imported, or not installed)."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return
    if Path(spec.origin).resolve().parent != _CHECKOUT / name:
        return
    saved = sys.path[:]
    sys.path[:] = [p for p in saved if Path(p or ".").resolve() != _CHECKOUT]
    try:
        importlib.import_module(name)
    except ImportError:  # not installed: transformers then finds no usable ``kernels``
        sys.modules.pop(name, None)
    finally:
        sys.path[:] = saved


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # a saved model's weights, in order


def weights_file(folder: str | Path) -> Path | None:
    """The weights file of a saved model or module folder (the first of ``WEIGHT_FILES``
    it has), or None."""
    return next((Path(folder) / n for n in WEIGHT_FILES if (Path(folder) / n).is_file()), None)


def load_state(path: str | Path) -> dict:
    """A saved state dict on the CPU: safetensors, or a torch file read weights-only (no
    code runs); an :class:`EncoderError` naming the file when it cannot be read."""
    import pickle

    import torch
    from safetensors import SafetensorError

    from lsr.errors import EncoderError

    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError,
            SafetensorError) as e:  # fmt: skip
        raise EncoderError(f"Cannot read the weights in {path}: {e}") from e


def load_pretrained(name_or_path: str | Path, auto_class: str, what: str):
    """``(tokenizer, model)`` of a local folder or Hub id, the model loaded by transformers'
    ``auto_class`` (e.g. ``AutoModelForMaskedLM``); what transformers cannot load is an
    :class:`EncoderError` that says ``what`` was expected and why it failed."""
    from lsr.errors import EncoderError

    transformers = import_transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(name_or_path))
        model = getattr(transformers, auto_class).from_pretrained(str(name_or_path))
    except (OSError, ValueError) as e:
        raise EncoderError(
            f"Cannot load {what} from {str(name_or_path)!r}: {str(e).splitlines()[0]}"
        ) from e
    return tokenizer, model


def hub_file(repo_id: str | Path, filename: str) -> str | None:
    """Download ``filename`` of a Hub model if it has one (None offline or when absent)."""
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(str(repo_id), filename)
    except Exception:  # offline, no such repository or file: the caller goes without it
        return None
