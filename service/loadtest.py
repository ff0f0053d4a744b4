"""A bounded load test of a running ``lsr serve``: QPS and latency percentiles per concurrency.

Loopback only: it refuses any host that is not 127.0.0.0/8, ::1 or localhost, and every run
stops after ``duration`` seconds or ``max_requests`` requests, whichever comes first.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlparse

import numpy as np

from lsr.errors import InputError


@dataclass
class LoadResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    qps: float
    p50_ms: float
    p99_ms: float

    def to_dict(self) -> dict:
        return asdict(self)


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise InputError(
        f"The load test only targets loopback addresses (127.0.0.1, ::1), not {host!r}."
    )


def run_load(
    url: str,
    queries: list[str],
    concurrency: int,
    duration: float = 10.0,
    max_requests: int = 20_000,
    k: int = 10,
) -> LoadResult:
    """``concurrency`` clients sending ``/search`` requests back to back."""
    import httpx

    check_loopback(url)
    if not queries:
        raise InputError("The load test needs at least one query.")
    try:
        httpx.get(url + "/health", timeout=10).raise_for_status()
    except httpx.HTTPError as e:
        raise InputError(
            f"No lsr server answers at {url} ({type(e).__name__}); start lsr serve."
        ) from e
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    budget = [max_requests]
    deadline = time.perf_counter() + duration

    def client(offset: int) -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=30) as c:
            i = offset
            while time.perf_counter() < deadline:
                with lock:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                t = time.perf_counter()
                try:
                    ok = (
                        c.post(
                            "/search", json={"query": queries[i % len(queries)], "k": k}
                        ).status_code
                        == 200
                    )
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - t
                with lock:
                    latencies.append(elapsed)
                    errors += not ok
                i += concurrency

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    lat = np.asarray(latencies) * 1e3 if latencies else np.zeros(1)
    return LoadResult(
        concurrency=concurrency,
        requests=len(latencies),
        errors=errors,
        seconds=seconds,
        qps=len(latencies) / seconds if seconds > 0 else 0.0,
        p50_ms=float(np.percentile(lat, 50)),
        p99_ms=float(np.percentile(lat, 99)),
    )
