"""``POST /search/batch`` searches its queries together: one batched kernel call per algorithm,
with the same hits as one ``POST /search`` per query."""

import pytest
from fastapi.testclient import TestClient

from lsr import sample_dataset
from lsr.index import Index
from lsr.service.app import create_app
from lsr.service.cli import main


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    out = tmp_path_factory.mktemp("batch") / "idx"
    assert main(["index", str(sample_dataset()), "--out", str(out)]) == 0
    with TestClient(create_app(out)) as c:
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
