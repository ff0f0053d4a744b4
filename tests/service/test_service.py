"""The REST service over real HTTP (uvicorn on 127.0.0.1), including kill -9 and restart."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import quote

import httpx
import pytest

from lsr import sample_dataset
from lsr.service.cli import main

pytestmark = pytest.mark.http  # every test here talks to a real server

KEY = "test-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``lsr serve`` in a subprocess on a free loopback port (with the test key unless
    ``key`` is None; its stderr in a file when ``log`` names one)."""

    def __init__(self, index_dir, *extra, key=KEY, log=None):
        self.index_dir = index_dir
        self.extra = (*extra, "--api-key", key) if key else extra
        self.log = log
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        target = [] if self.index_dir is None else [str(self.index_dir)]  # --ray: --cluster
        argv = [sys.executable, "-m", "lsr.service.cli", "serve", *target,
                "--port", str(self.port), *self.extra]  # fmt: skip
        err = self.log.open("wb") if self.log else subprocess.PIPE
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.stderr()[-2000:])
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def stderr(self) -> str:
        """What the server wrote on stderr so far (the log file; else once it has exited)."""
        if self.log:
            return self.log.read_text(encoding="utf-8", errors="replace")
        return self.proc.stderr.read().decode(errors="replace")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def _index_sample(out):
    """The bundled sample indexed with BM25 into ``out``."""
    assert main(["index", str(sample_dataset()), "--out", str(out)]) == 0
    return out


@pytest.fixture
def index_dir(tmp_path):
    return _index_sample(tmp_path / "idx")


LIMITS = ("--max-k", "100", "--max-batch", "4", "--max-body-bytes", "20000", "--max-explain", "5")
TIMEOUTS = ("--header-timeout", "1", "--body-timeout", "1")


@pytest.fixture
def server(index_dir):
    srv = Server(index_dir, *LIMITS).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def refusing_server(tmp_path_factory):
    """One server for all the bad-input cases: each request is refused, so none changes what
    the next one sees (and the server must stay healthy through all of them)."""
    srv = Server(
        _index_sample(tmp_path_factory.mktemp("refusing") / "idx"), *LIMITS, *TIMEOUTS
    ).start()
    yield srv
    assert httpx.get(srv.url + "/health", timeout=30).status_code == 200
    srv.stop()


