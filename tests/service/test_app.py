"""The app in process (TestClient): ``POST /search/batch`` searches its queries together (one
batched kernel call per algorithm, the same hits as one ``POST /search`` per query), and the
error boundary (the project's errors are 4xx, anything else a logged 500)."""

import pytest
from fastapi.testclient import TestClient

from lsr import sample_dataset
from lsr.errors import InputError
from lsr.index import Index
from lsr.service.app import create_app
from lsr.service.cli import main
from tests.conftest import fill_disk


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    out = tmp_path_factory.mktemp("batch") / "idx"
    assert main(["index", str(sample_dataset()), "--out", str(out)]) == 0
    with TestClient(create_app(out), raise_server_exceptions=False) as c:
        yield c


QUERIES = [
    {"query": "how do bees make honey", "k": 3},
    {"query": "volcano lava", "k": 7, "explain": True},
    {"vector": {"bee": 1.0, "honei": 0.5}, "k": 5},
    {"query": "water", "k": 1},
    {"query": "flood water", "k": 4, "algorithm": "maxscore"},
]


def test_batch_is_one_kernel_call_per_algorithm(client, monkeypatch):
    calls = []
    search = Index.search

    def counting(self, queries, k=10, **options):
        calls.append((queries.shape[0], options.get("algorithm")))
        return search(self, queries, k, **options)

    monkeypatch.setattr(Index, "search", counting)
    r = client.post("/search/batch", json={"queries": QUERIES})
    assert r.status_code == 200, r.text
    assert sorted(calls) == [(1, "maxscore"), (4, "auto")]
    batch = r.json()["results"]
    monkeypatch.setattr(Index, "search", search)
    for q, got in zip(QUERIES, batch, strict=True):
        one = client.post("/search", json=q).json()["hits"]
        assert got["hits"] == one and len(one) <= q["k"]


def test_batch_k_overrides_every_query(client):
    r = client.post("/search/batch", json={"queries": QUERIES, "k": 2})
    for q, got in zip(QUERIES, r.json()["results"], strict=True):
        assert got["hits"] == client.post("/search", json={**q, "k": 2}).json()["hits"]
        assert len(got["hits"]) == 2


def test_project_errors_are_400_and_bugs_are_500(client, monkeypatch, caplog):
    state = client.app.state.service

    def refuse(requests, vectors=None):
        raise InputError("the query asks for something impossible")

    monkeypatch.setattr(state, "search", refuse)
    r = client.post("/search", json={"query": "bees"})
    assert r.status_code == 400 and r.json() == {"error": "the query asks for something impossible"}

    def bug(requests, vectors=None):
        raise ValueError("a bug, not the client's mistake")

    monkeypatch.setattr(state, "search", bug)
    r = client.post("/search", json={"query": "bees"})
    assert r.status_code == 500 and "internal server error" in r.json()["error"]
    assert "a bug, not the client's mistake" in caplog.text


def test_unknown_words_are_reported_or_refused(tmp_path):
    """BM25's vocabulary is fixed when the collection is built: a document's new words are
    listed in the answer (accept) or refuse the request (refuse); a document no query could
    find is always refused, naming its words."""
    out = tmp_path / "idx"
    assert main(["index", str(sample_dataset()), "--out", str(out)]) == 0

    def upsert(c, text, doc_id="u1"):
        return c.post("/documents", json={"documents": [{"id": doc_id, "text": text}]})

    with TestClient(create_app(out)) as c:
        r = upsert(c, "honey bees and zyzzyva quokkas")
        assert r.status_code == 200
        assert r.json()["unknown_terms"] == {"u1": ["zyzzyva", "quokka"]}
        assert upsert(c, "honey bees", "u2").json()["unknown_terms"] is None
        r = upsert(c, "zyzzyva quokkas", "u3")
        assert r.status_code == 422
        assert "'u3' cannot be found by any query" in r.json()["error"]
        assert "'zyzzyva'" in r.json()["error"]
        r = upsert(c, "   ", "u4")
        assert r.status_code == 422 and "no indexable text" in r.json()["error"]
        assert c.get("/documents/u3").status_code == 404
    with TestClient(create_app(out, unknown_words="refuse")) as c:
        r = upsert(c, "honey bees and zyzzyva", "u5")
        assert r.status_code == 422 and "--unknown-words refuse" in r.json()["error"]
        assert upsert(c, "honey bees", "u6").status_code == 200


