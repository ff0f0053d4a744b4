"""A soak test: mixed search and write traffic at a fixed rate for a bounded time, against a
running ``lsr serve``, reporting throughput, latency over time, errors and the server's
memory at the start and the end (from its ``/metrics``: ``lsr_server_resident_memory_bytes``,
all its worker processes together).

Open loop: request ``i`` is due at ``start + i / rate`` whatever the server's speed (a
client that waits for each answer before sending the next hides a slowing server), sent by
a pool of client threads. A ``write_fraction`` of the requests are writes: documents added
under ids ``soak-N`` (texts taken from the queries) until ``keep`` of them exist, then the
oldest deleted by the next write, so the collection ends as it began plus at most ``keep``
documents.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

from lsr.errors import InputError
from lsr.service.loadtest import check_loopback, check_server


@dataclass
class Interval:
    start_s: float
    searches: int
    writes: int
    errors: int
    qps: float
    search_p50_ms: float
    search_p99_ms: float
    write_p99_ms: float
    memory: int = 0  # the server's resident memory at the end of the interval


@dataclass
class SoakReport:
    seconds: float
    rate: float
    requests: int
    errors: int
    late: int  # requests sent more than a second after they were due (the clients fell behind)
    memory_start: int
    memory_end: int
    intervals: list[Interval] = field(default_factory=list)

    @property
    def memory_growth(self) -> float:
        return self.memory_end / self.memory_start - 1 if self.memory_start else float("nan")

    def to_dict(self) -> dict:
        return {**asdict(self), "memory_growth": self.memory_growth}

    def lines(self) -> list[str]:
        out = [
            f"soak: {self.requests:,} requests in {self.seconds:.0f} s at {self.rate:g}/s "
            f"({self.requests / self.seconds:,.1f}/s done), {self.errors} errors, "
            f"{self.late} sent late; server memory {self.memory_start / 2**20:.1f} MiB -> "
            f"{self.memory_end / 2**20:.1f} MiB ({self.memory_growth:+.1%})",
            "   from   req/s  search p50  search p99  write p99  errors  memory",
        ]
        for i in self.intervals:
            out.append(
                f"  {i.start_s:5.0f}s {i.qps:7.1f} {i.search_p50_ms:8.2f} ms {i.search_p99_ms:8.2f}"
                f" ms {i.write_p99_ms:7.2f} ms {i.errors:7d}  {i.memory / 2**20:6.1f} MiB"
            )
        return out


def resident_memory(client, url: str) -> int:
    """The server's resident memory in bytes (all its processes), from its metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = client.get(url + "/metrics").raise_for_status().text
    for family in text_string_to_metric_families(text):
        if family.name == "lsr_server_resident_memory_bytes":
            return int(family.samples[0].value)
    raise InputError(f"{url}/metrics has no lsr_server_resident_memory_bytes.")


def run_soak(
    url: str,
    queries: list[str],
    duration: float = 600.0,
    rate: float = 100.0,
    write_fraction: float = 0.1,
    api_key: str | None = None,
    interval: float = 30.0,
    clients: int = 16,
    keep: int = 1000,
    k: int = 10,
) -> SoakReport:
    """Search and write ``url`` at ``rate`` requests per second for ``duration`` seconds."""
    import httpx

    check_loopback(url)
    if not queries:
        raise InputError("The soak test needs at least one query.")
    if not (0 <= write_fraction <= 1) or rate <= 0 or duration <= 0 or interval <= 0:
        raise InputError("The soak test needs rate, duration, interval > 0, write_fraction 0-1.")
    headers = {"X-API-Key": api_key} if api_key else {}
    check_server(url)
    with httpx.Client(base_url=url, headers=headers, timeout=30) as probe:
        for q in queries[:2000]:  # warm up (each query once) before the first memory reading
            probe.post("/search", json={"query": q, "k": k})
        memory_start = resident_memory(probe, url)
    memory: list[tuple[float, int]] = []  # (seconds since start, resident bytes)
    stop = threading.Event()
    total = int(duration * rate)
    writes_every = round(1 / write_fraction) if write_fraction else 0
    lock = threading.Lock()
    records: list[tuple[float, str, float, bool]] = []  # (due, kind, seconds, ok)
    written: deque[str] = deque()
    late = [0]
    next_index = [0]
    start = time.monotonic() + 0.5

    def client_loop() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
            while True:
                with lock:
                    i = next_index[0]
                    next_index[0] += 1
                if i >= total:
                    return
                due = start + i / rate
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                elif wait < -1:
                    with lock:
                        late[0] += 1
                kind = "write" if writes_every and i % writes_every == 0 else "search"
                sent = time.monotonic()
                try:
                    ok = _request(c, kind, i, queries, k, written, keep, lock)
                except httpx.HTTPError:
                    ok = False
                with lock:
                    records.append((due - start, kind, time.monotonic() - sent, ok))

    def watch_memory() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as probe:
            while not stop.wait(max(0.0, start + (len(memory) + 1) * interval - time.monotonic())):
                memory.append((time.monotonic() - start, resident_memory(probe, url)))

    watcher = threading.Thread(target=watch_memory, daemon=True)
    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(clients)]
    for t in [*threads, watcher]:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    seconds = time.monotonic() - start
    with httpx.Client(base_url=url, headers=headers, timeout=30) as probe:
        memory_end = resident_memory(probe, url)
    intervals = _intervals(records, interval)
    for item in intervals:  # the reading at the end of each interval (the last: the final one)
        number = round(item.start_s / interval)
        item.memory = memory[number][1] if number < len(memory) else memory_end
    return SoakReport(
        seconds=seconds,
        rate=rate,
        requests=len(records),
        errors=sum(not ok for *_, ok in records),
        late=late[0],
        memory_start=memory_start,
        memory_end=memory_end,
        intervals=intervals,
    )


def _request(c, kind: str, i: int, queries, k: int, written: deque, keep: int, lock) -> bool:
    text = queries[i % len(queries)]
    if kind == "search":
        return c.post("/search", json={"query": text, "k": k}).status_code == 200
    with lock:  # at ``keep`` soak documents, a write deletes the oldest instead of adding
        gone = written.popleft() if len(written) >= keep else None
    if gone is not None:
        return c.delete(f"/documents/{gone}").status_code in (200, 404)
    doc_id = f"soak-{i}"
    answer = c.post("/documents", json={"documents": [{"id": doc_id, "text": text}]})
    if answer.status_code == 200:
        with lock:
            written.append(doc_id)
    return answer.status_code == 200


def _intervals(records, width: float) -> list[Interval]:
    if not records:
        return []
    due = np.array([r[0] for r in records])
    out = []
    for lo in np.arange(0, due.max() + 1e-9, width):
        picked = [r for r, d in zip(records, due, strict=True) if lo <= d < lo + width]
        if not picked:
            continue
        search = np.array([s for _, kind, s, _ in picked if kind == "search"]) * 1e3
        write = np.array([s for _, kind, s, _ in picked if kind == "write"]) * 1e3
        span = min(width, due.max() - lo) or width
        out.append(
            Interval(
                start_s=float(lo),
                searches=len(search),
                writes=len(write),
                errors=sum(not ok for *_, ok in picked),
                qps=len(picked) / span,
                search_p50_ms=float(np.percentile(search, 50)) if len(search) else 0.0,
                search_p99_ms=float(np.percentile(search, 99)) if len(search) else 0.0,
                write_p99_ms=float(np.percentile(write, 99)) if len(write) else 0.0,
            )
        )
    return out
