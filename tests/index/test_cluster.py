"""Sharded collections (lsr index --shards) searched in one process: the same ids, scores and
tie order as one index over all documents, with deletes, filters and writes."""

import json

import numpy as np
import pytest
import scipy.sparse as sp

from lsr import BM25Encoder, load_encoder, read_queries, sample_dataset
from lsr.errors import InputError
from lsr.index import IndexFormatError, LiveIndex, SearchResults, merge_topk
from lsr.index.cluster import (
    CLUSTER_FILE,
    LATE,
    ShardedCollection,
    read_manifest,
    shard_of,
)
from lsr.pipeline import encode_to_file, index_corpus
from lsr.pipeline.sharding import index_sharded
from lsr.pretokenized import PretokenizedEncoder
from lsr.service.cli import main
from lsr.vector_files import write_vectors
from tests.conftest import random_csr, shared_path


def _corpus(tmp_path):
    """The bundled sample with fields to filter on."""
    out = tmp_path / "corpus.jsonl"
    lines = (sample_dataset() / "corpus.jsonl").read_text().splitlines()
    with open(out, "w") as f:
        for i, line in enumerate(lines):
            doc = json.loads(line)
            f.write(json.dumps({**doc, "group": i % 4, "year": 1990 + i % 30}) + "\n")
    return out


def _queries(encoder):
    texts = list(read_queries(sample_dataset() / "queries.jsonl").values())
    return encoder.encode_queries(texts + [t.split()[0] for t in texts])


def _same(a: SearchResults, b: SearchResults) -> None:
    assert len(a) == len(b)
    for i in range(len(a)):
        assert a[i].ids == b[i].ids, i
        assert a[i].scores == b[i].scores, i


def _both(tmp_path, shards, encoder_factory, corpus):
    index_corpus(corpus, encoder_factory(), tmp_path / "single", progress=False)
    summary = index_sharded([corpus], encoder_factory(), tmp_path / "cluster", shards)
    return tmp_path / "single", tmp_path / "cluster", summary


@pytest.mark.parametrize("shards", [2, 3])
def test_bm25_shards_rank_as_one_index_with_deletes_and_filters(tmp_path, shards):
    corpus = _corpus(tmp_path)
    single, cluster, summary = _both(tmp_path, shards, lambda: BM25Encoder("lucene"), corpus)
    assert summary.shards == shards and summary.n_docs == 300
    manifest = read_manifest(cluster)
    assert sum(s["n_docs"] for s in manifest.shards) == 300
    assert manifest.statistics["encoder"]["n_docs"] == 300  # global document frequencies
    encoder = load_encoder(single / "encoder")
    queries = _queries(encoder)
    doomed = [f"d{i:03d}" for i in range(1, 301, 7)]
    with LiveIndex(single) as one, ShardedCollection(cluster, read_only=False) as many:
        assert many.n_docs == 300
        for algorithm in ("exhaustive", "maxscore", "auto"):
            _same(one.search(queries, 50, algorithm=algorithm),
                  many.search(queries, 50, algorithm=algorithm))  # fmt: skip
        one.delete(doomed)
        assert many.delete([*doomed, "nowhere"])[1] == doomed
        _same(one.search(queries, 50), many.search(queries, 50))
        for condition in ({"field": "group", "in": [1, 3]}, {"field": "year", "gte": 2010}):
            a = one.search(queries, 20, filter=condition, fields=["group", "year"])
            b = many.search(queries, 20, filter=condition, fields=["group", "year"])
            _same(a, b)
            assert [h.documents for h in a] == [h.documents for h in b]
        single_query = queries[[3]]
        _same(one.search(single_query, 10), many.search(single_query, 10))


