"""Encoding, sharded search and serving on a real local Ray cluster (two raylets)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import scipy.sparse as sp

import lsr
from lsr import BM25Encoder, load_encoder, read_queries, sample_dataset
from lsr.errors import InputError
from lsr.index import LiveIndex
from lsr.index.cluster import read_manifest, shard_of
from lsr.index.errors import ShardsUnavailableError
from lsr.pipeline import Searcher, encode_to_file, index_corpus
from lsr.pipeline.cluster import init_ray
from lsr.pipeline.sharding import index_sharded
from lsr.vector_files import open_vectors
from tests.conftest import shared_path
from tests.index.test_cluster import _corpus
from tests.service.test_service import KEY, Server

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _lsr(*args, env, timeout=600):
    return subprocess.run([sys.executable, "-m", "lsr.service.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def _rows(path):
    ids, parts = [], []
    for vectors, batch in open_vectors(path).batches(100_000):
        ids += batch
        parts.append(vectors)
    return ids, sp.vstack(parts, format="csr")


def _assert_identical(a, b):
    (ids_a, m_a), (ids_b, m_b) = _rows(a), _rows(b)
    assert ids_a == ids_b
    assert np.array_equal(m_a.indptr, m_b.indptr)
    assert np.array_equal(m_a.indices, m_b.indices)
    assert np.array_equal(m_a.data.view(np.uint32), m_b.data.view(np.uint32))  # bit for bit


def _encoders():
    return ["bm25", str(shared_path("models", "splade-tiny"))]


@pytest.mark.parametrize("which", [0, 1], ids=["bm25", "splade-tiny"])
def test_encoding_on_ray_is_bit_identical_to_one_process(tmp_path, ray_address, ray_env, which):
    encoder = _encoders()[which]
    one, parts = tmp_path / "one.parquet", tmp_path / "parts"
    done = _lsr("encode", sample_dataset(), "--encoder", encoder, "--out", one,
                "--batch-size", 16, env=ray_env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = _lsr("encode", sample_dataset(), "--encoder", encoder, "--out", parts, "--ray",
                ray_address, "--chunk", 40, "--batch-size", 16, "--concurrency", 2, "--json",
                env=ray_env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["parts"] == 7 and summary["parts_encoded"] == 7  # 40 -> 48: whole batches
    _assert_identical(one, parts)
    again = _lsr("encode", sample_dataset(), "--encoder", encoder, "--out", parts, "--ray",
                 ray_address, "--chunk", 40, "--batch-size", 16, env=ray_env)  # fmt: skip
    assert again.returncode == 2 and "finished" in again.stderr  # refused: nothing to redo
    built = _lsr("index", parts, "--encoder", parts / "encoder", "--out", tmp_path / "idx",
                 env=ray_env)  # fmt: skip
    assert built.returncode == 0, built.stderr


def _wait_for_parts(out, n, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(list(out.glob("part-*.parquet"))) >= n:
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError("no parts were written")


def test_encoding_resumes_after_killed_workers_and_a_killed_driver(tmp_path, ray_address, ray_env):
    model = _encoders()[1]
    one, out = tmp_path / "one.parquet", tmp_path / "parts"
    encode_to_file(sample_dataset(), load_encoder(model), one, batch_size=8)
    argv = [sys.executable, "-m", "lsr.service.cli", "encode", str(sample_dataset()),
            "--encoder", model, "--out", str(out), "--ray", ray_address, "--chunk", "16",
            "--batch-size", "8", "--json"]  # fmt: skip

    # 1. kill -9 an encoding worker mid-run: the run ends (Ray retries its part, or the run
    #    fails), and the same command finishes it without encoding the written parts again
    proc = subprocess.Popen(argv, env=ray_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_parts(out, 2, proc)
    worker = int(next((out / ".workers").iterdir()).name)
    os.kill(worker, signal.SIGKILL)
    proc.wait(timeout=600)
    if proc.returncode != 0:
        written = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
        done = subprocess.run(argv, env=ray_env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["parts_resumed"] == len(written)
        assert all((out / n).stat().st_mtime_ns == t for n, t in written.items())
    _assert_identical(one, out)

    # 2. kill -9 the driver mid-run (a crash): running the command again resumes
    shutil.rmtree(out)
    proc = subprocess.Popen(argv, env=ray_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_parts(out, 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    time.sleep(1)  # a worker of the dead job may still finish the part it was writing
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    assert 3 <= len(written) < 19
    done = subprocess.run(argv, env=ray_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["parts_resumed"] >= len(written) - 1 and summary["parts"] == 19
    kept = [n for n, t in written.items() if (out / n).stat().st_mtime_ns == t]
    assert len(kept) >= summary["parts_resumed"] - 1  # finished parts were not re-encoded
    _assert_identical(one, out)


def _texts():
    texts = list(read_queries(sample_dataset() / "queries.jsonl").values())
    return texts + [t.split()[0] for t in texts]


def _same(a, b):
    assert len(a) == len(b)
    for i in range(len(a)):
        assert (a[i].ids, a[i].scores) == (b[i].ids, b[i].scores), i


def test_sharded_search_on_ray_equals_one_index(tmp_path, ray_address):
    corpus = _corpus(tmp_path)
    splade = load_encoder(shared_path("models", "splade-tiny"))
    vectors = tmp_path / "splade.parquet"
    encode_to_file(corpus, splade, vectors, batch_size=64)
    texts = _texts()
    doomed = [f"d{i:03d}" for i in range(2, 301, 9)]
    condition = {"field": "group", "in": [0, 2]}
    nodes = sum(1 for node in init_ray(ray_address).nodes() if node["Alive"])
    for shards, kind in ((2, "bm25"), (3, "bm25"), (3, "splade"), (2, "splade-text")):
        root, single = tmp_path / f"cluster-{kind}-{shards}", tmp_path / f"single-{kind}-{shards}"
        source = vectors if kind == "splade" else corpus  # vectors: nothing stored
        encoder = BM25Encoder("lucene") if kind == "bm25" else splade
        index_corpus(source, encoder, single, progress=False)
        index_sharded([source], encoder, root, shards)
        cluster = lsr.connect(ray_address, cluster=root, encoder=encoder)
        try:
            assert cluster.n_docs == 300
            assert len(set(cluster.transport.nodes())) == min(shards, nodes)  # spread
            with Searcher.open(single, encoder=encoder) as one:
                _same(one.search(texts, 30), cluster.search(texts, 30))
                if kind != "splade":
                    _same(one.search(texts, 15, filter=condition),
                          cluster.search(texts, 15, filter=condition))  # fmt: skip
            with LiveIndex(single) as writer:
                writer.delete(doomed)
            assert cluster.delete(doomed) == doomed
            with Searcher.open(single, encoder=encoder) as one:
                _same(one.search(texts, 30), cluster.search(texts, 30))
                fields = None if kind == "splade" else ["title", "group"]
                a = one.search(texts[:3], 5, fields=fields)
                b = cluster.search(texts[:3], 5, fields=fields)
                assert [h.documents for h in a] == [h.documents for h in b]
        finally:
            cluster.shutdown()
            cluster.close()


def test_serve_on_ray_answers_503_while_a_shard_is_down_and_loses_no_write(
    tmp_path, ray_address, ray_env
):
    root = tmp_path / "cluster"
    index_sharded([_corpus(tmp_path)], BM25Encoder("lucene"), root, 2)
    names = [s["name"] for s in read_manifest(root).shards]
    log = tmp_path / "serve.log"
    server = Server(None, "--ray", ray_address, "--cluster", root, "--shard-timeout", "1",
                    log=log)  # fmt: skip
    server.start()
    assert "(300 documents, 2 shards on Ray, 2 segments)" in server.stderr()
    headers = {"x-api-key": KEY}
    acknowledged, statuses, stop = [], [], threading.Event()

    def load():
        n = 0
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                n += 1
                doc = {"id": f"w{n}", "title": f"written {n}", "text": "saturn rings of ice"}
                r = client.post("/documents", json={"documents": [doc]}, headers=headers)
                if r.status_code == 200:
                    acknowledged.append(doc["id"])
                else:  # a write to the down shard, refused, not acknowledged
                    statuses.append((r.status_code, r.json()))
                s = client.post("/search", json={"query": "saturn rings", "k": 5})
                statuses.append((s.status_code, s.json()))

    cluster = lsr.connect(ray_address, cluster=root)
    try:
        threads = [threading.Thread(target=load) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.time() + 120
        while time.time() < deadline and not any(code == 200 for code, _ in statuses):
            time.sleep(0.05)  # the shards answer
        time.sleep(0.5)
        victims = []
        for _ in range(3):  # a restart faster than the timeout between two requests hides
            victims.append(cluster.transport.pids()[1])  # the kill: then kill it again
            os.kill(victims[-1], signal.SIGKILL)
            deadline = time.time() + 20
            while time.time() < deadline and not any(code == 503 for code, _ in statuses):
                time.sleep(0.05)
            if any(code == 503 for code, _ in statuses):
                break
        seen = len(statuses)
        deadline = time.time() + 120
        while time.time() < deadline and not any(c == 200 for c, _ in statuses[seen:]):
            time.sleep(0.05)  # Ray restarts the actor, which replays its log
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        down = [body for code, body in statuses if code == 503]
        assert down, "no request saw the shard down"
        assert all(names[1] in body["missing_shards"] for body in down)
        assert {code for code, _ in statuses} <= {200, 503}
        assert statuses[-1][0] == 200 and len(statuses) > seen  # recovered
        assert cluster.transport.pids()[1] not in victims
        assert len(acknowledged) > 10
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for doc_id in acknowledged:  # every acknowledged write is there
                assert client.get(f"/documents/{doc_id}").status_code == 200, doc_id
            owners = shard_of(acknowledged, 2)
            # a shard killed for good: 503 naming it, or the other shard's hits, flagged
            cluster.transport.ray.kill(cluster.transport.actors[0], no_restart=True)
            r = client.post("/search", json={"query": "saturn rings", "k": 50})
            assert r.status_code == 503 and r.json()["missing_shards"] == [names[0]]
            assert r.headers["retry-after"] == "1"
            health = client.get("/health").json()
            assert health["status"] == "degraded" and names[0] in health["problems"][0]
            assert client.get("/metrics", headers=headers).status_code == 200
            r = client.post("/search", json={"query": "saturn rings", "k": 50,
                                             "allow_partial": True})  # fmt: skip
            body = r.json()
            assert r.status_code == 200 and body["partial"] is True
            assert body["missing_shards"] == [names[0]]
            alive = {d for d, o in zip(acknowledged, owners, strict=True) if o == 1}
            found = {h["id"] for h in body["hits"]}
            assert found and all(d in alive or not d.startswith("w") for d in found)
            assert shard_of(sorted(found), 2).tolist() == [1] * len(found)
        with pytest.raises(ShardsUnavailableError, match=names[0]):
            cluster.search("saturn", 5)
    finally:
        stop.set()
        server.stop()
        cluster.shutdown()


def test_connect_finds_the_running_cluster_and_refuses_what_it_cannot_do(tmp_path, ray_address):
    with pytest.raises(InputError, match="no cluster runs there"):
        lsr.connect(ray_address)
    root = tmp_path / "cluster"
    index_sharded([sample_dataset()], BM25Encoder(), root, 2)
    started = lsr.connect(ray_address, cluster=root)
    try:
        found = lsr.connect(ray_address)  # the shards another client started
        assert found.collection.root == root.resolve()
        assert found.search("neutron stars", 3)[0].ids == started.search("neutron stars", 3)[0].ids
    finally:
        started.shutdown()
    with pytest.raises(InputError, match="not a cluster"):
        lsr.connect(ray_address, cluster=tmp_path)
    from lsr.service.cli import main

    assert main(["serve", "--ray", ray_address]) == 2
    assert main(["serve", str(tmp_path), "--cluster", str(tmp_path)]) == 2


def test_bench_cluster_times_shards_against_one_collection(ray_address, ray_env):
    done = _lsr("bench", "cluster", "--docs", 3000, "--synthetic-queries", 20, "--shards", 1, 2,
                "--ray", ray_address, "--encode-docs", 64, "--json", env=ray_env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = report["rows"]
    names = ["in-process, 1 collection", "Ray, 1 shard", "Ray, 2 shards"]
    assert [r["name"] for r in rows] == names
    assert [r["notes"] for r in rows[1:]] == ["same top-k"] * 2
    assert all(r["qps_single"] > 0 and r["ratio_batch"] > 0 for r in rows[1:])
    encoding = report["extra"]["encoding"]
    assert encoding["documents"] == 64 and encoding["1_actors_docs_per_second"] > 0
