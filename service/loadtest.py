"""Bounded load tests of running ``lsr serve`` instances: QPS and latency percentiles.

Two generators: ``wrk`` (C, from Debian's packages; a Lua script POSTs the queries in turn),
which measures the server rather than the client, and a Python one (httpx threads, for
machines without wrk). With wrk, :func:`compare` measures several servers and the raw ASGI
reference (:mod:`lsr.service.raw_asgi`, the HTTP limit of the stack) in interleaved rounds
and reports medians and ratios. :mod:`lsr.service.soak` runs the long mixed test.

Loopback only: it refuses any host that is not 127.0.0.0/8, ::1 or localhost, and every run
is bounded in time (and, for the Python generator, in requests).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
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


def check_server(url: str) -> None:
    """An :class:`InputError` unless an lsr server answers ``GET /health`` at ``url``."""
    import httpx

    try:
        httpx.get(url + "/health", timeout=10).raise_for_status()
    except httpx.HTTPError as e:
        raise InputError(
            f"No lsr server answers at {url} ({type(e).__name__}); start lsr serve."
        ) from e


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
    check_server(url)
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


# ---- an external load generator (wrk) and the HTTP limit of the stack ---------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {}
for line in io.lines(%s) do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, nil, nil, bodies[(i %% #bodies) + 1])
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    path: str,
    bodies: list[bytes] | None,
    concurrency: int,
    duration: float,
    scratch: Path,
    threads: int = 1,
) -> LoadResult:
    """``wrk`` against ``url + path``: POSTs of ``bodies`` in turn (GETs when None), with
    ``concurrency`` connections on ``threads`` threads for ``duration`` seconds."""
    check_loopback(url)
    if not wrk_available():
        raise InputError("wrk is not installed (apt-get install wrk); use --generator python.")
    argv = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(duration))}s",
            "--latency", "--timeout", "10s"]  # fmt: skip
    if bodies is not None:
        lines = scratch / "bodies.jsonl"
        lines.write_bytes(b"\n".join(b.replace(b"\n", b" ") for b in bodies) + b"\n")
        script = scratch / "post.lua"
        script.write_text(WRK_SCRIPT % json.dumps(str(lines)), encoding="utf-8")
        argv += ["-s", str(script)]
    done = subprocess.run(
        [*argv, url + path], capture_output=True, text=True, timeout=duration + 60
    )
    if done.returncode != 0:
        raise InputError(f"wrk failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return parse_wrk(done.stdout, concurrency)


def parse_wrk(text: str, concurrency: int) -> LoadResult:
    """The figures of wrk's report (run with ``--latency``)."""

    def number(pattern: str, default: float | None = None) -> float:
        found = re.search(pattern, text)
        if found is None:
            if default is None:
                raise InputError(f"cannot read wrk's report: {text[-500:]}")
            return default
        return float(found.group(1))

    def ms(label: str) -> float:
        found = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if found is None:
            raise InputError(f"cannot read wrk's latency distribution: {text[-500:]}")
        return float(found.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[found.group(2)]

    requests = int(number(r"(\d+) requests in"))
    seconds = number(r"requests in ([\d.]+)s") if "requests in" in text else 0.0
    unit = re.search(r"requests in [\d.]+(m?s)", text)
    if unit and unit.group(1) == "ms":
        seconds /= 1e3
    errors = int(number(r"Non-2xx or 3xx responses: (\d+)", 0))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    return LoadResult(
        concurrency=concurrency,
        requests=requests,
        errors=errors,
        seconds=seconds,
        qps=number(r"Requests/sec:\s+([\d.]+)"),
        p50_ms=ms("50"),
        p99_ms=ms("99"),
    )


@contextlib.contextmanager
def raw_asgi_server(workers: int = 1) -> Iterator[str]:
    """The raw ASGI reference (:mod:`lsr.service.raw_asgi`) on a free loopback port, in
    ``workers`` processes (to compare with a server of as many)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lsr.service.raw_asgi", str(port), str(workers)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise InputError(f"the raw ASGI reference did not start: {proc.stderr.read()!r}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise InputError("the raw ASGI reference did not start in 30 s") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@dataclass
class Comparison:
    """Medians over interleaved rounds, per target (``raw-asgi`` first when measured)."""

    generator: str
    path: str
    concurrency: int
    rounds: int
    targets: dict[str, list[LoadResult]]

    def median(self, target: str) -> LoadResult:
        runs = sorted(self.targets[target], key=lambda r: r.qps)
        return runs[len(runs) // 2]

    def to_dict(self) -> dict:
        return {
            "generator": self.generator,
            "path": self.path,
            "concurrency": self.concurrency,
            "rounds": self.rounds,
            "median": {t: self.median(t).to_dict() for t in self.targets},
            "runs": {t: [r.to_dict() for r in runs] for t, runs in self.targets.items()},
        }

    def lines(self) -> list[str]:
        names = list(self.targets)
        width = max(len(n) for n in names)
        out = [
            f"{self.generator}, {self.concurrency} connections, POST {self.path}, median of "
            f"{self.rounds} interleaved round{'s' * (self.rounds != 1)}:"
        ]
        raw = self.median(RAW) if RAW in self.targets else None
        first = next((n for n in names if n != RAW), None)
        for name in names:
            m = self.median(name)
            line = (f"  {name:<{width}}  {m.qps:>9,.0f} QPS  p50 {m.p50_ms:6.2f} ms  "
                    f"p99 {m.p99_ms:6.2f} ms  {m.errors} errors")  # fmt: skip
            if raw is not None and name != RAW:
                line += f"  {m.qps / raw.qps:6.1%} of raw ASGI"
            if first is not None and name not in (RAW, first):
                line += f"  {m.qps / self.median(first).qps:5.2f}x {first}"
            out.append(line)
        return out


RAW = "raw-asgi"


def compare(
    urls: list[str],
    bodies: list[bytes],
    concurrency: int,
    duration: float,
    rounds: int,
    reference: bool = True,
    path: str = "/search",
    reference_workers: int = 1,
) -> Comparison:
    """wrk against each of ``urls`` (and the raw ASGI reference), in interleaved rounds."""
    for url in urls:
        check_loopback(url)
    targets: dict[str, list[LoadResult]] = {}
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lsr-load-")))
        order = list(urls)
        if reference:
            order.insert(0, stack.enter_context(raw_asgi_server(reference_workers)))
        names = ([RAW] if reference else []) + list(urls)
        for name in names:
            targets[name] = []
        for _ in range(rounds):
            for name, url in zip(names, order, strict=True):
                targets[name].append(run_wrk(url, path, bodies, concurrency, duration, scratch))
    return Comparison("wrk", path, concurrency, rounds, targets)
