"""Argument checks shared by every layer (imports nothing of ours but :mod:`lsr.errors`)."""

from __future__ import annotations

import numbers
from pathlib import Path

from lsr.errors import InputError


def positive_int(
    value: object, name: str, *, optional: bool = False, error: type[Exception] = InputError
) -> int | None:
    """``value`` as an int if it is a positive integer (numpy integers included, booleans
    not); None when ``optional`` and it is None; otherwise ``error`` (an
    :class:`InputError` unless a caller names a narrower kind) naming ``name``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        allowed = "a positive integer or None" if optional else "a positive integer"
        raise error(f"{name} must be {allowed}, got {value!r}.")
    return int(value)


def new_folder(path: str | Path) -> Path:
    """``path`` as a Path if nothing is there or an empty folder (where an export may write
    a folder of its own); otherwise an :class:`InputError`."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InputError(f"{path} exists and is not an empty folder: give a new folder.")
    return path
