"""``lsr bench cluster``: what scatter-gather over Ray costs, measured in one run.

The synthetic SPLADE-like corpus (:mod:`lsr.eval.synthetic`) is written once as a vector file
and indexed as clusters of 1, 2, 4 ... shards (:func:`~lsr.pipeline.sharding.index_sharded`);
each cluster is served by Ray actors (:mod:`lsr.pipeline.cluster`) and timed in interleaved
rounds against the one-shard collection searched in this process, the same queries and k,
so the ratios say what the network hop, the serialization and the merge cost. Every
cluster's top-k is checked against the in-process one (same ids and scores). Then the
encoding throughput of ``lsr encode --ray`` with 1 and 2 actors on a real corpus.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from lsr.eval.bench import BenchReport, _Candidate, _check_timing, _time_interleaved
from lsr.index.cluster import ShardedCollection

logger = logging.getLogger(__name__)


def _write_synthetic(path: Path, n_docs: int, vocab: int, doc_terms: int) -> list[str]:
    from lsr.eval.synthetic import synthetic_corpus
    from lsr.vector_files import write_vectors

    terms = [f"t{i}" for i in range(vocab)]
    write_vectors(path, synthetic_corpus(n_docs, vocab, doc_terms), terms, encoder="synthetic")
    return terms


def bench_cluster(
    n_docs: int = 1_000_000,
    n_queries: int = 1000,
    shard_counts: Sequence[int] = (1, 2, 4),
    address: str | None = None,
    k: int = 10,
    repeat: int = 3,
    vocab: int = 30522,
    doc_terms: int = 120,
    query_terms: int = 40,
    encode_corpus=None,
    encoder=None,
    encode_docs: int = 2000,
    workdir: str | Path | None = None,
) -> BenchReport:
    """QPS and p99 of each cluster against the in-process collection (ratios), and, given
    ``encode_corpus`` and ``encoder`` (loaded: its spec is checked before the long part),
    encoding throughput with 1 and 2 actors."""
    from lsr.eval.synthetic import synthetic_queries
    from lsr.index import LiveIndex
    from lsr.pipeline.cluster import open_cluster
    from lsr.pipeline.sharding import index_sharded
    from lsr.pretokenized import PretokenizedEncoder

    _check_timing(repeat)
    counts = sorted(set(shard_counts))
    with tempfile.TemporaryDirectory(prefix="lsr-bench-cluster-", dir=workdir) as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        vocabulary = _write_synthetic(root / "docs.parquet", n_docs, vocab, doc_terms)
        build = {"generate_seconds": time.perf_counter() - t}
        terms = PretokenizedEncoder(vocabulary)  # the vectors' vocabulary, nothing to encode
        for n in counts:
            t = time.perf_counter()
            index_sharded([root / "docs.parquet"], terms, root / f"c{n}", n)
            build[f"build_{n}_shards_seconds"] = time.perf_counter() - t
        queries = synthetic_queries(n_queries, vocab, query_terms)
        local = LiveIndex(root / f"c{counts[0]}" / "shard-0000", read_only=True)
        if counts[0] != 1:  # the baseline is one collection of every document
            local.close()
            index_sharded([root / "docs.parquet"], terms, root / "c1", 1)
            local = LiveIndex(root / "c1" / "shard-0000", read_only=True)
        local.warm_up()
        clusters: dict[int, ShardedCollection] = {}
        try:
            for n in counts:
                clusters[n] = open_cluster(root / f"c{n}", address, timeout=600)
            exact = local.search(queries, k)
            candidates = [
                _Candidate("in-process, 1 collection", lambda i: local.search(queries[[i]], k),
                           lambda: local.search(queries, k), None),
            ]  # fmt: skip
            notes = {}
            for n, cluster in clusters.items():
                got = cluster.search(queries, k)
                same = all(got[i] == exact[i] for i in range(len(exact)))
                notes[n] = "same top-k" if same else "TOP-K DIFFERS"
                candidates.append(
                    _Candidate(
                        f"Ray, {n} shard{'s' * (n > 1)}",
                        lambda i, c=cluster: c.search(queries[[i]], k),
                        lambda c=cluster: c.search(queries, k),
                        1.0 if same else None,
                    )
                )
            _time_interleaved(candidates, n_queries, repeat)
        finally:
            for cluster in clusters.values():
                cluster.transport.shutdown()
            local.close()
        rows = [c.row(n_queries) for c in candidates]
        base = rows[0]
        for row, n in zip(rows[1:], counts, strict=True):
            row.ratio_single = row.qps_single / base.qps_single if base.qps_single else None
            row.ratio_batch = row.qps_batch / base.qps_batch if base.qps_batch else None
            row.notes = notes[n]
        report = BenchReport(
            corpus="synthetic splade-like, sharded",
            n_docs=n_docs,
            n_queries=n_queries,
            k=k,
            index_bytes_per_posting=0.0,
            rows=rows,
            extra={**build, "shard_counts": counts, "ratios_against": base.name},
        )
    if encode_corpus is not None and encoder is not None:
        report.extra["encoding"] = bench_encoding(encode_corpus, encoder, address, encode_docs,
                                                  workdir)  # fmt: skip
    return report


def bench_encoding(corpus, encoder, address: str | None, n_docs: int, workdir=None) -> dict:
    """Documents per second of ``lsr encode --ray`` with 1 and 2 actors (the same documents,
    one run each, the model loaded by each actor before its first part)."""
    from lsr.corpus import read_corpus
    from lsr.pipeline.ray_encoding import encode_on_ray

    label = getattr(encoder, "name", type(encoder).__name__)
    docs = []
    for doc in read_corpus(corpus):
        docs.append(doc)
        if len(docs) == n_docs:
            break
    out = {}
    with tempfile.TemporaryDirectory(prefix="lsr-bench-encode-", dir=workdir) as tmp:
        for actors in (1, 2):
            summary = encode_on_ray(
                docs, encoder, Path(tmp) / f"a{actors}", address,
                concurrency=actors, chunk=max(64, n_docs // 8), label=label,
            )  # fmt: skip
            out[f"{actors}_actors_docs_per_second"] = summary["encode_docs_per_second"]
            out[f"{actors}_actors_seconds"] = summary["encode_seconds"]
    one = max(out["1_actors_docs_per_second"], 1e-9)
    out["ratio_2_to_1"] = out["2_actors_docs_per_second"] / one
    out["documents"] = len(docs)
    out["encoder"] = label
    return out
