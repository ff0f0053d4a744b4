"""``lsr serve --workers N`` over real HTTP: one writer and readers in separate processes on
one port; writes relayed to the writer and acknowledged once, searches and reads by id on
every worker, metrics and rate limits for the server as a whole, a killed worker replaced
without losing an acknowledged write, and an orderly stop."""

import json
import os
import shutil
import signal
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lsr.index import LiveIndex
from tests.service.test_service import KEY, Server, _index_sample

pytestmark = pytest.mark.http


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return _index_sample(tmp_path_factory.mktemp("workers") / "idx")


def _start(sample, tmp_path, *extra, key=KEY):
    index = tmp_path / "idx"
    shutil.copytree(sample, index)
    srv = Server(index, "--workers", "2", *extra, key=key, log=tmp_path / "serve.log").start()
    deadline = time.time() + 120  # /health answers once one worker is up; wait for all
    while "lsr serve: http" not in srv.stderr() and time.time() < deadline:
        time.sleep(0.2)
    return srv


def _fresh(url: str, method: str, path: str, **kwargs) -> httpx.Response:
    """A request on a new connection (the kernel hands each to one of the workers)."""
    with httpx.Client(base_url=url, timeout=30) as c:
        return c.request(method, path, **kwargs)


def _workers(url: str, tries: int = 200) -> dict[str, int]:
    """Role -> pid of the workers that answered ``/stats`` on new connections."""
    seen = {}
    for _ in range(tries):
        worker = _fresh(url, "GET", "/stats").json()["worker"]
        seen[worker["role"]] = worker["pid"]
        if len(seen) == 2:
            break
    return seen


def _metric(url: str, name: str) -> list:
    text = _fresh(url, "GET", "/metrics").text
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def _upsert(url: str, doc_id: str, text: str, key: str = KEY) -> httpx.Response:
    body = {"documents": [{"id": doc_id, "text": text}]}
    return _fresh(url, "POST", "/documents", json=body, headers={"X-API-Key": key})


def test_workers_share_the_port_relay_writes_and_count_once(sample, tmp_path):
    srv = _start(sample, tmp_path, "--refresh-seconds", "0.2", "--access-log", "json")
    try:
        assert "| 2 workers (1 writer, 1 reader) | 2 search threads each |" in srv.stderr()
        assert set(_workers(srv.url)) == {"writer", "reader"}  # both answer on the port
        for _ in range(8):  # whichever worker answers: writes are accepted (a reader relays)
            health = _fresh(srv.url, "GET", "/health").json()
            assert health == {"status": "ok", "documents": health["documents"],
                              "writable": True, "problems": []}  # fmt: skip
        seqs = []
        for i in range(12):  # each on a new connection: readers relay them to the writer
            answer = _upsert(srv.url, f"w{i}", f"honeybee colony number{i}")
            assert answer.status_code == 200, answer.text
            seqs.append(answer.json()["seq"])
            got = _fresh(srv.url, "GET", f"/documents/w{i}")  # reads by id are real-time
            assert got.status_code == 200 and got.json()["document"]["text"].endswith(f"{i}")
        assert seqs == sorted(seqs) and len(set(seqs)) == 12  # one log, one sequence
        assert (
            _fresh(srv.url, "DELETE", "/documents/w0", headers={"X-API-Key": KEY}).json()["deleted"]
            == "w0"
        )
        time.sleep(5.5)  # the writer closes connections idle for 5 s: readers open new ones
        for i in range(12, 16):
            assert _upsert(srv.url, f"w{i}", f"honeybee colony number{i}").status_code == 200
        refused = _fresh(srv.url, "POST", "/documents", json={"documents": []})
        assert refused.status_code == 401  # the writer checks the key of a relayed write
        time.sleep(1.0)  # the readers' refresh
        for _ in range(10):  # every worker's searches see the writes, after its refresh
            hits = _fresh(srv.url, "POST", "/search", json={"query": "honeybee colony", "k": 20})
            ids = {h["id"] for h in hits.json()["hits"]}
            assert {f"w{i}" for i in range(1, 16)} <= ids and "w0" not in ids
        # metrics add up the workers' figures, and count a relayed request once
        requests = _metric(srv.url, "lsr_requests_total")
        posts = [s for s in requests if s.labels["endpoint"] == "/documents"]
        assert sum(s.value for s in posts if s.labels["status"] == "200") == 16
        assert sum(s.value for s in posts if s.labels["status"] == "401") == 1
        each = _metric(srv.url, "lsr_worker_resident_memory_bytes")
        assert sorted(s.labels["role"] for s in each) == ["reader", "writer"]
        (total,) = _metric(srv.url, "lsr_server_resident_memory_bytes")
        assert total.value >= sum(s.value for s in each) * 0.9 > 0
        (documents,) = _metric(srv.url, "lsr_documents")  # the writer's collection figures
        assert documents.value == LiveIndex(sample, read_only=True).n_docs + 15
    finally:
        srv.stop()
    # one access log line per request, relayed ones included, with the key's name
    lines = [json.loads(x) for x in srv.stderr().splitlines() if x.startswith("{")]
    writes = [x for x in lines if x["method"] == "POST" and x["path"] == "/documents"]
    assert len(writes) == 17 and sum(x["key"] == "default" for x in writes) == 16


