"""The service's Prometheus metrics (``GET /metrics``), through ``prometheus_client``.

Each app has its own registry (several apps in one process, as in the tests, never mix their
figures): request counts and latency histograms per endpoint (the route's template, never
the raw path, so ids do not multiply the series), the time searches spend inside the
collection (encoding and the kernels, apart from HTTP), requests in flight and waiting for
the query encoder (the queue depth), rate-limited requests, and the collection's own
figures (documents, segments, write-ahead log bytes, flushes and merges with their
durations) read from ``LiveIndex.stats()`` at each scrape. The process collector adds the
server's memory and CPU (``process_resident_memory_bytes``) and
``lsr_server_resident_memory_bytes``, the memory of all the server's processes (which the
soak test reads).

With several worker processes (``lsr serve --workers N``) the workers count into files in
a shared folder (``prometheus_client``'s multiprocess mode, chosen by
``PROMETHEUS_MULTIPROC_DIR`` before the first import), and the writer's ``/metrics`` adds
them up: requests and latencies of the whole server; gauges such as requests in flight are
summed over the live workers; the collection's figures are the writer's; memory is given
per worker (``lsr_worker_resident_memory_bytes``) and in total.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# seconds: a BM25 search takes tens of microseconds, a model-encoded query milliseconds
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip


class Metrics:
    """One app's metrics; ``render()`` is the body of ``GET /metrics``."""

    def __init__(
        self, stats: Callable[[], dict] | None = None, workers_file: str | Path | None = None
    ) -> None:
        """``stats``: the collection's ``LiveIndex.stats``; ``workers_file``: the JSON list
        of the server's worker processes (``lsr.service.workers``), when there are several."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "lsr_requests", "HTTP requests answered, by endpoint, method and status.",
            ["endpoint", "method", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "lsr_request_duration_seconds",
            "Time from a request's first byte to its answer, by endpoint and method.",
            ["endpoint", "method"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.search_seconds = Histogram(
            "lsr_search_seconds",
            "Time a search spends in the collection (kernels, merging segments' hits), "
            "per request, apart from HTTP and encoding.",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.encode_seconds = Histogram(
            "lsr_query_encode_seconds",
            "Time to encode a request's text queries with a model (waiting for a batch "
            "included).",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.encode_batch = Histogram(
            "lsr_query_encode_batch_size",
            "Queries encoded together by the model (concurrent requests batched).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "lsr_requests_in_flight", "Requests being answered now.", registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.encode_queue = Gauge(
            "lsr_query_encode_queue", "Text queries waiting for the query encoder.",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.rate_limited = Counter(
            "lsr_rate_limited", "Requests refused with 429, by API key name.", ["key"],
            registry=r,
        )  # fmt: skip
        self.deadlines = Counter(
            "lsr_deadline_exceeded", "Requests answered 504 at their deadline (timeout_ms).",
            registry=r,
        )  # fmt: skip
        # what /metrics shows: this registry, or in multiprocess mode every worker's files
        self.exposed = r
        if getattr(values.ValueClass, "_multiprocess", False):
            from prometheus_client.multiprocess import MultiProcessCollector

            self.exposed = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(self.exposed)
        ProcessCollector(registry=self.exposed)
        self.exposed.register(_MemoryCollector(workers_file))
        if stats is not None:
            self.exposed.register(_CollectionCollector(stats))

    def render(self) -> bytes:
        return generate_latest(self.exposed)


def resident_bytes(pid: int | str = "self") -> int | None:
    """A process's resident memory (Linux ``/proc``), None when it is gone or unknown."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class _MemoryCollector:
    """The resident memory of the server's processes: this one, or every worker."""

    def __init__(self, workers_file: str | Path | None) -> None:
        self.workers_file = workers_file

    def describe(self):
        return []

    def collect(self):
        workers = [{"worker": "0", "role": "server", "pid": "self"}]
        if self.workers_file is not None:
            # unreadable only before the supervisor's first write: this process alone then
            with contextlib.suppress(OSError, ValueError):
                workers = json.loads(Path(self.workers_file).read_text())
        each = GaugeMetricFamily(
            "lsr_worker_resident_memory_bytes", "Resident memory of each worker process.",
            labels=["worker", "role"],
        )  # fmt: skip
        total = 0
        for worker in workers:
            rss = resident_bytes(worker["pid"])
            if rss is not None:
                each.add_metric([str(worker["worker"]), worker["role"]], rss)
                total += rss
        yield each
        yield GaugeMetricFamily(
            "lsr_server_resident_memory_bytes",
            "Resident memory of all the server's processes together.", value=total,
        )  # fmt: skip


class _CollectionCollector:
    """The collection's figures, read from ``LiveIndex.stats()`` when scraped."""

    def __init__(self, stats: Callable[[], dict]) -> None:
        self.stats = stats

    def describe(self):
        return []  # collected at scrape time only

    def collect(self):
        s = self.stats()
        gauges = {
            "lsr_documents": ("Live documents searched.", s["n_docs"]),
            "lsr_segments": ("Segments in the current commit point.", s["segments"]),
            "lsr_deleted_documents": (
                "Deleted documents still held by segments (until a merge).", s["deleted_docs"],
            ),
            "lsr_buffer_documents": ("Documents in the write buffer.", s["buffer_docs"]),
            "lsr_postings": ("Postings searched.", s["postings"]),
            "lsr_wal_bytes": ("Size of the write-ahead log.", s["wal_bytes"]),
            "lsr_wal_records": ("Log records not yet in a segment.", s["log_records"]),
            "lsr_last_seq": ("Sequence number of the last acknowledged write.", s["last_seq"]),
            "lsr_generation": ("Generation of the current commit point.", s["generation"]),
            "lsr_writable": ("1 when writes are taken now.", int(s["writable"])),
            "lsr_write_failures": ("Consecutive failed writes.", s["writes"]["failures"]),
            "lsr_flush_failures": ("Consecutive failed flushes.", s["flushes"]["failures"]),
            "lsr_merge_failures": ("Consecutive failed merges.", s["merges"]["failures"]),
            "lsr_merges_running": ("Merges in progress.", int(bool(s["merges"]["running"]))),
        }  # fmt: skip
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)
        counters = {
            "lsr_flushes": ("Flushes of the write buffer into a segment.", s["flushes"]["count"]),
            "lsr_flush_seconds": ("Time spent flushing.", s["flushes"]["seconds"]),
            "lsr_merges": ("Segment merges.", s["merges"]["count"]),
            "lsr_merge_seconds": ("Time spent merging.", s["merges"]["seconds"]),
            "lsr_bytes_written": ("Bytes the collection wrote.", s["bytes_written"]),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)
