"""``lsr bench scale``: a collection of MS MARCO's size built in bounded memory and searched
memory-mapped.

The documents come from a faithful generator (:mod:`lsr.eval.faithful`, fitted to real
encoded vectors) a chunk at a time and go straight into a
:class:`~lsr.index.CompressedIndexWriter`, so neither the corpus nor its postings are ever
held whole. Reported: build time and the build's peak resident memory, bytes per posting,
then, on the index opened memory-mapped, single-query latency (p50, p99) and QPS and batched
QPS on 1 and 2 threads, the process's resident memory split into anonymous and file-backed
pages, and how the time per query compares with this machine's measured memory bandwidth.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lsr.errors import InputError
from lsr.eval.faithful import FaithfulModel
from lsr.index import CompressedIndex, CompressedIndexWriter

logger = logging.getLogger(__name__)

CHUNK_DOCS = 100_000  # documents drawn per generator call
BANDWIDTH_BYTES = 1 << 30  # bytes summed to measure the memory's read bandwidth
QUERY_TERMS = (20, 40)  # approximate rows: each query cut to its heaviest terms
BATCH = 10  # queries per batch when batch latencies are timed


@dataclass
class ScaleReport:
    """Build and search figures of one compressed collection (``table()``, ``to_dict()``)."""

    n_docs: int
    n_postings: int
    build: dict
    bytes_per_posting: float
    index_bytes: int
    search: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        b, s = self.build, self.search
        lines = [
            f"collection: {self.n_docs:,} documents, {self.n_postings:,} postings, "
            f"{self.bytes_per_posting:.2f} bytes per posting, {self.index_bytes / 2**30:.2f} GiB "
            "on disk",
            f"build: {b['seconds']:,.0f} s (drawing documents {b['generate_seconds']:,.0f} s, "
            f"spilling runs {b['spill_seconds']:,.0f} s, merge and compress "
            f"{b['merge_seconds']:,.0f} s), peak RSS {b['peak_rss_bytes'] / 2**30:.2f} GiB",
            "",
            "| search (top-10, memory mapped) | QPS | p50 ms | p99 ms | recall@10 |",
            "|---|---|---|---|---|",
        ]
        for name, row in s.get("modes", {}).items():
            p50 = f"{row['p50_ms']:.1f}" if "p50_ms" in row else ""
            p99 = f"{row['p99_ms']:.1f}" if "p99_ms" in row else ""
            recall = f"{row['recall']:.3f}" if "recall" in row else "1 (exact)"
            lines.append(f"| {name} | {row['qps']:,.1f} | {p50} | {p99} | {recall} |")
        if s:
            per_query = s["postings_per_query"]
            lines += [
                "",
                f"open {s['open_seconds']:.2f} s; first query (Numba compile) "
                f"{s['compile_seconds']:.1f} s; postings read per query {per_query:,.0f} "
                f"({s['bytes_per_query'] / 2**20:.1f} MiB compressed)",
                f"RSS after searching: {s['rss_anon_bytes'] / 2**30:.2f} GiB anonymous + "
                f"{s['rss_file_bytes'] / 2**30:.2f} GiB file-backed (the mapped index)",
                f"memory bandwidth: {s['bandwidth_gbs']:.1f} GB/s measured (one thread summing "
                f"{BANDWIDTH_BYTES >> 20} MiB); one query (2 threads) streams its compressed "
                f"postings at {s['postings_gbs']:.2f} GB/s and updates {per_query * 4 / 2**20:.0f}"
                " MiB of accumulator, a range of documents at a time",
            ]
        return "\n".join(lines)


def _rss() -> tuple[int, int]:
    """The process's resident anonymous and file-backed bytes (Linux ``/proc``; 0s elsewhere)."""
    fields = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("RssAnon", "RssFile", "RssShmem"):
                    fields[name] = int(value.split()[0]) * 1024
    except OSError:
        return 0, 0
    return fields.get("RssAnon", 0), fields.get("RssFile", 0) + fields.get("RssShmem", 0)


