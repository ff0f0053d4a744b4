"""``lsr export``: CIFF read by the real BMP engine, Qdrant bulk files loaded into the real
qdrant-client (its in-process local mode), OpenSearch and Elasticsearch bulk files checked
against what a Lucene feature field stores; each ranks SciFact as our own search does."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from lsr import BM25Encoder, load_encoder, sample_dataset
from lsr.eval import load_dataset
from lsr.eval.peers import bmp_query
from lsr.index import LiveIndex
from lsr.index.engine_export import DOT_STANDIN, feature_name, nine_bits, point_id
from lsr.pipeline import Searcher, index_corpus
from lsr.service.cli import main
from tests.conftest import fill_disk, shared_path

K = 10
# BMP's exact setting (alpha = beta = 1) misses a document now and then with larger blocks,
# on the same CIFF (measured with bmp 0.2.8 on SciFact: splade-tiny 0/2/17/88/217 of 300
# queries differ at block sizes 8/16/32/64/128, BM25 0 at 32 and 3 at 128; the documents it
# does return carry our exact scores). At 8 it returns our exact top-k for every query.
BMP_BLOCK = 8


@pytest.fixture(scope="module")
def scifact():
    return load_dataset(shared_path("data", "scifact"))


@pytest.fixture(scope="module")
def bm25_collection(tmp_path_factory, scifact) -> Path:
    out = tmp_path_factory.mktemp("export") / "scifact-bm25"
    index_corpus(scifact.corpus_path, BM25Encoder(), out, progress=False)
    return out


@pytest.fixture(scope="module")
def splade_collection(tmp_path_factory, scifact) -> Path:
    """The first 600 SciFact documents encoded by splade-tiny (a real trained SPLADE)."""
    model = shared_path("models", "splade-tiny")
    folder = tmp_path_factory.mktemp("export")
    corpus = folder / "corpus.jsonl"
    with open(scifact.corpus_path, encoding="utf-8") as f:
        corpus.write_text("".join(next(f) for _ in range(600)), encoding="utf-8")
    out = folder / "scifact-splade"
    index_corpus(corpus, load_encoder(model), out, progress=False)
    return out


def _queries(collection: Path, scifact, n: int = 300) -> tuple[Searcher, sp.csr_array]:
    searcher = Searcher.open(collection)
    texts = list(scifact.queries.values())[:n]
    return searcher, searcher.encoder.encode_queries(texts)


def _same_ranking(got_ids, got_scores, ours_ids, ours_scores, tied_below) -> None:
    """Equal scores, and at each score the same documents; at the last score of the list
    (where the top-k cuts a tie) documents from the tie (``tied_below``: id -> score of our
    longer list)."""
    assert list(got_scores) == list(ours_scores)
    last = ours_scores[-1] if len(ours_scores) else None
    for score in set(ours_scores):
        got = {d for d, s in zip(got_ids, got_scores, strict=True) if s == score}
        if score == last:
            assert got <= {d for d, s in tied_below.items() if s == score}
        else:
            assert got == {d for d, s in zip(ours_ids, ours_scores, strict=True) if s == score}


# ---- CIFF, read by BMP ---------------------------------------------------------------------


@pytest.mark.parametrize("which", ["bm25", "splade"])
def test_bmp_exact_search_over_our_ciff_returns_our_top_k(
    tmp_path, scifact, bm25_collection, splade_collection, which
):
    bmp = pytest.importorskip("bmp", reason="the bmp package (PyPI) reads CIFF")
    collection = bm25_collection if which == "bm25" else splade_collection
    assert main(["export", str(collection), "--format", "ciff", "--out",
                 str(tmp_path / "x.ciff")]) == 0  # fmt: skip
    bmp.ciff2bmp(
        ciff_file=str(tmp_path / "x.ciff"), output=str(tmp_path / "x.bmp"), bsize=BMP_BLOCK,
        compress_range=False,
    )  # fmt: skip
    searcher, queries = _queries(collection, scifact)
    index = searcher.index
    vocab = index.vocab
    engine = bmp.Searcher(str(tmp_path / "x.bmp"))
    compared = 0
    for i in range(queries.shape[0]):
        row = queries[[i]]
        cols, weights = bmp_query(index, row.indices, row.data)
        if not cols.size:
            continue
        query = sp.csr_array((weights, cols, [0, cols.size]), shape=(1, len(vocab)))
        ours = index.search(query, K + 50)[0]  # more than k: the tie the top-k cuts
        scores = np.rint(np.asarray(ours.scores, np.float64) / index.scale).astype(int)
        if not scores.size:
            continue
        ids, got = engine.search(
            {vocab[c]: float(w) for c, w in zip(cols, weights, strict=True)},
            k=K, alpha=1.0, beta=1.0,
        )  # fmt: skip
        n = min(K, scores.size)
        _same_ranking(ids, [int(s) for s in got], list(ours.ids[:n]), scores[:n].tolist(),
                      dict(zip(ours.ids, scores.tolist(), strict=True)))  # fmt: skip
        compared += 1
    assert compared >= 290, compared  # of 300 queries (a few match no document)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 127) << shift
        shift += 7
        if byte < 128:
            return value, pos


def _fields(message: bytes) -> list[tuple[int, object]]:
    """A protobuf message's (field number, value) pairs: a reader written apart from the
    exporter, from the wire format's definition."""
    out, pos = [], 0
    while pos < len(message):
        key, pos = _varint(message, pos)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, pos = _varint(message, pos)
        elif kind == 1:
            value, pos = struct.unpack("<d", message[pos : pos + 8])[0], pos + 8
        elif kind == 2:
            size, pos = _varint(message, pos)
            value, pos = message[pos : pos + size], pos + size
        else:
            raise AssertionError(f"wire type {kind}")
        out.append((number, value))
    return out


