"""Fusing the rankings of several retrievers (sparse, dense) into one: hybrid search.

Each retriever contributes its top ``depth`` hits for a query. Two families (Bruch et al.,
TOIS 2023, "An Analysis of Fusion Functions for Hybrid Retrieval"):

- **Score combination** (``method="convex"``, the default): each list's scores are normalized
  per query, then summed with the retrievers' weights: ``sum_r w_r * norm_r(d)``. For two
  retrievers ``alpha`` is the weight of the first and ``1 - alpha`` that of the second (a
  convex combination). ``normalization``: ``minmax`` ((s - min) / (max - min) over the list;
  a list whose scores all tie gives its hits 1), ``zscore`` ((s - mean) / std; all ties give
  0) or ``none`` (raw scores). A document missing from a list gets that list's *floor*: the
  lowest normalized score in it (0 for min-max), so being absent never beats being present.
  An empty list contributes nothing.
- **Reciprocal rank fusion** (``method="rrf"``): ``sum_r w_r / (k + rank_r(d))``, ranks from 1;
  a document missing from a list gets nothing from it.

Ties in the fused score keep the order in which documents first appear: the first
retriever's list in rank order, then the next one's new documents, and so on.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from lsr.errors import InputError
from lsr.index.results import SearchResults

METHODS = ("convex", "rrf")
NORMALIZATIONS = ("minmax", "zscore", "none")
FUSION_FILE = "fusion.json"  # a collection's tuned fusion (written by ``lsr tune-fusion``)


@dataclass(frozen=True)
class FusionSpec:
    """How to fuse: ``method``, its ``normalization``, one weight per retriever (``None``:
    equal weights), RRF's ``k`` and the ``depth`` each retriever contributes."""

    method: str = "convex"
    normalization: str = "minmax"
    weights: tuple[float, ...] | None = None
    k: int = 60
    depth: int = 100
    retrievers: tuple[str, ...] = ()  # the representations fused, in order (empty: all)
    tuned: dict = field(default_factory=dict, compare=False)  # how the weights were chosen

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown fusion {self.method!r}; use one of {', '.join(METHODS)}.")
        if self.normalization not in NORMALIZATIONS:
            raise InputError(
                f"unknown normalization {self.normalization!r}; use one of "
                f"{', '.join(NORMALIZATIONS)}."
            )
        if self.weights is not None:
            weights = tuple(self.weights)
            if not weights or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
                and w >= 0 for w in weights
            ):  # fmt: skip
                raise InputError(f"fusion weights must be finite numbers >= 0, got {weights!r}.")
            if sum(weights) == 0:
                raise InputError("fusion weights must not all be 0.")
            object.__setattr__(self, "weights", tuple(float(w) for w in weights))
        for name in ("k", "depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"fusion {name} must be an integer >= 1, got {value!r}.")
        object.__setattr__(self, "retrievers", tuple(self.retrievers))

    @classmethod
    def with_alpha(cls, alpha: float, **options) -> FusionSpec:
        """A convex combination of two retrievers: ``alpha`` weighs the first."""
        if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise InputError(f"alpha must be a number between 0 and 1, got {alpha!r}.")
        return cls(weights=(float(alpha), 1.0 - float(alpha)), **options)

    def weights_for(self, n: int) -> tuple[float, ...]:
        if self.weights is None:
            return (1.0,) * n
        if len(self.weights) != n:
            raise InputError(f"{len(self.weights)} fusion weights given for {n} retrievers.")
        return self.weights

    def describe(self) -> str:
        """``convex minmax weights 0.7/0.3 depth 100`` or ``rrf k=60 depth 100``."""
        if self.method == "rrf":
            return f"rrf k={self.k} depth {self.depth}"
        weights = "equal" if self.weights is None else "/".join(f"{w:g}" for w in self.weights)
        return f"convex {self.normalization} weights {weights} depth {self.depth}"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["weights"] = list(self.weights) if self.weights is not None else None
        out["retrievers"] = list(self.retrievers)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> FusionSpec:
        if not isinstance(data, dict):
            raise InputError("a fusion setting must be a JSON object.")
        unknown = sorted(set(data) - set(asdict(cls())))
        if unknown:
            raise InputError(f"unknown fusion setting {unknown[0]!r}.")
        data = dict(data)
        if data.get("weights") is not None:
            data["weights"] = tuple(data["weights"])
        return cls(**data)


def _normalized(scores: np.ndarray, normalization: str) -> tuple[np.ndarray, float]:
    """A list's normalized scores and its floor (what a missing document gets)."""
    if scores.size == 0:
        return scores, 0.0
    s = scores.astype(np.float64)
    if normalization == "minmax":
        lo, hi = s.min(), s.max()
        return (np.ones_like(s) if hi == lo else (s - lo) / (hi - lo)), 0.0
    if normalization == "zscore":
        std = s.std()
        z = np.zeros_like(s) if std == 0 else (s - s.mean()) / std
        return z, float(z.min())
    return s, float(s.min())


def fuse_lists(
    lists: Sequence[tuple[Sequence[str], Sequence[float]]],
    spec: FusionSpec,
    k: int | None = None,
    explain: bool = True,
) -> tuple[list[str], list[float], list[list[float | None]] | None]:
    """One query: fuse ``(ids, scores)`` lists (each best first) into the top ``k`` (None:
    all) ``(ids, scores, contributions)``, every list cut to ``spec.depth``;
    ``contributions[j][r]`` is list ``r``'s weighted part of hit ``j``'s score (None where
    ``r`` did not retrieve it; the whole is None without ``explain``)."""
    weights = spec.weights_for(len(lists))
    cut = [list(ids)[: spec.depth] for ids, _ in lists]
    keys = dict.fromkeys(itertools.chain.from_iterable(cut))  # first appearance order
    position = dict(zip(keys, range(len(keys)), strict=True))
    n = len(position)
    total = np.zeros(n, dtype=np.float64)
    parts = np.full((len(lists), n), np.nan) if explain else None
    for r, ((_, scores), ids, weight) in enumerate(zip(lists, cut, weights, strict=True)):
        if not ids:
            continue
        where = np.fromiter(map(position.__getitem__, ids), dtype=np.int64, count=len(ids))
        if spec.method == "rrf":
            values, floor = weight / (spec.k + np.arange(1, len(ids) + 1)), 0.0
        else:
            values, floor = _normalized(np.asarray(scores[: len(ids)]), spec.normalization)
            values, floor = weight * values, weight * floor
        total += floor
        total[where] += values - floor
        if parts is not None:
            parts[r, where] = values
    ranked = np.argsort(-total, kind="stable")[:k]
    docs = list(position)
    contributions = None
    if parts is not None:
        chosen = parts[:, ranked].T.tolist()
        contributions = [[None if v != v else v for v in row] for row in chosen]  # NaN: None
    return [docs[i] for i in ranked], total[ranked].tolist(), contributions


def fuse(results: Sequence[SearchResults], spec: FusionSpec, k: int) -> SearchResults:
    """Fuse several retrievers' results for the same queries into the top ``k``; the result
    carries ``contributions`` (per query, per hit, each retriever's part) and, when every
    input carries stored documents, the hits' documents."""
    if not results:
        raise InputError("fusion needs at least one retriever's results.")
    n = len(results[0])
    if any(len(r) != n for r in results):
        raise InputError("every retriever must answer the same queries.")
    ids_out, scores_out, contributions, documents = [], [], [], []
    with_docs = all(r.documents is not None for r in results)
    for i in range(n):
        hits = [r[i] for r in results]
        ids, scores, parts = fuse_lists([(h.ids, h.scores) for h in hits], spec, k)
        ids_out.append(ids)
        scores_out.append(scores)
        contributions.append(parts)
        if with_docs:
            found = {}
            for h in hits:
                for doc_id, doc in zip(h.ids, h.documents, strict=True):
                    found.setdefault(doc_id, doc)
            documents.append([found[d] for d in ids])
    width = max((len(x) for x in ids_out), default=0)
    docs = np.full((n, width), -1, dtype=np.int64)
    score_array = np.zeros((n, width), dtype=np.float32)
    flat: list[str] = []
    for i, (ids, scores) in enumerate(zip(ids_out, scores_out, strict=True)):
        docs[i, : len(ids)] = np.arange(len(flat), len(flat) + len(ids))
        score_array[i, : len(ids)] = scores
        flat += ids
    return SearchResults(
        docs=docs,
        scores=score_array,
        counts=np.asarray([len(x) for x in ids_out], dtype=np.int64),
        doc_ids=pa.array(flat, pa.large_string()),
        documents=documents if with_docs else None,
        contributions=contributions,
    )


def read_fusion(collection: str | Path) -> FusionSpec | None:
    """The fusion tuned for a collection (its ``fusion.json``), or None."""
    path = Path(collection) / FUSION_FILE
    if not path.is_file():
        return None
    try:
        return FusionSpec.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
        raise InputError(
            f"{path} is not a valid fusion setting ({e}); run lsr tune-fusion again."
        ) from None


def write_fusion(collection: str | Path, spec: FusionSpec) -> Path:
    """Record ``spec`` as the collection's fusion (atomically: the old file or the new)."""
    from lsr.index.storage import write_file_atomically

    path = Path(collection) / FUSION_FILE
    data = json.dumps(spec.to_dict(), indent=1, ensure_ascii=False).encode("utf-8")
    write_file_atomically(path, data)
    return path