def test_a_killed_worker_is_replaced_and_no_acknowledged_write_is_lost(sample, tmp_path):
    srv = _start(sample, tmp_path, "--refresh-seconds", "0.2")
    acknowledged, refused, now = [], 0, {}
    try:
        pids = _workers(srv.url)
        os.kill(pids["reader"], signal.SIGKILL)
        for i in range(5):  # the writer answers alone meanwhile
            assert _upsert(srv.url, f"a{i}", "before the crash").status_code == 200
            acknowledged.append(f"a{i}")
        os.kill(pids["writer"], signal.SIGKILL)
        deadline = time.time() + 120
        i = 0
        while time.time() < deadline and len(acknowledged) < 25:
            try:
                answer = _upsert(srv.url, f"b{i}", "across the writer's restart")
            except httpx.TransportError:
                answer = None  # no worker accepting at this instant
            if answer is not None and answer.status_code == 200:
                acknowledged.append(f"b{i}")
            else:
                refused += 1
                if answer is not None:  # a reader without its writer says when to retry
                    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
                time.sleep(0.1)
            i += 1
        assert len(acknowledged) == 25
        log = srv.stderr()
        assert "worker 1 (reader) exited with status -9; starting another" in log
        assert "worker 0 (writer) exited with status -9; starting another" in log
        now = _workers(srv.url)
        assert now.keys() == pids.keys() and not set(now.values()) & set(pids.values())
        for doc_id in acknowledged:
            assert _fresh(srv.url, "GET", f"/documents/{doc_id}").status_code == 200
    finally:
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=120) == 0
    assert srv.stderr().rstrip().endswith("lsr serve: stopped; the collection is closed")
    for pid in now.values():  # no worker outlives the server
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with LiveIndex(srv.index_dir) as live:  # the writer lock is free and nothing was lost
        assert all(live.document(d) is not None for d in acknowledged)


def test_rate_limits_hold_for_the_whole_server(sample, tmp_path):
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        "keys:\n  - {name: app, key: app-secret-1, scopes: [read], rate_per_second: 1, burst: 4}\n",
        encoding="utf-8",
    )
    srv = _start(sample, tmp_path, "--api-keys-file", str(keys), "--protect-reads", key=None)
    try:
        start = time.monotonic()
        statuses = [
            _fresh(
                srv.url,
                "POST",
                "/search",
                json={"query": "bees"},
                headers={"X-API-Key": "app-secret-1"},
            ).status_code  # fmt: skip
            for _ in range(16)
        ]
        elapsed = time.monotonic() - start
        assert set(statuses) == {200, 429}
        # per process the limit would let through twice the burst: the workers share it
        assert statuses.count(200) <= 4 + elapsed * 1 + 1
    finally:
        srv.stop()


def test_read_only_workers_and_a_worker_that_cannot_start(sample, tmp_path):
    srv = _start(sample, tmp_path, "--read-only")
    try:
        assert "| 2 workers (2 readers) |" in srv.stderr()
        assert _workers(srv.url).keys() == {"reader"}
        write = _upsert(srv.url, "x", "no writer to relay to")
        assert write.status_code == 403 and "read-only" in write.json()["error"]
        assert _fresh(srv.url, "GET", "/metrics").status_code == 200  # added up by each
    finally:
        srv.stop()
    bad = Server(srv.index_dir, "--workers", "2", "--encoder", str(tmp_path / "missing"),
                 log=tmp_path / "bad.log")  # fmt: skip
    with pytest.raises(RuntimeError):
        bad.start()
    assert bad.proc.wait(timeout=60) == 2
    assert bad.stderr().strip().splitlines()[-1].startswith("lsr serve: error:")