def test_search_encode_documents_and_observability(server):
    c = httpx.Client(base_url=server.url, timeout=30)
    r = c.post("/search", json={"query": "how do bees make honey", "k": 3, "explain": True})
    assert r.status_code == 200
    hits = r.json()["hits"]
    assert len(hits) == 3 and hits[0]["score"] >= hits[1]["score"]
    terms = hits[0]["terms"]
    assert sum(t["contribution"] for t in terms) == pytest.approx(hits[0]["score"], rel=1e-4)
    vec = c.post("/encode", json={"texts": ["honey bees"], "kind": "query"}).json()["vectors"][0]
    by_vector = c.post("/search", json={"vector": vec, "k": 3}).json()["hits"]
    by_text = c.post("/search", json={"query": "honey bees", "k": 3}).json()["hits"]
    assert [h["id"] for h in by_vector] == [h["id"] for h in by_text]
    batch = c.post(
        "/search/batch", json={"queries": [{"query": "lava"}, {"query": "chess king"}], "k": 2}
    )
    assert batch.status_code == 200 and [len(x["hits"]) for x in batch.json()["results"]] == [2, 2]

    doc = {"id": "new-1", "title": "Glowing honey", "text": "zymurgy honey honey bees"}
    assert c.post("/documents", json={"documents": [doc]}).status_code == 401
    r = c.post("/documents", json={"documents": [doc]}, headers={"X-API-Key": KEY})
    assert r.status_code == 200 and r.json()["upserted"] == 1
    assert "new-1" in [
        h["id"] for h in c.post("/search", json={"query": "honey bees", "k": 5}).json()["hits"]
    ]
    stored = c.get("/documents/new-1").json()
    assert stored["document"] == {"_id": "new-1", "title": "Glowing honey", "text": doc["text"]}
    assert stored["vector"] is None
    assert c.get("/documents/new-1?vector=true").json()["vector"]["honei"] > 0
    assert c.get("/documents/d001").json()["document"]["title"] == "Astronomy 1"
    assert c.delete("/documents/new-1", headers={"X-API-Key": KEY}).status_code == 200
    assert c.get("/documents/new-1").status_code == 404
    assert c.delete("/documents/new-1", headers={"X-API-Key": KEY}).status_code == 404
    stats = c.get("/stats").json()
    assert stats["n_docs"] == 300 and stats["last_seq"] == 2
    metrics = c.get("/metrics").text
    assert (
        'lsr_requests_total{endpoint="/search",method="POST",status="200"}' in metrics
        and "lsr_documents 300.0" in metrics
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/search", b"{not json", 422),
        ("post", "/search", {"query": "bees", "k": 100000}, 422),
        ("post", "/search", {"query": "bees", "k": "ten"}, 422),
        ("post", "/search", {"query": "bees", "k": 0}, 422),
        ("post", "/search", {"query": 42}, 422),
        ("post", "/search", {"query": "   "}, 422),
        ("post", "/search", {}, 422),
        ("post", "/search", {"query": "bees", "vector": {"bee": 1.0}}, 422),
        ("post", "/search", {"vector": {"no-such-term-xyz": 1.0}}, 422),
        ("post", "/search", {"vector": {"bee": -1.0}}, 422),
        ("post", "/search", {"query": "bees", "surprise": 1}, 422),
        ("post", "/search", {"query": "x" * 5000}, 422),
        ("post", "/search", {"query": "y" * 30000}, 413),
        ("post", "/search/batch", {"queries": [{"query": "a"}] * 5}, 422),
        ("post", "/search/batch", {"queries": []}, 422),
        ("post", "/encode", {"texts": "not a list"}, 422),
        ("post", "/encode", {"texts": ["a"], "kind": "image"}, 422),
        ("get", "/documents/nope", None, 404),
        ("delete", "/documents/d001", None, 401),
        ("post", "/documents", {"documents": [{"id": "", "text": "x"}], "_key": True}, 422),
        ("post", "/documents", {"documents": [{"id": "a"}, {"id": "a"}], "_key": True}, 422),
        ("get", "/no/such/route", None, 404),
        ("put", "/search", {"query": "bees"}, 405),
        ("post", "/search", {"query": "bees", "k": True}, 422),
        ("post", "/search", {"query": "bees", "k": "5"}, 422),
        ("post", "/search", {"query": "bees", "explain": "yes"}, 422),
        ("post", "/search", {"vector": {"bee": 3e38}}, 422),
        ("post", "/search", {"vector": {"bee": 1e7}}, 422),
        ("post", "/search", b'{"query": "bees", "k": NaN}', 422),
        ("post", "/documents", b'{"documents": [{"id": "\\ud800", "text": "x"}]}', 422),
        ("post", "/documents", {"documents": [{"id": "a\nb", "text": "x"}], "_key": True}, 422),
        ("delete", "/documents/a%0Ab", {"_key": True}, 422),
    ],
)
def test_bad_input_is_4xx_with_json_body(refusing_server, method, path, body, status):
    kwargs = {}
    headers = {"X-API-Key": KEY} if isinstance(body, dict) and body.pop("_key", False) else {}
    if isinstance(body, bytes):
        kwargs = {
            "content": body,
            "headers": {"content-type": "application/json", "X-API-Key": KEY},
        }
    elif body:
        kwargs = {"json": body, "headers": headers}
    elif headers:
        kwargs = {"headers": headers}
    r = httpx.request(method.upper(), refusing_server.url + path, timeout=30, **kwargs)
    assert r.status_code == status, r.text
    payload = r.json()
    assert isinstance(payload, dict) and isinstance(payload["error"], str), payload


