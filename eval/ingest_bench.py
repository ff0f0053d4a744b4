"""``lsr bench ingest``: documents written over REST to a real ``lsr serve`` while it is searched.

A collection is built from a corpus (``--like``, SciFact say); then, for each batch size, a copy
of it is served on loopback and ``docs`` documents drawn from the same corpus (its texts,
cycled, under new ids and with a ``metadata`` field) are posted in batches, while one client
searches back to back. Reported per batch size: documents/s over the first and the last 10%
of the documents (a store that slows as it grows shows here), search p99 while idle and
during the ingest, and the write amplification (bytes the server wrote to the collection:
log, segments written by flushes and merges, deletion files and commit points, over the
bytes of the documents' JSON). Then, in process, the
largest collection with half its documents deleted is searched against a fresh index of the
survivors (medians of interleaved rounds), and stored documents are read back by id.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lsr import BM25Encoder
from lsr.checks import positive_int
from lsr.corpus import read_queries
from lsr.encoders import load_encoder
from lsr.errors import InputError
from lsr.eval.reads_bench import timed
from lsr.index import Index, LiveIndex
from lsr.pipeline import ENCODER_DIR, index_corpus, read_documents


@dataclass
class IngestRun:
    batch_size: int
    docs: int
    seconds: float
    first_docs_per_s: float  # over the first 10% of the documents
    last_docs_per_s: float  # over the last 10%
    idle_p99_ms: float
    ingest_p99_ms: float
    searches_during: int
    bytes_ingested: int
    bytes_written: int

    @property
    def rate_ratio(self) -> float:
        return self.last_docs_per_s / self.first_docs_per_s if self.first_docs_per_s else 0.0

    @property
    def p99_ratio(self) -> float:
        return self.ingest_p99_ms / self.idle_p99_ms if self.idle_p99_ms else 0.0

    @property
    def write_amplification(self) -> float:
        return self.bytes_written / self.bytes_ingested if self.bytes_ingested else 0.0


@dataclass
class IngestReport:
    like: str
    seed_docs: int
    flush_threshold: int
    encode_workers: int
    runs: list[IngestRun] = field(default_factory=list)
    deleted: dict = field(default_factory=dict)  # 50% deleted vs a fresh index, per algorithm
    store: dict = field(default_factory=dict)  # bytes per document, get-by-id latency

    def to_dict(self) -> dict:
        out = asdict(self)
        for run, d in zip(self.runs, out["runs"], strict=True):
            d.update(
                rate_ratio=run.rate_ratio,
                p99_ratio=run.p99_ratio,
                write_amplification=run.write_amplification,
            )
        return out

    def table(self) -> str:
        lines = [
            f"ingest over REST into a copy of {self.like} ({self.seed_docs:,} docs), "
            f"flush threshold {self.flush_threshold:,}, {self.encode_workers} encoding workers",
            f"{'batch':>6} {'docs':>8} {'docs/s first':>13} {'last':>8} {'last/first':>10} "
            f"{'p99 idle':>9} {'during':>8} {'ratio':>6} {'write amp':>9}",
        ]
        for r in self.runs:
            lines.append(
                f"{r.batch_size:>6} {r.docs:>8,} {r.first_docs_per_s:>13,.0f} "
                f"{r.last_docs_per_s:>8,.0f} {r.rate_ratio:>10.2f} {r.idle_p99_ms:>8.2f}m "
                f"{r.ingest_p99_ms:>7.2f}m {r.p99_ratio:>6.2f} {r.write_amplification:>9.2f}"
            )
        for algo, d in self.deleted.items():
            lines.append(
                f"50% deleted, {algo}: {d['deleted_us']:.1f} us/query masked "
                f"({d['ratio']:.2f}x), {d['expunged_us']:.1f} after the merge policy expunged "
                f"them ({d['expunged_ratio']:.2f}x), vs {d['fresh_us']:.1f} on a fresh index "
                "of the survivors"
            )
        if self.store:
            lines.append(
                f"stored documents: {self.store['bytes_per_doc']:,.0f} bytes/doc; get by id "
                f"p50 {self.store['get_p50_ms']:.3f} ms, p99 {self.store['get_p99_ms']:.3f} ms"
            )
        return "\n".join(lines)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """``lsr serve`` on a free loopback port, as a subprocess."""

    def __init__(self, collection: Path, flush_threshold: int, encode_workers: int = 1) -> None:
        self.port = _free_port()
        argv = [sys.executable, "-m", "lsr.service.cli", "serve", str(collection), "--port",
                str(self.port), "--flush-threshold", str(flush_threshold),
                "--encode-workers", str(encode_workers)]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lsr serve failed: {self.proc.stderr.read().decode()[-2000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.request("GET", "/health")[0] == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("lsr serve did not start within 180 s")

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def request(self, method, path, body=None, conn=None) -> tuple[int, dict]:
        own = conn is None
        conn = conn or self.connection()
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, data, {"content-type": "application/json"})
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            if own:
                conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=120)


class _Searcher(threading.Thread):
    """One client searching back to back (a short pause between requests) until stopped."""

    def __init__(self, server: _Server, queries: list[str]) -> None:
        super().__init__(daemon=True)
        self.server, self.queries = server, queries
        self.latencies: list[float] = []
        self.errors = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        conn = self.server.connection()
        i = 0
        while not self._stop_event.is_set():
            body = {"query": self.queries[i % len(self.queries)], "k": 10}
            start = time.perf_counter()
            status, _ = self.server.request("POST", "/search", body, conn)
            self.latencies.append(time.perf_counter() - start)
            self.errors += status != 200
            i += 1
            time.sleep(0.005)
        conn.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(60)


def _p99_ms(seconds: list[float]) -> float:
    return float(np.percentile(np.asarray(seconds) * 1e3, 99)) if seconds else 0.0


def _new_documents(docs, n: int) -> list[dict]:
    """``n`` documents like the corpus: its texts cycled under new ids, with a metadata field."""
    return [
        {
            "id": f"ingest-{i}",
            "title": docs[i % len(docs)].title,
            "text": docs[i % len(docs)].text,
            "fields": {"metadata": {"n": i, "source": docs[i % len(docs)].id}},
        }
        for i in range(n)
    ]


def _ingest(server, documents, batch_size, queries, idle_seconds, progress) -> IngestRun:
    idle = _Searcher(server, queries)
    idle.start()
    time.sleep(idle_seconds)
    idle.stop()
    during = _Searcher(server, queries)
    conn = server.connection()
    done_at = np.zeros(len(documents))
    bytes_ingested = 0
    during.start()
    start = time.perf_counter()
    with tqdm(total=len(documents), unit="doc", desc=f"ingest x{batch_size}",
              disable=not progress) as bar:  # fmt: skip
        for lo in range(0, len(documents), batch_size):
            batch = documents[lo : lo + batch_size]
            bytes_ingested += sum(len(json.dumps(d).encode()) for d in batch)
            for attempt in range(100):
                status, answer = server.request("POST", "/documents", {"documents": batch}, conn)
                if status != 503:
                    break
                time.sleep(min(1.0, 0.05 * (attempt + 1)))  # the disk is busy: retry, as told
            if status != 200:
                raise RuntimeError(f"POST /documents answered {status}: {answer}")
            done_at[lo : lo + len(batch)] = time.perf_counter() - start
            bar.update(len(batch))
    seconds = time.perf_counter() - start
    during.stop()
    conn.close()
    _, stats = server.request("GET", "/stats")
    n = len(documents)
    tenth = max(1, n // 10)
    first = tenth / max(done_at[tenth - 1], 1e-9)
    last = tenth / max(done_at[-1] - done_at[n - tenth - 1] if n > tenth else done_at[-1], 1e-9)
    return IngestRun(
        batch_size=batch_size,
        docs=n,
        seconds=seconds,
        first_docs_per_s=first,
        last_docs_per_s=last,
        idle_p99_ms=_p99_ms(idle.latencies),
        ingest_p99_ms=_p99_ms(during.latencies),
        searches_during=len(during.latencies),
        bytes_ingested=bytes_ingested,
        bytes_written=int(stats.get("bytes_written", 0)),
    )


def _deleted_half(collection: Path, queries: list[str], rounds: int = 7) -> dict:
    """Search cost with half the documents deleted, against a fresh index of the survivors:
    right after the deletes (masked in the kernels) and after the merge policy expunged them
    (it rewrites a segment with more than ``deletes_pct_allowed`` deleted); medians of
    interleaved rounds, same queries, same hits checked."""
    encoder = load_encoder(collection / ENCODER_DIR)
    q = encoder.encode_queries(queries)
    rows = [q[[i]] for i in range(q.shape[0])]
    out = {}
    with LiveIndex(collection, background=False) as live:
        live.force_merge(1)
        (index,) = live.segments
        ids = index.doc_ids.to_pylist()
        dead = np.random.default_rng(0).permutation(len(ids))[: len(ids) // 2]
        for lo in range(0, len(dead), 1000):
            live.delete([ids[i] for i in dead[lo : lo + 1000]])
        keep = np.setdiff1d(np.arange(len(ids)), dead)
        fresh = Index.build(*index.rows(keep), index.vocab)
        with LiveIndex(collection, read_only=True) as masked:  # the state before the merge
            live.merge()
            expected = [h.ids for h in fresh.search(q, 10)]
            for name, target in (("masked", masked), ("expunged", live)):
                if [h.ids for h in target.search(q, 10)] != expected:
                    raise RuntimeError(f"the {name} collection and the fresh index disagree")
            targets = (("deleted", masked), ("expunged", live), ("fresh", fresh))
            for algo in ("auto", "maxscore", "bmw"):
                times = {name: [] for name, _ in targets}
                for r in range(rounds + 1):
                    for name, target in targets:
                        start = time.perf_counter()
                        for row in rows:
                            target.search(row, 10, algorithm=algo)
                        if r:  # the first round warms up
                            times[name].append((time.perf_counter() - start) / len(rows) * 1e6)
                d, e, f = (float(np.median(times[n])) for n in ("deleted", "expunged", "fresh"))
                out[algo] = {"deleted_us": d, "expunged_us": e, "fresh_us": f, "ratio": d / f,
                             "expunged_ratio": e / f}  # fmt: skip
    return out


def _store_reads(collection: Path, n_gets: int = 2000) -> dict:
    with LiveIndex(collection, read_only=True) as live:
        index = max(live.segments, key=lambda s: s.n_docs)
        if index.store is None:
            return {}
        ids = index.doc_ids.to_pylist()
        chosen = np.random.default_rng(1).integers(0, len(ids), n_gets)
        live.document(ids[0])
        ms = np.asarray(timed(live.document, [ids[i] for i in chosen])) * 1e3
        return {
            "bytes_per_doc": index.store.path.stat().st_size / index.n_docs,
            "get_p50_ms": float(np.percentile(ms, 50)),
            "get_p99_ms": float(np.percentile(ms, 99)),
        }


def bench_ingest(
    like: str | Path,
    n_docs: int = 100_000,
    batch_sizes: Sequence[int] = (1, 10, 100),
    flush_threshold: int = 10_000,
    idle_seconds: float = 3.0,
    encode_workers: int = 1,
    progress: bool = False,
) -> IngestReport:
    """Run the benchmark of the module docstring; work files go to a temporary directory."""
    positive_int(n_docs, "docs")
    positive_int(flush_threshold, "flush_threshold")
    if not batch_sizes:
        raise InputError("Give at least one batch size.")
    for b in batch_sizes:
        positive_int(b, "batch size")
    docs = read_documents(like)
    queries = _queries(like, docs)
    documents = _new_documents(docs, n_docs)
    work = Path(tempfile.mkdtemp(prefix="lsr-ingest-"))
    try:
        seed = work / "seed"
        index_corpus(like, BM25Encoder(), seed, progress=False)
        report = IngestReport(str(like), len(docs), flush_threshold, encode_workers)
        last = None
        for b in batch_sizes:
            last = work / f"batch-{b}"
            shutil.copytree(seed, last)
            server = _Server(last, flush_threshold, encode_workers)
            try:
                report.runs.append(_ingest(server, documents, b, queries, idle_seconds, progress))
            finally:
                server.stop()
        report.deleted = _deleted_half(last, queries[:300])
        report.store = _store_reads(last)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _queries(like: str | Path, docs) -> list[str]:
    """The corpus's queries when it has them (a BEIR folder), else its document titles."""
    path = Path(like)
    for name in ("queries.jsonl", "queries.tsv"):
        if (path / name).is_file():
            return list(read_queries(path / name).values())
    return [d.title or d.text[:80] for d in docs[:300]]
