"""Document encoding in worker processes: the same vectors and unknown words as in process,
a lower CPU priority, a dead worker replaced, and a server that writes through it."""

import os
import signal

import pytest
from fastapi.testclient import TestClient

from lsr import sample_dataset
from lsr.encoders import load_encoder
from lsr.encoding import encode_with_unknown
from lsr.errors import ConfigError
from lsr.service.app import create_app
from lsr.service.cli import main
from lsr.service.encode_pool import EncodePool


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    out = tmp_path_factory.mktemp("pool") / "idx"
    assert main(["index", str(sample_dataset()), "--out", str(out)]) == 0
    return out


def test_workers_encode_like_the_server_at_a_lower_priority_and_are_replaced(collection):
    texts = ["honey bees make honey", "a quokka in the lava", "zyzzyva"]
    expected = encode_with_unknown(load_encoder(collection / "encoder"), texts)
    pool = EncodePool(str(collection / "encoder"), workers=1, nice=5)
    try:
        vectors, unknown = pool.encode(texts)
        assert (vectors != expected[0]).nnz == 0 and unknown == expected[1]
        (pid,) = list(pool._pool._processes)
        assert os.getpriority(os.PRIO_PROCESS, pid) >= os.getpriority(os.PRIO_PROCESS, 0) + 5
        os.kill(pid, signal.SIGKILL)  # a worker that dies (out of memory, killed)
        vectors, unknown = pool.encode(texts)
        assert (vectors != expected[0]).nnz == 0 and unknown == expected[1]
    finally:
        pool.close()


def test_a_server_writes_through_its_workers(collection):
    with TestClient(create_app(collection, encode_workers=1)) as c:
        r = c.post("/documents", json={"documents": [{"id": "p1", "text": "honey zyzzyva"}]})
        assert r.status_code == 200 and r.json()["unknown_terms"] == {"p1": ["zyzzyva"]}
        r = c.post("/documents", json={"documents": [{"id": "p2", "text": "zyzzyva"}]})
        assert r.status_code == 422 and "cannot be found by any query" in r.json()["error"]
        assert c.get("/documents/p1").json()["document"]["text"] == "honey zyzzyva"
    with pytest.raises(ConfigError, match="encode_workers must be an integer >= 0"):
        create_app(collection, encode_workers=-1)