def test_streamed_body_over_the_limit_is_413_with_json(refusing_server):
    def chunks():
        for _ in range(9 * 16):  # 9 MiB in 64 KiB chunks, no content-length
            yield b" " * 65536

    r = httpx.post(
        refusing_server.url + "/search",
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 413 and "larger than 20000 bytes" in r.json()["error"]


def _raw(url, data, wait):
    """Send raw bytes to the server, then read until it closes the connection (or ``wait``)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(data)
        start, got = time.monotonic(), b""
        try:
            while chunk := sock.recv(4096):
                got += chunk
        except TimeoutError:
            pass
        return got, time.monotonic() - start


def test_slow_headers_and_bodies_get_408_and_are_closed(refusing_server):
    got, took = _raw(refusing_server.url, b"POST /search HTTP/1.1\r\nHost: x\r\n", wait=20)
    assert got.startswith(b"HTTP/1.1 408") and b'"error"' in got and took < 10
    head = b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    got, took = _raw(refusing_server.url, head + b"Content-Length: 100\r\n\r\n{", wait=20)
    assert got.startswith(b"HTTP/1.1 408") and b"body not received" in got and took < 10


def test_concurrent_searches_and_upserts(server):
    errors, acked = [], []

    def searcher():
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for _ in range(30):
                r = c.post("/search", json={"query": "volcano lava eruption", "k": 5})
                if r.status_code != 200:
                    errors.append(r.text)

    def writer():
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for i in range(20):
                doc = {"id": f"c{i}", "text": f"lava volcano number {i}"}
                r = c.post("/documents", json={"documents": [doc]}, headers={"X-API-Key": KEY})
                if r.status_code == 200:
                    acked.append(doc["id"])
                else:
                    errors.append(r.text)

    threads = [threading.Thread(target=searcher) for _ in range(4)] + [
        threading.Thread(target=writer)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(acked) == 20
    for doc_id in acked:
        assert httpx.get(f"{server.url}/documents/{doc_id}", timeout=30).status_code == 200


def test_kill_9_loses_no_acknowledged_write(index_dir):
    srv = Server(index_dir, "--flush-threshold", "15").start()  # flushes and merges happen
    acked, stop = [], threading.Event()

    def writer():
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            i = 0
            while not stop.is_set():
                doc = {"id": f"k{i}", "text": f"glacier ice number {i}"}
                try:
                    r = c.post("/documents", json={"documents": [doc]}, headers={"X-API-Key": KEY})
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    acked.append(doc["id"])
                i += 1

    t = threading.Thread(target=writer)
    t.start()
    deadline = time.time() + 60
    while len(acked) < 40 and time.time() < deadline:
        time.sleep(0.05)
    srv.kill9()
    stop.set()
    t.join()
    assert len(acked) >= 40
    again = Server(index_dir).start()
    try:
        assert _missing(again.url, acked) == []
        stats = httpx.get(f"{again.url}/stats", timeout=30).json()
        assert stats["n_docs"] >= 300 + len(acked)
        r = httpx.post(f"{again.url}/search", json={"query": "glacier ice", "k": 3}, timeout=30)
        assert r.status_code == 200 and r.json()["hits"]
    finally:
        again.stop()
    assert os.path.isdir(index_dir) and not [
        p for p in os.listdir(index_dir.parent) if ".tmp-" in p
    ]


def test_openapi_schema_documents_every_endpoint(server):
    spec = httpx.get(server.url + "/openapi.json", timeout=30).json()
    for path in (
        "/search",
        "/search/batch",
        "/encode",
        "/documents",
        "/documents/{doc_id}",
        "/health",
        "/stats",
        "/metrics",
        "/refresh",
    ):
        assert path in spec["paths"], path
    assert "examples" in json.dumps(spec["components"]["schemas"]["SearchRequest"])
    one_of = spec["components"]["schemas"]["SearchRequest"]["oneOf"]
    assert one_of == [{"required": ["query"]}, {"required": ["vector"]}]
    responses = spec["paths"]["/search"]["post"]["responses"]
    assert "SearchResponse" in json.dumps(responses["200"]) and "ErrorResponse" in json.dumps(
        responses["422"]
    )


def test_load_test_is_bounded_and_loopback_only(server):
    from lsr.service.loadtest import run_load

    result = run_load(
        server.url, ["honey bees", "lava"], concurrency=4, duration=1.0, max_requests=40
    )
    assert result.requests == 40 and result.errors == 0 and result.p99_ms >= result.p50_ms
    with pytest.raises(ValueError, match="only targets loopback"):
        run_load("http://192.168.1.10:8000", ["x"], concurrency=1)
    with pytest.raises(ValueError, match="No lsr server answers"):
        run_load(f"http://127.0.0.1:{_free_port()}", ["x"], concurrency=1)


def test_every_accepted_id_is_addressable(server):
    c = httpx.Client(base_url=server.url, timeout=30, headers={"X-API-Key": KEY})
    ids = ["a/b", ".", "..", "50%", "?q#f", "é ü", "/lead", "trail/", "a//b"]
    docs = [{"id": d, "text": f"odd identifier number {i}"} for i, d in enumerate(ids)]
    assert c.post("/documents", json={"documents": docs}).status_code == 200
    for d in ids:
        path = "/documents/" + quote(d, safe="").replace(".", "%2E")  # clients drop . and ..
        r = c.get(path)
        assert r.status_code == 200 and r.json()["id"] == d, (d, r.text)
        assert c.delete(path).status_code == 200, d
        assert c.get(path).status_code == 404, d


def test_explain_is_bounded_to_the_first_hits(server):
    r = httpx.post(
        server.url + "/search",
        json={"query": "water city river music king honey", "k": 50, "explain": True},
        timeout=30,
    )
    hits = r.json()["hits"]
    assert len(hits) > 5 and all(h["terms"] for h in hits[:5])
    assert all(h["terms"] is None for h in hits[5:])
    for h in hits[:5]:
        assert sum(t["contribution"] for t in h["terms"]) == pytest.approx(h["score"], rel=1e-4)


def test_second_writer_is_refused_and_read_only_servers_are_not(server, index_dir):
    argv = ["serve", str(index_dir), "--port", str(_free_port())]
    done = subprocess.run([sys.executable, "-m", "lsr.service.cli", *argv], capture_output=True)
    err = done.stderr.decode()
    assert done.returncode == 2 and "is open for writing by another process (pid" in err, err
    assert main(["index", str(sample_dataset()), "--out", str(index_dir), "--overwrite"]) == 2
    reader = Server(index_dir, "--read-only", "--refresh-seconds", "0.2").start()
    try:
        r = httpx.post(
            reader.url + "/documents",
            json={"documents": [{"id": "r1", "text": "x"}]},
            headers={"X-API-Key": KEY},
            timeout=30,
        )
        assert r.status_code == 403 and "read-only" in r.json()["error"]
        r = httpx.post(reader.url + "/search", json={"query": "honey", "k": 3}, timeout=30)
        assert r.status_code == 200 and r.json()["hits"]
        # the reader sees what the writer acknowledges (its log), then what it flushes
        w = httpx.Client(base_url=server.url, timeout=30, headers={"X-API-Key": KEY})
        doc = {"id": "seen-by-reader", "text": "glacier ice honey bees"}
        assert w.post("/documents", json={"documents": [doc]}).status_code == 200
        query = {"query": "glacier honey", "k": 1, "filter": {"field": "_id", "eq": doc["id"]}}

        def reader_sees(present: bool) -> bool:
            deadline = time.time() + 30
            while time.time() < deadline:
                hits = httpx.post(reader.url + "/search", json=query, timeout=30).json()["hits"]
                got = httpx.get(f"{reader.url}/documents/{doc['id']}", timeout=30).status_code
                if (bool(hits), got == 200) == (present, present):
                    return True
                time.sleep(0.1)
            return False

        assert reader_sees(True)
        flushed = w.post("/refresh").json()
        assert flushed["changed"] and w.get("/stats").json()["buffer_docs"] == 0
        assert reader_sees(True)
        assert w.delete(f"/documents/{doc['id']}").status_code == 200
        assert reader_sees(False)
        # refresh is an admin action: the server was started with a key
        assert httpx.post(reader.url + "/refresh", timeout=30).status_code == 401
        admin = {"X-API-Key": KEY}
        assert httpx.post(reader.url + "/refresh", headers=admin, timeout=30).status_code == 200
    finally:
        reader.stop()


def test_disk_full_refuses_writes_with_503_and_loses_nothing(tmp_path):
    """A real full filesystem (a small tmpfs) under a running server."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)])
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights)")
    try:
        _disk_full_round(_index_sample(mnt / "idx"), mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _disk_full_round(index_dir, mnt):
    srv = Server(index_dir, "--flush-threshold", "5").start()
    c = httpx.Client(base_url=srv.url, timeout=30, headers={"X-API-Key": KEY})
    acked = []

    def write(i):
        doc = {"id": f"f{i}", "text": f"flood water level {i} " * 20}
        r = c.post("/documents", json={"documents": [doc]})
        if r.status_code == 200:
            acked.append(doc["id"])
        return r

    try:
        for i in range(5):
            assert write(i).status_code == 200
        deadline = time.time() + 60  # the flush of those 5 (the threshold) is done: a flush
        while c.get("/stats").json()["buffer_docs"] and time.time() < deadline:  # failing
            time.sleep(0.1)  # later would free its files' space for the writes below
        filler = mnt / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        os.close(fd)
        statuses = [write(i) for i in range(5, 40)]
        refused = [r for r in statuses if r.status_code != 200]
        assert refused and all(r.status_code == 503 for r in refused), [r.text for r in refused]
        assert int(refused[0].headers["retry-after"]) >= 1 and refused[0].json()["error"]
        assert c.post("/search", json={"query": "flood water", "k": 3}).status_code == 200
        health = c.get("/health").json()
        assert health["status"] == "degraded" and health["problems"], health
        stats = c.get("/stats").json()
        assert stats["writes"]["failures"] >= 1 or stats["flushes"]["failures"] >= 1
        assert stats["flushes"]["failures"] <= 3  # backed off, not retried on every write
        filler.unlink()
        deadline = time.time() + 60
        while write(1000 + len(acked)).status_code != 200 and time.time() < deadline:
            time.sleep(0.5)
        assert acked[-1].startswith("f10")
    finally:
        srv.kill9()
    again = Server(index_dir).start()
    try:
        assert _missing(again.url, acked) == []
    finally:
        again.stop()


def _missing(url, ids):
    """The ids the server at ``url`` does not return a document for."""
    with httpx.Client(base_url=url, timeout=30) as c:
        return [d for d in ids if c.get(f"/documents/{quote(d, safe='')}").status_code != 200]