def read_ciff(path: Path) -> tuple[dict, dict[str, dict[str, int]], list[tuple[int, str, int]]]:
    data = path.read_bytes()
    messages, pos = [], 0
    while pos < len(data):
        size, pos = _varint(data, pos)
        messages.append(data[pos : pos + size])
        pos += size
    header = dict(_fields(messages[0]))
    n_lists, n_docs = header.get(2, 0), header.get(3, 0)
    assert len(messages) == 1 + n_lists + n_docs
    docs = []
    for m in messages[1 + n_lists :]:
        f = dict(_fields(m))
        docs.append((f.get(1, 0), f[2].decode(), f.get(3, 0)))
    names = [d[1] for d in docs]
    lists = {}
    for m in messages[1 : 1 + n_lists]:
        fields = _fields(m)
        head = {n: v for n, v in fields if n != 4}
        doc, postings = 0, {}
        for _, p in (x for x in fields if x[0] == 4):
            f = dict(_fields(p))
            doc += f.get(1, 0)
            postings[names[doc]] = f.get(2, 0)
        term = head[1].decode()
        assert head.get(2, 0) == len(postings) and head.get(3, 0) == sum(postings.values())
        lists[term] = postings
    return header, lists, docs


def test_ciff_holds_every_live_posting_after_writes_and_deletes(tmp_path):
    """A collection with two segments, deletions and unflushed writes: the CIFF file holds
    exactly the live documents' impacts, terms in byte order, d-gaps decoded back."""
    out = tmp_path / "c"
    corpus = sample_dataset() / "corpus.jsonl"
    index_corpus(corpus, BM25Encoder(), out, progress=False)
    records = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
    first, second = records[0]["_id"], records[1]["_id"]
    with Searcher.open(out) as s:
        encoder = s.encoder
    texts = [records[2]["text"], records[3]["text"], records[4]["text"]]
    with LiveIndex(out) as live:
        live.upsert(encoder.encode_documents(texts[:2]), ["new-1", "new-2"])
        live.flush()
        live.delete([first, "new-2"])
        live.upsert(encoder.encode_documents(texts[2:]), ["new-3"])
        index = live.as_index()
        expected = {d: live.get(d) for d in (second, "new-1", "new-3")}
    assert main(["export", str(out), "--format", "ciff", "--out", str(tmp_path / "c.ciff")]) == 0
    header, lists, docs = read_ciff(tmp_path / "c.ciff")
    assert header[1] == 1 and header[3] == index.n_docs == len(docs) == len(records) + 1
    names = [d[1] for d in docs]
    assert names == index.doc_ids.to_pylist() and [d[0] for d in docs] == list(range(len(docs)))
    assert first not in names and "new-2" not in names and "new-3" in names
    terms = list(lists)
    assert terms == sorted(terms, key=lambda t: t.encode("utf-8"))
    assert sum(len(p) for p in lists.values()) == index.n_postings
    for doc_id, vector in expected.items():
        got = {t: p[doc_id] for t, p in lists.items() if doc_id in p}
        assert got.keys() == vector.keys()
        for term, weight in vector.items():
            assert got[term] * index.scale == pytest.approx(weight, abs=index.scale / 2 + 1e-6)
    lengths = {name: length for _, name, length in docs}
    for doc_id in expected:
        assert lengths[doc_id] == sum(p.get(doc_id, 0) for p in lists.values())


