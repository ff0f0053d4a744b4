"""Stored documents and filters over REST and the CLI, against a real ``lsr serve``: hits
carry the fields asked for, filters match brute force over the stored records, and
``lsr search`` on the served directory sees what was written over REST."""

import json

import httpx
import pytest

from lsr.service.cli import main
from tests.service.test_service import KEY, Server, _index_sample

pytestmark = pytest.mark.http

NEW = [
    {"id": "n1", "title": "Honey harvest", "text": "bees honey comb", "fields": {"year": 2021}},
    {"id": "n2", "title": "Old honey", "text": "honey bees wax", "fields": {"year": 1999}},
    {"id": "n3", "title": "Lava honey", "text": "honey lava bees", "fields": {"year": 2024,
                                                                            "tags": ["x", "y"]}},
]  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    out = _index_sample(tmp_path_factory.mktemp("docs") / "idx")
    srv = Server(out).start()
    r = httpx.post(f"{srv.url}/documents", json={"documents": NEW}, headers={"X-API-Key": KEY})
    assert r.status_code == 200
    yield srv
    srv.stop()


def _search(srv, body, status=200):
    r = httpx.post(f"{srv.url}/search", json=body, timeout=30)
    assert r.status_code == status, r.text
    return r.json()


def test_hits_carry_the_fields_asked_for(served):
    hits = _search(served, {"query": "honey bees", "k": 20, "fields": ["title", "year"]})["hits"]
    by_id = {h["id"]: h["document"] for h in hits}
    assert by_id["n3"] == {"_id": "n3", "title": "Lava honey", "year": 2024}
    assert by_id["d146"] == {"_id": "d146", "title": "Bees 6"}
    assert all(h["document"] is None for h in _search(served, {"query": "honey"})["hits"])
    everything = _search(served, {"query": "lava honey", "k": 1, "fields": ["*"]})["hits"][0]
    n3 = {"_id": "n3", "title": "Lava honey", "text": "honey lava bees", "year": 2024}
    assert everything["document"] == {**n3, "tags": ["x", "y"]}


def test_filters_match_brute_force(served):
    all_hits = _search(served, {"query": "honey bees", "k": 100, "fields": ["*"]})["hits"]
    cases = [
        ({"field": "year", "gte": 2000}, lambda d: d.get("year", 0) >= 2000),
        ({"not": {"field": "year", "exists": True}}, lambda d: "year" not in d),
        ({"or": [{"field": "tags", "eq": "y"}, {"field": "title", "eq": "Bees 6"}]},
         lambda d: "y" in d.get("tags", []) or d.get("title") == "Bees 6"),
    ]  # fmt: skip
    for condition, predicate in cases:
        got = _search(served, {"query": "honey bees", "k": 10, "filter": condition})["hits"]
        expected = [h for h in all_hits if predicate(h["document"])][:10]
        assert [(h["id"], h["score"]) for h in got] == [(h["id"], h["score"]) for h in expected]
    batch = httpx.post(
        f"{served.url}/search/batch",
        json={"queries": [{"query": "honey", "filter": {"field": "year", "lt": 2000}},
                          {"query": "honey", "filter": {"field": "year", "gt": 2000}}]},
        timeout=30,
    ).json()["results"]  # fmt: skip
    assert [h["id"] for h in batch[0]["hits"]] == ["n2"]
    assert {h["id"] for h in batch[1]["hits"]} == {"n1", "n3"}


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"field": "year", "gtee": 1}, "unknown key 'gtee'"),
        ({"field": "yeer", "gte": 1}, "'yeer' is not stored"),
        ({"field": "title", "gte": 3}, "holds text"),
        ("year > 3", "valid"),
    ],
)
def test_bad_filters_are_422_with_the_reason(served, condition, message):
    body = _search(served, {"query": "honey", "filter": condition}, status=422)
    assert message in json.dumps(body)


def test_get_document_returns_the_stored_fields(served):
    r = httpx.get(f"{served.url}/documents/n1", timeout=30).json()
    n1 = {"_id": "n1", "title": "Honey harvest", "text": "bees honey comb", "year": 2021}
    assert r == {"id": "n1", "document": n1, "vector": None}
    with_vector = httpx.get(f"{served.url}/documents/n1?vector=true", timeout=30).json()
    assert set(with_vector["vector"]) >= {"honei", "bee", "comb"}  # Porter stems


def test_cli_search_sees_the_writes_of_the_server(served, capsys):
    index = str(served.index_dir)
    assert main(["search", index, "honey lava", "-k", "3", "--json", "--fields", "title"]) == 0
    hits = json.loads(capsys.readouterr().out)[0]["hits"]
    assert hits[0]["id"] == "n3" and hits[0]["document"]["title"] == "Lava honey"
    condition = '{"field": "year", "lte": 2000}'
    assert main(["search", index, "honey", "--filter", condition]) == 0
    table = capsys.readouterr().out
    assert "n2" in table and "Old honey | honey bees wax" in table and "n1" not in table
    r = httpx.delete(f"{served.url}/documents/n2", headers={"X-API-Key": KEY}, timeout=30)
    assert r.status_code == 200
    assert main(["search", index, "honey", "--filter", condition]) == 0
    assert "(no matching documents)" in capsys.readouterr().out