def test_ties_rank_in_corpus_order_across_shards(tmp_path, rng):
    """Integer weights over a few terms: most scores tie, and the merge orders them as the
    single index does (corpus order), for hash shards and for shards given as files."""
    vocab = [f"t{i}" for i in range(12)]
    docs = random_csr(rng, 900, 12, 0.3, integer=True, max_value=2)
    ids = [f"doc-{i}" for i in range(900)]
    encoder = PretokenizedEncoder(vocab)
    parts = []
    for p, lo in enumerate(range(0, 900, 300)):
        parts.append(tmp_path / f"part{p}.parquet")
        write_vectors(parts[-1], [(docs[lo : lo + 300], ids[lo : lo + 300])], vocab)
    write_vectors(tmp_path / "all.parquet", [(docs, ids)], vocab)
    index_corpus(tmp_path / "all.parquet", encoder, tmp_path / "single", progress=False)
    index_sharded([tmp_path / "all.parquet"], encoder, tmp_path / "hashed", 3)
    index_sharded(parts, encoder, tmp_path / "files", "files")
    queries = random_csr(rng, 30, 12, 0.25, integer=True, max_value=2)
    queries = sp.csr_array(queries[np.diff(queries.indptr) > 0])
    with LiveIndex(tmp_path / "single", read_only=True) as one:
        expected = one.search(queries, 40)
        assert any(len(set(h.scores)) < len(h.scores) for h in expected)  # ties indeed
        for name in ("hashed", "files"):
            with ShardedCollection(tmp_path / name) as many:
                _same(expected, many.search(queries, 40))
    assert read_manifest(tmp_path / "files").routing == "files"
    assert [s["n_docs"] for s in read_manifest(tmp_path / "files").shards] == [300] * 3


def test_splade_vectors_shard_as_one_index(tmp_path):
    model = shared_path("models", "splade-tiny")
    encoder = load_encoder(model)
    vectors = tmp_path / "vectors.parquet"
    encode_to_file(sample_dataset(), encoder, vectors, batch_size=64)
    index_corpus(vectors, encoder, tmp_path / "single", progress=False)
    index_sharded([vectors], encoder, tmp_path / "cluster", 3)
    queries = _queries(encoder)
    single = LiveIndex(tmp_path / "single", read_only=True)
    with single as one, ShardedCollection(tmp_path / "cluster") as many:
        _same(one.search(queries, 30), many.search(queries, 30))


def test_writes_go_to_the_owning_shard_and_survive_reopening(tmp_path):
    corpus = _corpus(tmp_path)
    encoder = BM25Encoder("lucene")
    index_sharded([corpus], encoder, tmp_path / "cluster", 3)
    new = ["n1", "n2", "n3", "n4", "d002"]  # d002 replaces an indexed document
    vectors = encoder.encode_documents(["saturn rings ice"] * 5)
    docs = [{"title": f"new {d}", "text": "saturn rings ice"} for d in new]
    with ShardedCollection(tmp_path / "cluster", read_only=False) as many:
        sequences = many.upsert(vectors, new, docs)
        assert sequences >= 1
        owners = shard_of(new, 3)
        for doc_id, owner in zip(new, owners, strict=True):
            for shard in many.transport.shards:
                assert shard.live.contains([doc_id]) == [shard.number == owner]
        assert many.n_docs == 304
    with ShardedCollection(tmp_path / "cluster") as again:  # from each shard's log
        assert again.document("n3")["title"] == "new n3"
        hits = again.search(encoder.encode_queries(["saturn rings ice"]), 10)[0]
        assert set(new) <= set(hits.ids)
        ranked = [d for d in hits.ids if d in new]
        # equal scores: d002 keeps its corpus position (first), the new ones come after
        assert ranked[0] == "d002"
        assert again.explain(["n1", "zzz"], np.array([0])).shape == (2, 1)


