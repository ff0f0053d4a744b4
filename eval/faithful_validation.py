"""How faithful a fitted synthetic corpus is: its statistics beside the real sample's.

:func:`validate` draws a faithful sample (:mod:`lsr.eval.faithful`) and an independent-term
one (:mod:`lsr.eval.synthetic`, the same mean lengths) the size of the real vectors and sets
side by side, for the three: non-zeros per document and query, the document-frequency curve,
weight quantiles, cosine similarity of random document pairs and of each document to its
nearest neighbour, how far a query's top scores stand out, and the recall-vs-speed curve of
Seismic and of our clustered index at fixed build parameters (``lsr bench`` on each).
``lsr bench synthetic --like DOCS.parquet --queries QUERIES.parquet --validate`` prints it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp

from lsr.eval.faithful import FaithfulModel, nearest_neighbour_similarity, score_ratio, unit_rows

SAMPLES = ("real", "faithful", "independent")
PAIRS = 20_000  # random document pairs for the pairwise cosine
CURVE_ENGINES = ("seismic", "clustered")


@dataclass
class Validation:
    """Statistics per sample (``stats[name][sample]``) and the recall/QPS rows of the
    approximate engines per sample (``curves[sample]``)."""

    n_docs: int
    n_queries: int
    stats: dict[str, dict[str, float]] = field(default_factory=dict)
    curves: dict[str, list[dict]] = field(default_factory=dict)
    model: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        lines = [
            f"{self.n_docs:,} documents and {self.n_queries:,} queries per sample "
            f"(focus share {self.model.get('focus_share')}, from document "
            f"{self.model.get('from_document')})",
            f"{'statistic':<34}" + "".join(f"{s:>13}" for s in SAMPLES),
        ]
        for name, values in self.stats.items():
            lines.append(f"{name:<34}" + "".join(f"{values[s]:>13.4g}" for s in SAMPLES))
        for sample, rows in self.curves.items():
            lines.append(f"\n{sample}: recall@10 / QPS one query at a time")
            lines += [
                f"  {r['name']:<44} {r['recall']:.3f} {r['qps_single']:>10,.0f}" for r in rows
            ]
        return "\n".join(lines)


def _percentiles(values: np.ndarray, label: str, levels=(10, 50, 90)) -> dict[str, float]:
    return {
        f"{label} p{q}": float(v)
        for q, v in zip(levels, np.percentile(values, levels), strict=True)
    }


def statistics(docs: sp.csr_array, queries: sp.csr_array, seed: int = 0) -> dict[str, float]:
    """The statistics :func:`validate` compares, for one sample."""
    out: dict[str, float] = {}
    out |= _percentiles(np.diff(docs.indptr), "non-zeros per document")
    out |= _percentiles(np.diff(queries.indptr), "non-zeros per query")
    df = np.sort(np.bincount(docs.indices, minlength=docs.shape[1]))[::-1]
    out["terms used"] = float((df > 0).sum())
    for rank in (r for r in (1, 10, 100, 1000, 10000) if r <= df.size):
        out[f"df of the term ranked {rank} / docs"] = float(df[rank - 1] / docs.shape[0])
    out |= _percentiles(docs.data, "document weight", (10, 50, 90, 99))
    out |= _percentiles(queries.data, "query weight", (10, 50, 90, 99))
    x = unit_rows(docs)
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, docs.shape[0], (2, PAIRS))
    keep = a != b
    pairs = np.asarray(x[a[keep]].multiply(x[b[keep]]).sum(axis=1)).ravel()
    out |= _percentiles(pairs, "cosine, random pair", (50, 90, 99))
    out |= _percentiles(nearest_neighbour_similarity(docs), "cosine to nearest neighbour")
    out |= _percentiles(score_ratio(queries, docs), "query score 10th/100th")
    out |= _percentiles(score_ratio(queries, docs, 1, 10), "query score 1st/10th")
    return out


def validate(
    docs: sp.csr_array,
    queries: sp.csr_array,
    model: FaithfulModel,
    curves: bool = True,
    bench: Callable | None = None,
) -> Validation:
    """Real, faithful and independent-term samples of the real size, compared (see the module
    docstring). ``bench(index, queries)`` runs the benchmark behind the curves (default
    :func:`lsr.eval.bench.bench_index` at one round)."""
    from lsr.eval.synthetic import synthetic_corpus, synthetic_queries

    n, n_queries = docs.shape[0], queries.shape[0]
    vocab = docs.shape[1]
    faithful_docs, faithful_queries = model.sample(n, n_queries)
    independent_docs = sp.vstack(
        [m for m, _ in synthetic_corpus(n, vocab, int(round(docs.nnz / n)))], format="csr"
    )
    independent_queries = synthetic_queries(n_queries, vocab, int(round(queries.nnz / n_queries)))
    samples = {
        "real": (docs, queries),
        "faithful": (faithful_docs, faithful_queries),
        "independent": (independent_docs, independent_queries),
    }
    result = Validation(
        n, n_queries, model={"focus_share": model.focus_share, "from_document": model.from_document}
    )
    per_sample = {name: statistics(d, q) for name, (d, q) in samples.items()}
    for stat in per_sample["real"]:
        result.stats[stat] = {name: per_sample[name][stat] for name in SAMPLES}
    if curves:
        for name, (d, q) in samples.items():
            result.curves[name] = _curve(d, q, bench)
    return result


def _curve(docs: sp.csr_array, queries: sp.csr_array, bench: Callable | None) -> list[dict]:
    """Recall and single-query QPS of Seismic's and our clustered index's settings."""
    from lsr.eval.bench import bench_index
    from lsr.index import IndexBuilder

    builder = IndexBuilder([f"t{i}" for i in range(docs.shape[1])])
    builder.add(docs, [f"d{i}" for i in range(docs.shape[0])])
    index = builder.finish()
    run = bench or (
        lambda i, q: bench_index(
            i, q, "validation", batch_seconds=0.0, algorithms=False, peer_names=["seismic"]
        )
    )
    report = run(index, queries)
    return [
        {"name": r.name, "recall": r.recall, "qps_single": r.qps_single}
        for r in report.rows
        if r.recall is not None and r.name.split()[0].lower() in CURVE_ENGINES
    ]
