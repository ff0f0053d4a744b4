"""Hybrid search: a collection's representations (sparse and dense), each with its encoder,
searched one by one or fused (:mod:`lsr.index.fusion`).

A collection built with several encoders (``lsr index CORPUS --encoder bm25 --encoder
SPLADE --dense dense:wordllama``) keeps the main encoder in ``encoder/`` and each extra one in
``encoders/NAME/``; :func:`load_encoders` opens them all. :func:`search_mode` answers text
queries in one of three modes: ``sparse`` (the main representation, or the one named),
``dense`` (the first dense representation, or the one named) and ``hybrid`` (several
retrievers, each asked for ``fusion.depth`` hits, fused into the top ``k``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

from lsr.dense import is_dense
from lsr.encoders import load_encoder
from lsr.errors import InputError
from lsr.index import LiveIndex, SearchResults
from lsr.index.fusion import FusionSpec, fuse
from lsr.index.representations import DENSE, check_name

MODES = ("sparse", "dense", "hybrid")
_NAMED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63})=(.+)$")


def representation_name(spec: str | Path) -> str:
    """The name a representation gets from its encoder spec: ``bm25``, a folder's or Hub
    id's last part (``splade-tiny``), ``wordllama`` for ``dense:wordllama``."""
    text = str(spec).rstrip("/")
    if ":" in text and not Path(text).exists():
        text = text.split(":", 1)[1].rstrip("/")
    name = re.sub(r"[^A-Za-z0-9._-]", "-", Path(text).name or text).lstrip(".-_") or "sparse"
    return check_name(name[:64])


def named_specs(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``(name, spec)`` for each encoder spec, ``NAME=SPEC`` naming it explicitly; refuses
    two with the same name."""
    out = []
    for spec in specs:
        match = _NAMED.match(str(spec))
        if match and not Path(str(spec)).exists():
            out.append((check_name(match.group(1)), match.group(2)))
        else:
            out.append((representation_name(spec), str(spec)))
    names = [n for n, _ in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(
            f"two representations would be called {dupes[0]!r}; name them: NAME=SPEC "
            "(e.g. --encoder bm25 --encoder splade=PATH)."
        )
    return out


def load_encoders(path: str | Path, live: LiveIndex) -> dict[str, object]:
    """The encoders of a collection's extra representations (``encoders/NAME/``), by name."""
    from lsr.pipeline.indexing import EXTRA_ENCODERS_DIR

    out = {}
    for rep in live.extras:
        folder = Path(path) / EXTRA_ENCODERS_DIR / rep.name
        if not folder.is_dir():
            raise InputError(f"{path} has no saved encoder for representation {rep.name!r}.")
        out[rep.name] = load_encoder(folder)
    return out


def retrievers_for(
    live: LiveIndex,
    mode: str,
    retrievers: Sequence[str] | None,
    fusion: FusionSpec | None,
) -> list[str]:
    """The representations a search in ``mode`` asks (checked against the collection)."""
    if mode not in MODES:
        raise InputError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}.")
    kinds = live.representations
    names = list(retrievers or [])
    for name in names:
        if name not in kinds:
            raise InputError(
                f"{live.path.name} has no representation {name!r} (it has: {', '.join(kinds)})."
            )
    if mode == "hybrid":
        if len(names) == 1:
            raise InputError(
                f"hybrid search fuses two or more representations; only {names[0]!r} was "
                "named (name more, or none to fuse all of them)."
            )
        names = names or list((fusion.retrievers if fusion else ()) or kinds)
        if len(names) < 2:
            raise InputError(
                f"hybrid search fuses two or more representations; {live.path.name} has "
                f"{', '.join(kinds)}. Build it with more: --encoder ... --dense dense:wordllama."
            )
        return names
    if len(names) > 1:
        raise InputError(f"mode {mode!r} searches one representation; use mode 'hybrid' to fuse.")
    if names:
        if (kinds[names[0]] == DENSE) != (mode == "dense"):
            raise InputError(f"representation {names[0]!r} is {kinds[names[0]]}, not {mode}.")
        return names
    if mode == "dense":
        dense = [n for n, kind in kinds.items() if kind == DENSE]
        if not dense:
            raise InputError(
                f"{live.path.name} has no dense representation; build it with --dense "
                "dense:wordllama (or another dense encoder)."
            )
        return dense[:1]
    return [live.main_name]


def search_mode(
    live: LiveIndex,
    encoders: dict[str, object],
    texts: Sequence[str],
    k: int,
    mode: str = "sparse",
    retrievers: Sequence[str] | None = None,
    fusion: FusionSpec | None = None,
    **options,
) -> SearchResults:
    """Top ``k`` for ``texts`` in ``mode`` (see the module docstring). ``encoders``: name ->
    encoder of every representation asked. ``options`` (``filter``, ``fields`` and the
    search options) go to each representation's search; ``algorithm`` and the other sparse
    options only to sparse ones, ``ef_search``/``nprobe`` only to dense ones."""
    names = retrievers_for(live, mode, retrievers, fusion)
    common = {key: options.pop(key) for key in ("filter", "fields") if key in options}
    dense_options = {key: options.pop(key) for key in ("ef_search", "nprobe") if key in options}
    depth, spec = k, None
    if mode == "hybrid":  # a fusion that cannot apply is refused before any query is encoded
        spec = fusion or FusionSpec()
        if spec.retrievers and list(spec.retrievers) != names and spec.weights is not None:
            raise InputError(
                f"the fusion's weights are for {', '.join(spec.retrievers)}; asked to fuse "
                f"{', '.join(names)}. Give weights for these, or leave retrievers out."
            )
        spec.weights_for(len(names))
        if spec.depth < k:  # every retriever contributes at least k hits
            spec = dataclasses.replace(spec, depth=k)
        depth = spec.depth
    results = []
    for name in names:
        encoder = encoders[name]
        vectors = encoder.encode_queries(list(texts))
        extra = dense_options if is_dense(encoder) else options
        results.append(live.search(vectors, depth, representation=name, **common, **extra))
    return fuse(results, spec, k) if spec is not None else results[0]
