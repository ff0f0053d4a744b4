"""The REST service over real HTTP (uvicorn on 127.0.0.1), including kill -9 and restart."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from lsr import sample_dataset
from service.cli import main

KEY = "test-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``lsr serve`` in a subprocess on a free loopback port."""

    def __init__(self, index_dir, *extra):
        self.index_dir = index_dir
        self.extra = extra
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        argv = [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            str(self.index_dir),
            "--port",
            str(self.port),
            "--api-key",
            KEY,
            *self.extra,
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read().decode()[-2000:])
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

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


LIMITS = ("--max-k", "100", "--max-batch", "4", "--max-body-bytes", "20000")


@pytest.fixture
def server(index_dir):
    srv = Server(index_dir, *LIMITS).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def refusing_server(tmp_path_factory):
    """One server for all the bad-input cases: each request is refused, so none changes what
    the next one sees (and the server must stay healthy through all of them)."""
    srv = Server(_index_sample(tmp_path_factory.mktemp("refusing") / "idx"), *LIMITS).start()
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
    assert c.get("/documents/new-1").json()["vector"]
    assert c.get("/documents/d001").status_code == 200
    assert c.delete("/documents/new-1", headers={"X-API-Key": KEY}).status_code == 200
    assert c.get("/documents/new-1").status_code == 404
    assert c.delete("/documents/new-1", headers={"X-API-Key": KEY}).status_code == 404
    stats = c.get("/stats").json()
    assert stats["n_docs"] == 300 and stats["last_seq"] == 2
    metrics = c.get("/metrics").text
    assert (
        'lsr_requests_total{route="/search",status="200"}' in metrics
        and "lsr_documents 300" in metrics
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
    ],
)
def test_bad_input_is_4xx_with_json_body(refusing_server, method, path, body, status):
    kwargs = {}
    headers = {"X-API-Key": KEY} if isinstance(body, dict) and body.pop("_key", False) else {}
    if isinstance(body, bytes):
        kwargs = {"content": body, "headers": {"content-type": "application/json"}}
    elif body is not None:
        kwargs = {"json": body, "headers": headers}
    r = getattr(httpx, method)(refusing_server.url + path, timeout=30, **kwargs)
    assert r.status_code == status, r.text
    payload = r.json()
    assert isinstance(payload, dict) and ("error" in payload or "detail" in payload)


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
    srv = Server(index_dir, "--merge-threshold", "15").start()  # merges happen during the run
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
        missing = [
            d
            for d in acked
            if httpx.get(f"{again.url}/documents/{d}", timeout=30).status_code != 200
        ]
        assert missing == []
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
    ):
        assert path in spec["paths"], path
    assert "examples" in json.dumps(spec["components"]["schemas"]["SearchRequest"])
    responses = spec["paths"]["/search"]["post"]["responses"]
    assert "SearchResponse" in json.dumps(responses["200"]) and "ErrorResponse" in json.dumps(
        responses["422"]
    )


def test_load_test_is_bounded_and_loopback_only(server):
    from service.loadtest import run_load

    result = run_load(
        server.url, ["honey bees", "lava"], concurrency=4, duration=1.0, max_requests=40
    )
    assert result.requests == 40 and result.errors == 0 and result.p99_ms >= result.p50_ms
    with pytest.raises(ValueError, match="only targets loopback"):
        run_load("http://192.168.1.10:8000", ["x"], concurrency=1)
    with pytest.raises(ValueError, match="No lsr server answers"):
        run_load(f"http://127.0.0.1:{_free_port()}", ["x"], concurrency=1)