# ---- Qdrant (qdrant-client's local mode) ---------------------------------------------------


def _close_ranking(got_ids, got_scores, ours_ids, ours_scores, rel: float = 1e-5) -> None:
    """The same documents in the same order, scores equal to float rounding; documents may
    trade places only where their scores tie to that rounding."""
    assert np.allclose(got_scores, ours_scores, rtol=rel, atol=0)
    ours = dict(zip(ours_ids, ours_scores, strict=True))
    tol = rel * max(abs(ours_scores[0]), 1e-30)
    for j, (d, score) in enumerate(zip(got_ids, got_scores, strict=True)):
        if d != ours_ids[j]:
            assert abs(score - ours_scores[j]) <= tol, (j, d, ours_ids[j])
        if d not in ours:
            assert abs(score - ours_scores[-1]) <= tol


@pytest.mark.parametrize("which", ["bm25", "splade"])
def test_qdrant_local_mode_returns_our_top_k(
    tmp_path, scifact, bm25_collection, splade_collection, which
):
    qdrant_client = pytest.importorskip("qdrant_client")
    from qdrant_client import models

    from lsr.index.engine_export import upload_qdrant

    collection = bm25_collection if which == "bm25" else splade_collection
    out = tmp_path / "qdrant"
    assert main(["export", str(collection), "--format", "qdrant", "--out", str(out)]) == 0
    client = qdrant_client.QdrantClient(location=":memory:")
    searcher, queries = _queries(collection, scifact, n=100)
    assert upload_qdrant(out, client, "scifact") == searcher.index.n_docs
    compared = 0
    for i in range(queries.shape[0]):
        row = queries[[i]]
        if not row.nnz:
            continue
        ours = searcher.collection.search(row, K)[0]
        if not ours.ids:
            continue
        answer = client.query_points(
            "scifact",
            query=models.SparseVector(indices=row.indices.tolist(), values=row.data.tolist()),
            using="lsr",
            limit=K,
            with_payload=True,
        ).points
        ids = [p.payload["_id"] for p in answer]
        assert all(p.id == point_id(p.payload["_id"]) for p in answer)
        _close_ranking(ids, [p.score for p in answer], list(ours.ids), list(ours.scores))
        compared += 1
    assert compared >= 95
    first = next(iter(client.scroll("scifact", limit=1, with_payload=True)[0]))
    stored = searcher.live.document(first.payload["_id"])
    assert first.payload == stored  # the stored fields travel as the payload


# ---- OpenSearch and Elasticsearch (what a Lucene feature field stores) ---------------------


def _lucene_stored(value: float) -> float:
    """What Lucene's FeatureField keeps of a value: the float32's bits shifted right by 15."""
    bits = np.array([value], np.float32).view(np.int32)[0]
    return float(np.array([(bits >> 15) << 15], np.int32).view(np.float32)[0])