def peak_rss_bytes() -> int:
    """The largest resident set this process has had (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def build_scale_index(
    model: FaithfulModel,
    n_docs: int,
    path: str | Path,
    chunk: int = CHUNK_DOCS,
    run_postings: int = 64_000_000,
    merge_postings: int = 64_000_000,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Draw ``n_docs`` documents from ``model`` a chunk at a time into a compressed index at
    ``path``; returns the build's figures (also kept in the index's metadata)."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    drawing = spilling = 0.0
    writer = CompressedIndexWriter(
        path,
        [f"t{i}" for i in range(model.vocab_size)],
        run_postings=run_postings,
        merge_postings=merge_postings,
        overwrite=overwrite,
        progress=progress,
    )
    with writer, tqdm(total=n_docs, desc="draw + spill", unit="doc", disable=not progress) as bar:
        chunks = model.corpus(n_docs, chunk=chunk)
        while True:
            t0 = time.perf_counter()
            batch = next(chunks, None)
            t1 = time.perf_counter()
            drawing += t1 - t0
            if batch is None:
                break
            writer.add(*batch)
            spilling += time.perf_counter() - t1
            bar.update(batch[0].shape[0])
        merge_started = time.perf_counter()
        stats = {
            "n_docs": n_docs,
            "generate_seconds": drawing,
            "spill_seconds": spilling,
            "run_postings": run_postings,
            "merge_postings": merge_postings,
        }
        writer.finish(metadata={"source": "lsr bench scale", "generator_docs": n_docs})
    done = time.perf_counter()
    stats.update(
        seconds=done - started, merge_seconds=done - merge_started, peak_rss_bytes=peak_rss_bytes()
    )
    (Path(path) / "build.json").write_text(json.dumps(stats, indent=2))
    return stats


def memory_bandwidth() -> float:
    """This machine's read bandwidth in GB/s: the best of three single-thread sums of 1 GiB."""
    data = np.ones(BANDWIDTH_BYTES // 8, dtype=np.float64)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - started)
    return BANDWIDTH_BYTES / best / 1e9


def _query_cost(index: CompressedIndex, queries: sp.csr_array) -> tuple[float, float]:
    """Mean postings and compressed bytes (gaps, impacts, block metadata) a query reads."""
    tp, tb, words = index.term_postings, index.term_blocks, index.block_words
    terms = queries.indices
    postings = (tp[terms + 1] - tp[terms]).astype(np.float64)
    word_bytes = 4.0 * (words[tb[terms + 1]] - words[tb[terms]])
    header = sum(a.itemsize for a in (index.block_last, index.block_max, index.block_bits, words))
    block_bytes = float(header) * (tb[terms + 1] - tb[terms])
    n = max(queries.shape[0], 1)
    return postings.sum() / n, (postings + word_bytes + block_bytes).sum() / n


def _recall(results, exact, k: int) -> float:
    """Mean share of the exact top ``k`` that ``results`` found."""
    found = [
        len(set(results.docs[i, : results.counts[i]]) & set(exact.docs[i, : exact.counts[i]]))
        / max(min(k, int(exact.counts[i])), 1)
        for i in range(len(exact))
    ]
    return float(np.mean(found)) if found else 1.0


def bench_search(
    index: CompressedIndex,
    queries: sp.csr_array,
    k: int = 10,
    query_terms: tuple[int, ...] = QUERY_TERMS,
    batch: int = BATCH,
) -> dict:
    """Time exact search: one query at a time on 1 and 2 threads (latencies), the whole set as
    one batch on 1 and 2 threads, batches of ``batch`` on 2 threads (their latencies); then
    approximate search keeping each query's ``query_terms`` heaviest terms, with recall@k
    against exact."""
    started = time.perf_counter()
    index.search(queries[:1], k=k)
    compile_seconds = time.perf_counter() - started
    index.search(queries[:2], k=k, threads=1, query_terms=1)  # compiles the batch kernels
    n = queries.shape[0]
    modes = {}
    gc.disable()
    try:
        for threads in (1, 2):
            latencies = []
            for i in range(n):
                t0 = time.perf_counter()
                index.search(queries[i : i + 1], k=k, threads=threads)
                latencies.append(time.perf_counter() - t0)
            modes[f"exact, one query at a time, {_threads(threads)}"] = _row(latencies, n)
        for threads in (1, 2):
            t0 = time.perf_counter()
            exact = index.search(queries, k=k, threads=threads)
            modes[f"exact, batch of {n}, {_threads(threads)}"] = {
                "qps": n / (time.perf_counter() - t0)
            }
        batches = []
        for lo in range(0, n, batch):
            t0 = time.perf_counter()
            index.search(queries[lo : lo + batch], k=k, threads=2)
            batches.append(time.perf_counter() - t0)
        modes[f"exact, batches of {batch}, 2 threads (batch latency)"] = _row(batches, n)
        for m in query_terms:
            t0 = time.perf_counter()
            found = index.search(queries, k=k, threads=2, query_terms=m)
            row = {"qps": n / (time.perf_counter() - t0), "recall": _recall(found, exact, k)}
            modes[f"{m} heaviest query terms, batch of {n}, 2 threads"] = row
    finally:
        gc.enable()
    postings, compressed = _query_cost(index, queries)
    anon, file = _rss()
    return {
        "modes": modes,
        "compile_seconds": compile_seconds,
        "postings_per_query": postings,
        "bytes_per_query": compressed,
        "postings_gbs": compressed / float(np.mean(latencies)) / 1e9,  # 2 threads' latencies
        "rss_anon_bytes": anon,
        "rss_file_bytes": file,
    }


def _threads(n: int) -> str:
    return f"{n} thread{'s' * (n > 1)}"


def _row(latencies: list[float], n_queries: int) -> dict:
    return {
        "qps": n_queries / sum(latencies),
        "p50_ms": float(np.percentile(latencies, 50) * 1e3),
        "p99_ms": float(np.percentile(latencies, 99) * 1e3),
    }


def bench_scale(
    model: FaithfulModel,
    n_docs: int,
    path: str | Path,
    n_queries: int = 1000,
    k: int = 10,
    rebuild: bool = False,
    progress: bool = False,
) -> ScaleReport:
    """Build (unless ``path`` holds this collection already and not ``rebuild``) and time it."""
    path = Path(path)
    built = path / "build.json"
    if path.exists() and not rebuild:
        if not built.is_file():
            raise InputError(
                f"{path} exists but was not built by lsr bench scale; choose another --index "
                "or pass --overwrite."
            )
        build = json.loads(built.read_text())
        if build.get("n_docs") != n_docs:
            raise InputError(
                f"{path} holds {build.get('n_docs'):,} documents, not {n_docs:,}; pass "
                "--overwrite to rebuild it."
            )
        logger.info("reusing the collection at %s", path)
    else:
        build = build_scale_index(model, n_docs, path, overwrite=rebuild, progress=progress)
    t0 = time.perf_counter()
    index = CompressedIndex.load(path, verify=False)
    open_seconds = time.perf_counter() - t0
    queries, _ = model.queries(n_queries, n_docs)
    search = bench_search(index, queries, k)
    search["open_seconds"] = open_seconds
    search["bandwidth_gbs"] = memory_bandwidth()
    sizes = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return ScaleReport(
        n_docs=index.n_docs,
        n_postings=index.n_postings,
        build=build,
        bytes_per_posting=index.bytes_per_posting,
        index_bytes=sizes,
        search=search,
        extra={"cpus": os.cpu_count() or 1},
    )
