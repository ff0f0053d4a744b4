"""Fusing whole runs, and choosing a fusion's weights (or RRF's k) on a development split.

``lsr tune-fusion`` and ``lsr eval --hybrid ... --tune-on train`` search a small grid: for a
convex combination every weighting of the retrievers in steps of ``step`` (for two
retrievers alpha = 0, 0.1, ..., 1), for RRF the ``k`` values of :data:`RRF_KS` with equal
weights, and keep the best mean of ``measure`` over the development queries (ties: the
first in grid order). The development split's queries and judgements are the only ones
read: the caller refuses the split it reports on, so a tuned fusion never saw a test query.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from pathlib import Path

from lsr.errors import InputError
from lsr.eval.datasets import Dataset
from lsr.eval.metrics import parse_measures, per_query
from lsr.index.fusion import FusionSpec, fuse_lists

RRF_KS = (1, 5, 10, 20, 40, 60, 100)
Run = dict[str, dict[str, float]]


def fuse_runs(runs: Sequence[Run], spec: FusionSpec, k: int) -> tuple[Run, float]:
    """The fused run of several retrievers' runs (each query's hits in rank order, as
    :func:`lsr.pipeline.rank` makes them) and the seconds fusing took."""
    start = time.perf_counter()
    qids = list(dict.fromkeys(q for run in runs for q in run))
    out: Run = {}
    for qid in qids:
        lists = []
        for run in runs:
            hits = run.get(qid, {})
            lists.append((list(hits), list(hits.values())))
        ids, scores, _ = fuse_lists(lists, spec, k, explain=False)
        out[qid] = dict(zip(ids, scores, strict=True))
    return out, time.perf_counter() - start


def weight_grid(n: int, step: float) -> list[tuple[float, ...]]:
    """Every weighting of ``n`` retrievers in steps of ``step`` that sums to 1."""
    units = round(1 / step)
    if abs(units * step - 1) > 1e-9 or units < 1:
        raise InputError(f"the tuning step must divide 1 (0.1, 0.05, 0.25...), got {step!r}.")
    grid = []
    for parts in itertools.product(range(units + 1), repeat=n - 1):
        if sum(parts) <= units:
            grid.append(tuple(p / units for p in (*parts, units - sum(parts))))
    return grid


def tune_fusion(
    runs: Sequence[Run],
    qrels: dict[str, dict[str, int]],
    measure: str = "nDCG@10",
    method: str = "convex",
    normalization: str = "minmax",
    depth: int = 1000,
    retrievers: Sequence[str] = (),
    step: float = 0.1,
) -> tuple[FusionSpec, list[dict]]:
    """The fusion of ``runs`` (development queries) with the best mean ``measure`` against
    ``qrels``, and every grid point tried (``{"weights" or "k", "value"}``)."""
    if len(runs) < 2:
        raise InputError("tuning a fusion needs the runs of two or more retrievers.")
    if not qrels:
        raise InputError("tuning a fusion needs relevance judgements of the development queries.")
    [name] = [str(m) for m in parse_measures([measure])]
    if method == "rrf":
        candidates = [
            FusionSpec(method="rrf", k=k, depth=depth, retrievers=tuple(retrievers)) for k in RRF_KS
        ]
    else:
        candidates = [
            FusionSpec(
                weights=w, normalization=normalization, depth=depth, retrievers=tuple(retrievers)
            )  # fmt: skip
            for w in weight_grid(len(runs), step)
        ]
    restricted = _restrict(runs, qrels)
    tried, best, best_value = [], None, -1.0
    for spec in candidates:
        fused, _ = fuse_runs(restricted, spec, 1000)
        scores = per_query(fused, qrels, [measure])[name]
        value = sum(scores.values()) / len(scores) if scores else 0.0
        tried.append({"weights": spec.weights, "k": spec.k, "value": value})
        if value > best_value + 1e-12:
            best, best_value = spec, value
    tuned = {"measure": name, "value": best_value, "queries": len(qrels), "grid": len(tried)}
    return FusionSpec.from_dict({**best.to_dict(), "tuned": tuned}), tried


def _restrict(runs: Sequence[Run], qrels: dict) -> list[Run]:
    """The runs' judged queries only (the measure ignores the others)."""
    return [{q: hits for q, hits in run.items() if q in qrels} for run in runs]


def tune_collection(
    index: str | Path,
    dataset: Dataset,
    retrievers: Sequence[str] | None = None,
    measure: str = "nDCG@10",
    method: str = "convex",
    normalization: str = "minmax",
    depth: int = 100,
    step: float = 0.1,
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[FusionSpec, list[dict]]:
    """Choose the fusion of a collection's representations on ``dataset`` (a development
    split: its queries and judgements only), searching each representation for ``depth``
    hits per query with its own encoder; the best setting carries where it was tuned."""
    from lsr.pipeline import Searcher, search_topics
    from lsr.pipeline.hybrid import retrievers_for

    if dataset.split == "test":
        raise InputError(
            "refusing to tune on the test split: a fusion tuned on test queries overstates "
            "every result reported on them. Use a train or dev split."
        )
    with Searcher.open(index) as searcher:
        names = retrievers_for(searcher.live, "hybrid", retrievers, None)
        kinds = searcher.live.representations
        runs = []
        for name in names:
            mode = "dense" if kinds[name] == "dense" else "sparse"
            hits = search_topics(searcher, dataset.queries, k=depth, batch_size=batch_size,
                                 progress=progress, mode=mode, retrievers=[name])  # fmt: skip
            runs.append({qid: dict(found) for qid, found in hits})
    spec, tried = tune_fusion(runs, dataset.qrels, measure, method, normalization, depth,
                              names, step)  # fmt: skip
    where = {"dataset": dataset.name, "split": dataset.split}
    return FusionSpec.from_dict({**spec.to_dict(), "tuned": {**spec.tuned, **where}}), tried