def _read_bulk(folder: Path, field: str, index_name: str) -> tuple[list[str], list[dict], list]:
    ids, vectors, sources = [], [], []
    for path in sorted(folder.glob("bulk-*.ndjson")):
        lines = path.read_text(encoding="utf-8").splitlines()
        assert len(lines) % 2 == 0
        for action, source in zip(lines[::2], lines[1::2], strict=True):
            action, source = json.loads(action), json.loads(source)
            assert action == {"index": {"_index": index_name, "_id": action["index"]["_id"]}}
            assert "_id" not in source  # a metadata field: refused inside a document
            ids.append(action["index"]["_id"])
            vectors.append(source.pop(field))
            sources.append(source)
    return ids, vectors, sources


@pytest.mark.parametrize("fmt", ["opensearch", "elasticsearch"])
def test_lucene_engines_get_exact_impacts_and_rank_as_we_do(tmp_path, scifact, bm25_collection,
                                                            fmt):  # fmt: skip
    out = tmp_path / fmt
    args = ["export", str(bm25_collection), "--format", fmt, "--out", str(out), "--name",
            "scifact", "--field", "terms"]  # fmt: skip
    assert main(args) == 0
    mapping = json.loads((out / "mapping.json").read_text())
    kind = "rank_features" if fmt == "opensearch" else "sparse_vector"
    assert mapping["mappings"]["properties"]["terms"] == {"type": kind}
    meta = mapping["mappings"]["_meta"]["lsr"]
    searcher, queries = _queries(bm25_collection, scifact, n=300)
    index = searcher.index
    assert meta["values"] == "impacts" and meta["scale"] == index.scale
    ids, vectors, sources = _read_bulk(out, "terms", "scifact")
    assert ids == index.doc_ids.to_pylist()
    names = {feature_name(t): i for i, t in enumerate(index.vocab)}
    assert len(names) == len(index.vocab)
    rows, cols, data = [], [], []
    for n, vector in enumerate(vectors):
        for name, value in vector.items():
            assert "." not in name and value > 0 and _lucene_stored(value) == value
            rows.append(n)
            cols.append(names[name])
            data.append(value)
    stored = sp.csr_array((np.asarray(data, np.float64), (rows, cols)), shape=(len(ids),
                          len(index.vocab)))  # fmt: skip
    assert stored.nnz == index.n_postings
    assert any(DOT_STANDIN in name for name in names)  # SciFact has tokens such as "0.5"
    scores = (queries.astype(np.float64) @ stored.T).toarray()
    for i in range(queries.shape[0]):
        ours = index.search(queries[[i]], K)[0]
        if not ours.ids:
            continue
        order = np.argsort(-scores[i], kind="stable")[: len(ours.ids)]
        engine = [ids[j] for j in order]
        _close_ranking(engine, (scores[i][order] * index.scale).tolist(), list(ours.ids),
                       list(ours.scores))  # fmt: skip
    assert sources[0] == {k: v for k, v in searcher.live.document(ids[0]).items() if k != "_id"}
    example = json.loads((out / "query-example.json").read_text())
    if fmt == "opensearch":
        tokens = example["query"]["neural_sparse"]["terms"]["query_tokens"]
    else:
        assert example["query"]["sparse_vector"]["prune"] is False
        tokens = example["query"]["sparse_vector"]["query_vector"]
    assert tokens and all(name in names for name in tokens)


def test_weights_are_rounded_to_what_lucene_keeps(tmp_path, bm25_collection):
    out = tmp_path / "w"
    assert main(["export", str(bm25_collection), "--format", "elasticsearch", "--out", str(out),
                 "--values", "weights"]) == 0  # fmt: skip
    with Searcher.open(bm25_collection) as searcher:
        index = searcher.index
        ids, vectors, _ = _read_bulk(out, "lsr", "lsr")
        for n in (0, 1, len(ids) - 1):
            ours = searcher.live.get(ids[n])
            got = {t.replace(DOT_STANDIN, "."): w for t, w in vectors[n].items()}
            assert got.keys() == ours.keys()
            for term, weight in got.items():
                assert _lucene_stored(weight) == weight
                assert weight == pytest.approx(ours[term], rel=2**-9 + 1e-7)
    assert json.loads((out / "export.json").read_text())["scale"] == index.scale
    values = np.array([1.0, 3.14159, 1e-3, 255.0, 0.333333], np.float32)
    rounded = nine_bits(values)
    assert [_lucene_stored(v) for v in rounded] == rounded.tolist()
    assert np.all(np.abs(rounded - values) <= values * 2.0**-9)