def test_merge_ranks_ties_by_position_when_every_part_has_one():
    def part(ids, scores, order):
        return SearchResults(
            docs=np.arange(len(ids))[None, :],
            scores=np.asarray([scores], dtype=np.float32),
            counts=np.array([len(ids)]),
            doc_ids=__import__("pyarrow").array(ids),
            order=np.asarray([order]),
        )

    a = part(["a1", "a2"], [2.0, 1.0], [5, 1])
    b = part(["b1", "b2"], [2.0, 1.0], [3, LATE])
    merged = merge_topk([a, b], 4)
    assert merged[0].ids == ["b1", "a1", "a2", "b2"]
    batch = merge_topk([a.head(2), b.head(2)], 3)  # the same through the batch path
    two = SearchResults(
        docs=np.vstack([a.docs, a.docs]), scores=np.vstack([a.scores, a.scores]),
        counts=np.array([2, 2]), doc_ids=a.doc_ids, order=np.vstack([a.order, a.order]),
    )  # fmt: skip
    other = SearchResults(
        docs=np.vstack([b.docs, b.docs]), scores=np.vstack([b.scores, b.scores]),
        counts=np.array([2, 2]), doc_ids=b.doc_ids, order=np.vstack([b.order, b.order]),
    )  # fmt: skip
    assert merge_topk([two, other], 3)[1].ids == ["b1", "a1", "a2"] == batch[0].ids


def test_bad_clusters_and_bad_shard_options_say_what_is_wrong(tmp_path):
    corpus = _corpus(tmp_path)
    with pytest.raises(InputError, match="positive number or 'files'"):
        index_sharded([corpus], BM25Encoder(), tmp_path / "c", 0)
    with pytest.raises(InputError, match="give two or more"):
        index_sharded([corpus], BM25Encoder(), tmp_path / "c", "files")
    with pytest.raises(InputError, match="several corpora are the shards"):
        index_sharded([corpus, corpus], BM25Encoder(), tmp_path / "c", 2)
    with pytest.raises(InputError, match="not a cluster"):
        ShardedCollection(tmp_path)
    index_sharded([corpus], BM25Encoder(), tmp_path / "c", 2)
    with pytest.raises(FileExistsError, match="--overwrite"):
        index_sharded([corpus], BM25Encoder(), tmp_path / "c", 2)
    index_sharded([corpus], BM25Encoder(), tmp_path / "c", 3, overwrite=True)
    assert read_manifest(tmp_path / "c").n_shards == 3
    manifest = tmp_path / "c" / CLUSTER_FILE
    manifest.write_text(manifest.read_text().replace('"routing": "hash"', '"routing": "files"'))
    with pytest.raises(IndexFormatError, match="checksum"):
        read_manifest(tmp_path / "c")


def test_cli_builds_a_cluster_and_refuses_what_it_cannot_shard(tmp_path, capsys):
    corpus = _corpus(tmp_path)
    out = tmp_path / "cluster"
    assert main(["index", str(corpus), "--shards", "2", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["shards"] == 2 and summary["n_docs"] == 300
    assert main(["index", str(corpus), str(corpus), "--out", str(tmp_path / "x")]) == 2
    assert "--shards files" in capsys.readouterr().err
    code = main(["index", str(corpus), "--shards", "2", "--dense", "dense:wordllama",
                 "--out", str(tmp_path / "y")])  # fmt: skip
    assert code == 2 and "drop --dense" in capsys.readouterr().err
    assert main(["index", str(corpus), "--shards", "many", "--out", str(tmp_path / "z")]) == 2
    assert "give a number of shards or 'files', got many" in capsys.readouterr().err


def test_lsr_search_reads_a_cluster_as_one_collection(tmp_path, capsys):
    corpus = _corpus(tmp_path)
    index_corpus(corpus, BM25Encoder("lucene"), tmp_path / "single", progress=False)
    index_sharded([corpus], BM25Encoder("lucene"), tmp_path / "cluster", 3)
    runs = {}
    for name in ("single", "cluster"):
        out = tmp_path / f"{name}.run"
        argv = ["search", str(tmp_path / name), "--queries", str(sample_dataset()),
                "--output", str(out), "-k", "20"]  # fmt: skip
        assert main(argv) == 0
        runs[name] = out.read_text().replace("cluster", "single")
    assert runs["single"] == runs["cluster"] and len(runs["single"].splitlines()) > 500
    capsys.readouterr()
    query = ["search", str(tmp_path / "cluster"), "neutron stars", "--json", "--filter"]
    assert main([*query, '{"field": "group", "eq": 1}']) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits and all(h["document"]["group"] == 1 for q in hits for h in q["hits"])
