"""Running the service in production, over real HTTP (``lsr serve`` in a subprocess): the
startup line, access logs, Prometheus metrics, offline docs, the OpenAPI security scheme,
API keys with scopes and rate limits, deadlines, graceful shutdown on SIGTERM, a busy port,
config from a file and the environment, CORS, TLS, the load generator and the soak test."""

import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lsr.index import LiveIndex
from lsr.service.cli import main
from tests.service.test_service import KEY, Server, _free_port, _index_sample

pytestmark = pytest.mark.http

READER, WRITER, ADMIN = "reader-secret-1", "writer-secret-2", "admin-secret-3"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    return _index_sample(tmp_path_factory.mktemp("ops") / "idx")


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory):
    import hashlib

    path = tmp_path_factory.mktemp("keys") / "keys.yaml"
    path.write_text(
        "keys:\n"
        f"  - {{name: frontend, key: {READER}, scopes: [read]}}\n"
        f"  - {{name: indexer, key: {WRITER}, scopes: [read, write],"
        " rate_per_second: 1, burst: 3}\n"
        f"  - {{name: ops, key_sha256: {hashlib.sha256(ADMIN.encode()).hexdigest()},"
        " scopes: [read, write, admin]}\n",
        encoding="utf-8",
    )
    return path


class LoggedServer(Server):
    """A server without the test key, whose stderr is kept in a file (read while it runs
    and after it stops)."""

    def __init__(self, index_dir, *extra):
        super().__init__(index_dir, *extra, key=None)
        self.log = index_dir.parent / f"serve-{self.port}.log"


@pytest.fixture
def secured(index_dir, keys_file):
    srv = LoggedServer(
        index_dir, "--api-keys-file", str(keys_file), "--access-log", "json", "--read-only",
        "--threads", "1",
    ).start()  # fmt: skip
    yield srv
    srv.stop()