def test_empty_vectors_are_refused_in_python(tmp_path):
    import numpy as np
    import scipy.sparse as sp

    from lsr.index import LiveIndex
    from lsr.index.errors import EmptyDocumentError

    out = tmp_path / "idx"
    assert main(["index", str(sample_dataset()), "--out", str(out)]) == 0
    with LiveIndex(out) as live:
        empty = sp.csr_array((2, len(live.vocab)), dtype=np.float32)
        with pytest.raises(EmptyDocumentError, match="'a' has an empty vector.*1 more"):
            live.upsert(empty, ["a", "b"])


def test_refresh_on_a_full_disk_answers_503_and_the_collection_stays(small_fs):
    """``POST /refresh`` flushes the write buffer; on a real, full filesystem the flush is
    refused with 503 and Retry-After, reads go on, and it succeeds once there is room."""
    out = small_fs / "idx"
    assert main(["index", str(sample_dataset()), "--out", str(out)]) == 0
    app = create_app(out, flush_threshold=10**6)
    with TestClient(app, raise_server_exceptions=False) as c:
        doc = {"id": "w1", "title": "Bees", "text": "honey bees in the hive"}
        assert c.post("/documents", json={"documents": [doc]}).status_code == 200
        filler = fill_disk(small_fs, chunk=512)
        r = c.post("/refresh")
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, r.text
        assert "flush" in r.json()["error"]
        health = c.get("/health").json()
        assert health["status"] == "degraded" and "flushes failing" in health["problems"][0]
        hits = c.post("/search", json={"query": "honey bees hive", "k": 3}).json()["hits"]
        assert "w1" in [h["id"] for h in hits]
        filler.unlink()
        r = c.post("/refresh")
        assert r.status_code == 200 and r.json()["changed"], r.text
        assert c.get("/stats").json()["buffer_docs"] == 0


def test_the_fast_path_answers_as_the_documented_routes(client):
    """The gateway answers the two search endpoints itself; the FastAPI routes behind it
    (what /docs documents) give the same hits and the same errors."""
    from fastapi.testclient import TestClient

    routes = TestClient(client.app.app, raise_server_exceptions=False)
    for body in QUERIES + [{"query": "bees", "fields": ["title"], "k": 2}]:
        fast, slow = client.post("/search", json=body), routes.post("/search", json=body)
        assert fast.status_code == slow.status_code == 200
        assert fast.json()["hits"] == slow.json()["hits"]
    batch = {"queries": QUERIES, "k": 3}
    assert (
        client.post("/search/batch", json=batch).json()["results"]
        == routes.post("/search/batch", json=batch).json()["results"]
    )
    for bad in ({"query": "bees", "k": 0}, {"query": "x", "vector": {"bee": 1.0}},
                {"query": "bees", "k": 100000}):  # fmt: skip
        fast, slow = client.post("/search", json=bad), routes.post("/search", json=bad)
        assert fast.status_code == slow.status_code == 422
        assert fast.json() == slow.json()
    fast = client.post("/search", content=b"{nope")
    slow = routes.post("/search", content=b"{nope", headers={"content-type": "application/json"})
    assert fast.status_code == slow.status_code == 422
    assert fast.json()["detail"][0]["type"] == slow.json()["detail"][0]["type"] == "json_invalid"


def test_concurrent_model_queries_are_encoded_in_batches(tmp_path):
    """Text queries for a model go through the query batcher: concurrent requests share
    encoder calls, and each gets the vectors it would get alone."""
    import asyncio
    import threading

    from lsr import BM25Encoder
    from lsr.service.metrics import Metrics
    from lsr.service.query_batcher import QueryBatcher

    texts = [f"bees honey {w}" for w in ("flower", "hive", "wax", "queen", "sting", "nectar")]
    encoder = BM25Encoder().fit(texts * 2)
    calls, gate = [], threading.Event()

    class SlowModel:  # the real encoder, slowed like a model and counting its calls
        def encode_queries(self, batch):
            calls.append(len(batch))
            gate.wait(5)
            return encoder.encode_queries(batch)

    batcher = QueryBatcher(SlowModel(), Metrics(), max_batch=64)

    async def run():
        first = asyncio.ensure_future(batcher.encode([texts[0]]))
        await asyncio.sleep(0.1)  # the first call is in the model: the rest queue behind it
        rest = [asyncio.ensure_future(batcher.encode([t])) for t in texts[1:]]
        await asyncio.sleep(0.1)
        gate.set()
        return await asyncio.gather(first, *rest)

    got = asyncio.run(run())
    batcher.close()
    assert calls == [1, len(texts) - 1]
    for text, vector in zip(texts, got, strict=True):
        assert (vector != encoder.encode_queries([text])).nnz == 0