# ---- bad input and failed writes -----------------------------------------------------------


def test_bad_export_requests_get_one_clear_line(tmp_path, bm25_collection, capsys):
    cases = [
        (["--format", "parquet", "--out", str(tmp_path / "a")], "invalid choice"),
        (["--format", "ciff", "--out", str(tmp_path), ], "is a directory"),
        (["--format", "ciff", "--out", str(tmp_path / "a.ciff"), "--values", "weights"],
         "CIFF holds 8-bit impacts only"),
        (["--format", "qdrant", "--out", str(tmp_path / "q"), "--field", "a.b"], "without dots"),
        (["--format", "opensearch", "--out", str(tmp_path / "o"), "--name", "Big"],
         "lowercase"),
        (["--format", "opensearch", "--out", str(tmp_path / "o"), "--field", "title"],
         "has a stored field 'title'"),
    ]  # fmt: skip
    for extra, message in cases:
        assert main(["export", str(bm25_collection), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert main(["export", str(bm25_collection), "--format", "qdrant", "--out",
                 str(tmp_path / "full")]) == 2  # fmt: skip
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), "--format", "ciff", "--out",
                 str(tmp_path / "n.ciff")]) == 2  # fmt: skip
    assert not (tmp_path / "o").exists() and not (tmp_path / "a.ciff").exists()
    assert not list(tmp_path.glob(".*tmp-*"))  # nothing half-written left behind


@pytest.mark.parametrize("fmt", ["ciff", "opensearch"])
def test_a_full_disk_leaves_no_export_behind(small_fs, bm25_collection, fmt, capsys):
    filler = fill_disk(small_fs)
    filler.unlink()  # room for a little, not for the export (several MiB)
    out = small_fs / ("x.ciff" if fmt == "ciff" else "x")
    assert main(["export", str(bm25_collection), "--format", fmt, "--out", str(out)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert not out.exists() and list(small_fs.iterdir()) == []


def test_bulk_files_hold_each_live_document_once_merged_once(tmp_path, monkeypatch):
    """A collection with two segments, a deletion and unflushed writes: the bulk files hold
    every live document once with its stored fields, and the segments are merged in memory
    once (the query example comes from the same pass)."""
    out = tmp_path / "c"
    corpus = sample_dataset() / "corpus.jsonl"
    index_corpus(corpus, BM25Encoder(), out, progress=False)
    records = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
    with Searcher.open(out) as s:
        encoder = s.encoder
    with LiveIndex(out) as live:
        live.upsert(encoder.encode_documents([records[2]["text"]]), ["new-1"],
                    [{"_id": "new-1", "title": "New", "text": records[2]["text"]}])  # fmt: skip
        live.flush()
        live.delete([records[0]["_id"]])
        live.upsert(encoder.encode_documents([records[3]["text"]]), ["new-2"],
                    [{"_id": "new-2", "title": "Newer", "text": records[3]["text"]}])  # fmt: skip
    merges = []
    as_index = LiveIndex.as_index
    monkeypatch.setattr(LiveIndex, "as_index", lambda self, *a: merges.append(1) or as_index(
        self, *a))  # fmt: skip
    assert main(["export", str(out), "--format", "opensearch", "--out", str(tmp_path / "o")]) == 0
    assert len(merges) == 1
    ids, vectors, sources = _read_bulk(tmp_path / "o", "lsr", "lsr")
    expected = [r["_id"] for r in records[1:]] + ["new-1", "new-2"]
    assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids))
    with LiveIndex(out, read_only=True) as live:
        for doc_id, source, vector in zip(ids, sources, vectors, strict=True):
            stored = live.document(doc_id)
            assert source == {k: v for k, v in stored.items() if k != "_id"}
            assert set(vector) == {feature_name(t) for t in live.get(doc_id)}
    example = json.loads((tmp_path / "o" / "query-example.json").read_text())
    assert example["query"]["neural_sparse"]["lsr"]["query_tokens"]