def test_startup_line_access_log_and_request_ids(secured):
    first = secured.stderr().splitlines()[0]
    assert first.startswith(f"lsr serve: http://127.0.0.1:{secured.port} | collection ")
    assert "300 documents" in first and "encoder bm25" in first
    assert "auth on (3 keys, for writes)" in first and "read-only" in first
    assert "| 1 search threads |" in first  # --threads

    c = httpx.Client(base_url=secured.url, timeout=30)
    r = c.post("/search", json={"query": "honey bees", "k": 4}, headers={"X-Request-Id": "abc-1"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "abc-1"
    generated = c.get("/health").headers["x-request-id"]
    assert generated and generated != "abc-1"
    odd = c.get("/stats", headers={"X-Request-Id": "a b"}).headers["x-request-id"]
    assert odd != "a b"  # not a sane id: a new one
    with socket.create_connection(("127.0.0.1", secured.port), timeout=30) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bad: \x7f\x01\r\n\r\n")
        answer = s.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 400")
    assert answer.endswith('{"error": "Invalid HTTP request received."}')
    c.post("/documents", json={"documents": [{"id": "x", "text": "t"}]},
           headers={"X-API-Key": WRITER})  # fmt: skip
    time.sleep(0.3)
    lines = [json.loads(line) for line in secured.stderr().splitlines()[1:] if line.startswith("{")]
    search = next(e for e in lines if e["request_id"] == "abc-1")
    assert search["method"] == "POST" and search["path"] == "/search" and search["status"] == 200
    assert search["k"] == 4 and search["hits"] == 4 and search["ms"] > 0 and "time" in search
    write = next(e for e in lines if e["path"] == "/documents")
    assert write["status"] == 403 and write["key"] == "indexer"  # a read-only server
    assert WRITER not in secured.stderr() and READER not in secured.stderr()


def test_metrics_parse_with_help_types_and_histograms(secured):
    c = httpx.Client(base_url=secured.url, timeout=30)
    for _ in range(3):
        c.post("/search", json={"query": "volcano lava"})
    c.post("/search/batch", json={"queries": [{"query": "bees"}]})
    text = c.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "# HELP lsr_request_duration_seconds" in text
    latency = families["lsr_request_duration_seconds"]
    assert latency.type == "histogram"
    count = next(
        s.value for s in latency.samples
        if s.name.endswith("_count") and s.labels == {"endpoint": "/search", "method": "POST"}
    )  # fmt: skip
    assert count >= 3
    buckets = [s for s in latency.samples if s.name.endswith("_bucket")]
    assert any(s.labels["le"] == "+Inf" for s in buckets)
    assert families["lsr_search_seconds"].type == "histogram"
    for name in ("lsr_documents", "lsr_segments", "lsr_wal_bytes", "lsr_requests_in_flight",
                 "lsr_query_encode_queue", "process_resident_memory_bytes"):  # fmt: skip
        assert name in families, name
    assert families["lsr_documents"].samples[0].value == 300
    assert families["lsr_merges"].type == "counter" and "lsr_merge_seconds" in families


def test_docs_work_offline_and_openapi_declares_the_key(secured):
    c = httpx.Client(base_url=secured.url, timeout=30)
    for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = c.get(page).text
        assert f"/docs/assets/{asset}" in html
        assert "cdn.jsdelivr" not in html and "fonts.googleapis" not in html
        script = c.get(f"/docs/assets/{asset}")
        assert script.status_code == 200 and len(script.content) > 100_000
    assert c.get("/docs/assets/swagger-ui.css").status_code == 200
    spec = c.get("/openapi.json").json()
    scheme = spec["components"]["securitySchemes"]["ApiKey"]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert spec["paths"]["/documents"]["post"]["security"] == [{"ApiKey": []}]
    assert spec["paths"]["/search"]["post"]["tags"] == ["search"]
    assert {t["name"] for t in spec["tags"]} == {"search", "documents", "operations"}
    assert "timeout_ms" in spec["components"]["schemas"]["SearchRequest"]["properties"]


def test_scopes_key_rotation_and_rate_limits(index_dir, keys_file, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(index_dir, other)
    srv = LoggedServer(other, "--api-keys-file", str(keys_file), "--api-key", KEY).start()
    try:
        c = httpx.Client(base_url=srv.url, timeout=30)

        def upsert(key=None):
            headers = {"X-API-Key": key} if key else {}
            doc = {"documents": [{"id": "r1", "text": "honey"}]}
            return c.post("/documents", json=doc, headers=headers)

        assert c.post("/search", json={"query": "bees"}).status_code == 200  # reads are open
        assert upsert().status_code == 401
        assert upsert("not-a-key").status_code == 401
        denied = upsert(READER)
        assert denied.status_code == 403 and "lacks the 'write' scope" in denied.json()["error"]
        assert upsert(KEY).status_code == 200  # the old key and the new ones, at once
        assert c.post("/refresh", headers={"X-API-Key": WRITER}).status_code == 403
        assert c.post("/refresh", headers={"X-API-Key": ADMIN}).status_code == 200
        # the indexer key: 1 request/s, bursts of 3 (one spent on /refresh above)
        answers = [upsert(WRITER) for _ in range(4)]
        limited = [a for a in answers if a.status_code == 429]
        assert limited and all(a.status_code in (200, 429) for a in answers)
        assert int(limited[0].headers["retry-after"]) >= 1
        assert limited[0].json() == {"error": "rate limit of 'indexer' exceeded"}
        time.sleep(1.1)
        assert upsert(WRITER).status_code == 200
    finally:
        srv.stop()


def test_bad_key_files_are_refused_before_loading(index_dir, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    for text, message in [
        ("keys: [{name: a, key: short, scopes: [read]}]", "at least 8 characters"),
        ("keys: [{name: a, key: long-enough, scopes: [root]}]", "'scopes' must be"),
        ("keys: [{name: a, key: long-enough, scopes: [read], rate_per_second: -1}]", "> 0"),
        ("[{name: a, key: long-enough, scopes: [read]}, {name: a, key: other-key, "
         "scopes: [read]}]", "names must be unique"),  # fmt: skip
    ]:
        bad.write_text(text, encoding="utf-8")
        assert main(["serve", str(index_dir), "--api-keys-file", str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_deadline_answers_504_and_the_server_goes_on(index_dir, tmp_path):
    other = tmp_path / "slow"
    shutil.copytree(index_dir, other)
    srv = LoggedServer(other, "--timeout-ms", "5000").start()
    try:
        c = httpx.Client(base_url=srv.url, timeout=60)
        heavy = {"query": "water flood lava volcano bees honey chess king astronomy star",
                 "k": 300, "explain": True}  # fmt: skip
        r = c.post("/search/batch", json={"queries": [heavy] * 256, "timeout_ms": 1})
        assert r.status_code == 504
        assert r.json() == {
            "error": "the request did not finish within its deadline of 1 ms (timeout_ms)"
        }
        over = c.post("/search", json={"query": "bees", "timeout_ms": 6000})
        assert over.status_code == 422 and "at most 5000" in over.json()["error"]
        assert c.post("/search", json={"query": "bees", "timeout_ms": 2000}).status_code == 200
        metrics = c.get("/metrics").text
        assert "lsr_deadline_exceeded_total 1.0" in metrics
    finally:
        srv.stop()


def test_sigterm_drains_requests_in_flight_and_closes_the_collection(index_dir, tmp_path):
    other = tmp_path / "drain"
    shutil.copytree(index_dir, other)
    srv = LoggedServer(other, "--api-key", KEY).start()
    acknowledged = httpx.post(
        srv.url + "/documents",
        json={"documents": [{"id": "kept", "text": "acknowledged before the signal"}]},
        headers={"X-API-Key": KEY},
        timeout=30,
    )
    assert acknowledged.status_code == 200
    body = json.dumps({"documents": [{"id": "in-flight", "text": "sent across the signal"}]})
    head = (
        f"POST /documents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {KEY}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(head + body[:10].encode())  # the request is in flight, its body half sent
        time.sleep(0.3)
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert srv.proc.poll() is None  # still serving the request in flight
        s.sendall(body[10:].encode())
        answer = s.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 200"), answer
    assert srv.proc.wait(timeout=60) == 0
    assert srv.stderr().rstrip().endswith("lsr serve: stopped; the collection is closed")
    with httpx.Client() as c, pytest.raises(httpx.ConnectError):
        c.get(srv.url + "/health", timeout=2)
    with LiveIndex(other) as live:  # the writer lock is free and nothing was lost
        assert live.document("kept") is not None and live.document("in-flight") is not None


def test_busy_port_and_missing_collection_are_one_line_before_loading(index_dir, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "lsr.service.cli", "serve", str(index_dir), "--port",
             str(port)], capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"lsr serve: error: cannot listen on 127.0.0.1:{port}: the port is in use (is another "
        "server running? choose another --port)."
    )
    assert time.monotonic() - started < 30
    with LiveIndex(index_dir) as live:  # the collection was never opened for writing
        assert live.stats()["n_docs"] == 300
    missing = subprocess.run(
        [sys.executable, "-m", "lsr.service.cli", "serve", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "No index at" in missing.stderr


def test_config_file_and_environment(index_dir, tmp_path):
    other = tmp_path / "configured"
    shutil.copytree(index_dir, other)
    port = _free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(f"port: {port}\naccess-log: json\nmax_k: 7\ncors_origin: [http://a.example]\n")
    srv = LoggedServer(other, "--config", str(config))
    srv.port, srv.url = port, f"http://127.0.0.1:{port}"
    import os

    env_before = os.environ.get("LSR_MAX_K")
    os.environ["LSR_MAX_K"] = "5"  # the environment wins over the file
    try:
        srv.start()
    finally:
        if env_before is None:
            del os.environ["LSR_MAX_K"]
        else:
            os.environ["LSR_MAX_K"] = env_before
    try:
        c = httpx.Client(base_url=srv.url, timeout=30)
        assert c.post("/search", json={"query": "bees", "k": 6}).json()["error"] == (
            "k must be at most 5"
        )
        r = c.post("/search", json={"query": "bees"}, headers={"Origin": "http://a.example"})
        assert r.headers["access-control-allow-origin"] == "http://a.example"
        r = c.post("/search", json={"query": "bees"}, headers={"Origin": "http://b.example"})
        assert "access-control-allow-origin" not in r.headers
        pre = c.options("/search", headers={"Origin": "http://a.example",
                                            "Access-Control-Request-Method": "POST"})  # fmt: skip
        assert pre.status_code == 200
        assert '"path":"/search"' in srv.stderr()
    finally:
        srv.stop()


def test_cors_is_off_by_default(secured):
    r = httpx.post(secured.url + "/search", json={"query": "bees"},
                   headers={"Origin": "http://a.example"}, timeout=30)  # fmt: skip
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_options_are_passed_through(index_dir, tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    other = tmp_path / "tls"
    shutil.copytree(index_dir, other)
    port = _free_port()
    log = tmp_path / "tls.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lsr.service.cli", "serve", str(other), "--port", str(port),
         "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )  # fmt: skip
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        deadline = time.time() + 120
        while True:
            try:
                r = httpx.post(f"https://127.0.0.1:{port}/search", json={"query": "bees"},
                               verify=trust, timeout=2)  # fmt: skip
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.time() < deadline, log.read_text()
                time.sleep(0.3)
        assert r.status_code == 200 and r.json()["hits"]
        assert log.read_text().startswith(f"lsr serve: https://127.0.0.1:{port} |")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")
def test_loadtest_drives_wrk_against_servers_and_the_raw_reference(secured, capsys):
    from lsr import sample_dataset

    assert main(["loadtest", secured.url, "--queries", str(sample_dataset()), "--concurrency",
                 "4", "--duration", "1", "--rounds", "1", "--json"]) == 0  # fmt: skip
    [report] = json.loads(capsys.readouterr().out)
    assert report["generator"] == "wrk" and set(report["median"]) == {"raw-asgi", secured.url}
    for figures in report["median"].values():
        assert figures["requests"] > 0 and figures["errors"] == 0 and figures["qps"] > 0
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]


def test_soak_reports_throughput_latency_errors_and_memory(index_dir, tmp_path):
    from lsr.service.soak import run_soak

    other = tmp_path / "soak"
    shutil.copytree(index_dir, other)
    srv = LoggedServer(other, "--api-key", KEY).start()
    try:
        queries = ["honey bees", "volcano lava", "chess king", "flood water"]
        report = run_soak(srv.url, queries, duration=3, rate=40, write_fraction=0.25,
                          api_key=KEY, interval=1, clients=4, keep=5)  # fmt: skip
        assert report.errors == 0 and report.requests == 120
        assert len(report.intervals) == 3 and all(i.writes and i.searches for i in report.intervals)
        assert report.memory_start > 10 * 2**20 and report.memory_end > 10 * 2**20
        assert all(i.memory > 10 * 2**20 for i in report.intervals)
        stats = httpx.get(srv.url + "/stats", timeout=30).json()
        assert 300 < stats["n_docs"] <= 305  # at most ``keep`` soak documents are left
        assert any("server memory" in line for line in report.lines())
    finally:
        srv.stop()
