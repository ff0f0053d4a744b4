"""Hybrid retrieval end to end, as a user runs it: one collection with BM25, a second
sparse encoder and the wordllama dense model; lsr search in every mode; lsr tune-fusion on
a development split (and never on the test split); lsr eval --hybrid; REST over HTTP."""

from __future__ import annotations

import json
import shutil

import httpx
import numpy as np
import pytest

from lsr import sample_dataset
from lsr.errors import CorpusError, InputError
from lsr.eval.datasets import load_dataset
from lsr.index import LiveIndex
from lsr.index.fusion import FusionSpec, read_fusion
from lsr.pipeline import Searcher
from lsr.service.cli import main
from tests.service.test_service import KEY, Server

pytest.importorskip("wordllama")


def _split_sample(folder):
    """The bundled sample as a BEIR folder with a train split (odd queries) and a test
    split (even ones) whose qrels file is poisoned: reading it as qrels fails."""
    src = sample_dataset()
    shutil.copytree(src, folder)
    lines = (src / "qrels" / "test.tsv").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    train = [r for r in rows if int(r.split("\t")[0][1:]) % 2]
    (folder / "qrels" / "train.tsv").write_text("\n".join([header, *train]) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nnot a qrels line\n")
    return folder


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory, tiny_mlm):
    out = tmp_path_factory.mktemp("hybrid") / "col"
    args = ["index", str(sample_dataset()), "--out", str(out), "--encoder", "bm25",
            "--encoder", f"tiny={tiny_mlm}", "--dense", "dense:wordllama"]  # fmt: skip
    assert main(args) == 0
    return out


def test_one_collection_holds_every_representation(hybrid):
    with LiveIndex(hybrid, read_only=True) as live:
        assert live.representations == {"bm25": "sparse", "tiny": "sparse", "wordllama": "dense"}
        assert live.n_docs == 300
    assert (hybrid / "encoders" / "tiny").is_dir() and (hybrid / "encoders" / "wordllama").is_dir()


def test_search_modes_and_explained_fusion(hybrid, capsys):
    with Searcher.open(hybrid) as s:
        sparse = s.search("how do bees make honey", 5)
        dense = s.search("how do bees make honey", 5, mode="dense")
        fused = s.search("how do bees make honey", 5, mode="hybrid", fusion=FusionSpec(
            weights=(0.5, 0.2, 0.3)))  # fmt: skip
        assert sparse[0].ids[0].startswith("d14")  # the bee documents
        assert dense[0].ids and dense[0].ids != sparse[0].ids
        parts = fused.contributions[0][0]
        assert len(parts) == 3 and fused[0].scores[0] == pytest.approx(
            sum(p for p in parts if p is not None), rel=1e-6
        )
        tiny = s.search("bees honey", 3, retrievers=["tiny"])
        assert len(tiny[0].ids) == 3
    capsys.readouterr()
    args = ["search", str(hybrid), "bees honey", "--mode", "hybrid", "--alpha", "0.5",
            "--retriever", "bm25", "--retriever", "wordllama", "--json", "-k", "2"]  # fmt: skip
    assert main(args) == 0
    hits = json.loads(capsys.readouterr().out)[0]["hits"]
    assert set(hits[0]["retrievers"]) == {"bm25", "wordllama"}
    assert main(["search", str(hybrid), "bees", "--alpha", "0.5"]) != 0  # not hybrid
    assert "are for --mode hybrid" in capsys.readouterr().err


def test_bench_modes_times_every_mode(hybrid, capsys):
    queries = str(sample_dataset() / "queries.jsonl")
    args = ["bench", str(hybrid), "--queries", queries, "--modes", "--max-queries", "5", "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["latency_ms"]) == ["sparse", "dense", "hybrid"] and report["queries"] == 5
    assert all(ms["p50"] > 0 for ms in report["latency_ms"].values())
    assert main(["bench", str(hybrid), "--queries", queries, "--modes", "--reads"]) != 0


def test_tune_fusion_reads_only_the_development_split(hybrid, tmp_path, capsys):
    data = _split_sample(tmp_path / "sample")
    with pytest.raises(CorpusError):  # the poisoned test split really is unreadable
        load_dataset(data, "test")
    assert main(["tune-fusion", str(hybrid), str(data), "--retriever", "bm25",
                 "--retriever", "wordllama", "--depth", "20"]) == 0  # fmt: skip
    assert "best: convex minmax weights" in capsys.readouterr().out
    spec = read_fusion(hybrid)
    assert spec.retrievers == ("bm25", "wordllama") and len(spec.weights) == 2
    assert spec.tuned["split"] == "train" and spec.tuned["queries"] == 20
    # the tuned fusion is the default of hybrid searches now
    with Searcher.open(hybrid) as s:
        assert s.fusion == spec
        fused = s.search("bees", 3, mode="hybrid")
        assert len(fused.contributions[0][0]) == 2
    # weights for all three override the tuned pair, and --json labels the three parts
    capsys.readouterr()
    args = ["search", str(hybrid), "bees", "--mode", "hybrid", "--weights", "1,1,1", "--json"]
    assert main(args) == 0
    hit = json.loads(capsys.readouterr().out)[0]["hits"][0]
    assert set(hit["retrievers"]) == {"bm25", "tiny", "wordllama"}
    assert main(["tune-fusion", str(hybrid), str(data), "--split", "test"]) != 0
    assert "refusing to tune on the test queries" in capsys.readouterr().err
    (hybrid / "fusion.json").unlink()


def test_eval_tunes_hybrid_rows_on_train_and_reports_them(tmp_path, monkeypatch):
    import lsr.eval.runner as runner

    data = _split_sample(tmp_path / "sample")
    (data / "qrels" / "test.tsv").write_text((sample_dataset() / "qrels" / "test.tsv").read_text())
    seen = []
    real = runner.tune_fusion

    def spy(runs, qrels, *args):
        seen.append(set(qrels))
        return real(runs, qrels, *args)

    monkeypatch.setattr(runner, "tune_fusion", spy)
    results = runner.run_evaluation(
        [str(data)], ["bm25"], tmp_path / "report", hybrids=["bm25+dense:wordllama"],
        tune_on="train", cache_dir=tmp_path / "cache", k=100,
    )  # fmt: skip
    labels = [r.encoder for r in results]
    assert labels == ["bm25", "dense:wordllama", "bm25+dense:wordllama"]
    test_ids = set(load_dataset(data, "test").qrels)
    train_ids = set(load_dataset(data, "train").qrels)
    assert seen == [train_ids] and not (seen[0] & (test_ids - train_ids))
    fused = results[2]
    assert fused.efficiency["latency_ms_p50"] > results[0].efficiency["latency_ms_p50"]
    assert "tuned on train" in fused.notes[0]
    assert (tmp_path / "report" / "report.md").read_text().count("bm25+dense:wordllama") >= 3
    with pytest.raises(InputError, match="split being reported"):
        runner.run_evaluation([str(data)], ["bm25"], tmp_path / "r2",
                              hybrids=["bm25+dense:wordllama"], tune_on="test")  # fmt: skip


@pytest.mark.http
def test_hybrid_search_and_writes_over_http(hybrid, tmp_path):
    col = tmp_path / "served"
    shutil.copytree(hybrid, col)
    server = Server(col).start()
    try:
        url = server.url
        stats = httpx.get(url + "/stats").json()
        assert stats["representations"] == {
            "bm25": "sparse", "tiny": "sparse", "wordllama": "dense"
        }  # fmt: skip
        body = {"query": "volcano eruption pompeii", "k": 4, "mode": "hybrid", "explain": True,
                "fields": ["title"], "fusion": {"method": "rrf", "k": 10}}  # fmt: skip
        hits = httpx.post(url + "/search", json=body).json()["hits"]
        assert len(hits) == 4 and set(hits[0]["retrievers"]) == {"bm25", "tiny", "wordllama"}
        assert hits[0]["document"]["title"]
        text = "Quasar jets emit synchrotron radiation across the spectrum."
        doc = {"id": "new-1", "title": "Quasars", "text": text}
        r = httpx.post(url + "/documents", json={"documents": [doc]}, headers={"x-api-key": KEY})
        assert r.status_code == 200
        dense = httpx.post(url + "/search", json={"query": text, "k": 1, "mode": "dense"})
        assert dense.json()["hits"][0]["id"] == "new-1"
        bad = httpx.post(url + "/search", json={"vector": {"bee": 1.0}, "mode": "dense"})
        assert bad.status_code == 422
        bad = httpx.post(url + "/search", json={"query": "x", "mode": "hybrid",
                                                "fusion": {"weights": [1, 2]}})  # fmt: skip
        assert bad.status_code == 422 and "2 fusion weights given for 3" in bad.json()["error"]
        filtered = httpx.post(url + "/search", json={
            "query": "volcano", "k": 3, "mode": "dense",
            "filter": {"field": "title", "eq": "Quasars"}}).json()["hits"]  # fmt: skip
        assert [h["id"] for h in filtered] == ["new-1"]
    finally:
        server.stop()
    with LiveIndex(col, read_only=True) as live:  # the write reached every representation
        vectors = np.asarray(live.search(np.ones((1, 256), np.float32) / 16, 400,
                                         representation="wordllama")[0].ids)  # fmt: skip
        assert "new-1" in vectors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["index", "{c}", "--encoder", "dense:wordllama", "--out", "{o}"], "pass it with --dense"),
        (["index", "{c}", "--dense", "bm25", "--out", "{o}"], "give a dense encoder"),
        (["index", "{c}", "--encoder", "bm25", "--encoder", "bm25", "--out", "{o}"],
         "would be called 'bm25'"),
        (["index", "{c}", "--dense-index", "hnsw", "--out", "{o}"], "add --dense"),
        (["index", "{c}", "--dense", "dense:wordllama", "--dense-index", "annoy", "--out", "{o}"],
         "unknown dense index type"),
        (["index", "{c}", "--dense", "dense:wordllama", "--device", "cuda", "--out", "{o}"],
         "runs on the CPU"),
        (["index", "{c}", "--dense", "dense:wordllama", "--max-active-dims", "5", "--out", "{o}"],
         "which no encoder given"),
        (["encode", "{c}", "--encoder", "dense:wordllama", "--out", "{o}.parquet"],
         "writes sparse vectors"),
        (["bench", "{c}", "--encoder", "dense:wordllama"], "--modes"),
        (["eval", "{c}", "--encoder", "bm25", "--tune-on", "train", "--out", "{o}"],
         "give --hybrid too"),
        (["eval", "{c}", "--hybrid", "bm25", "--out", "{o}"], "two or more encoders"),
        (["eval", "{c}", "--hybrid", "bm25+dense:wordllama", "--tune-on", "test", "--out", "{o}"],
         "split being reported"),
    ],
)  # fmt: skip
def test_bad_hybrid_commands_say_what_to_do(args, message, tmp_path, capsys):
    corpus = sample_dataset()
    argv = [a.format(c=corpus, o=tmp_path / "out") for a in args]
    assert main(argv) != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_reordering_moves_every_representation_with_its_documents(hybrid, tmp_path, tiny_mlm):
    out = tmp_path / "bp"
    args = ["index", str(sample_dataset()), "--out", str(out), "--encoder", "bm25",
            "--encoder", f"tiny={tiny_mlm}", "--dense", "dense:wordllama",
            "--reorder", "bp"]  # fmt: skip
    assert main(args) == 0
    query = "how do bees make honey"
    with Searcher.open(hybrid) as plain, Searcher.open(out) as bp:
        assert bp.index.doc_ids.to_pylist() != plain.index.doc_ids.to_pylist()
        for options in ({}, {"mode": "dense"}, {"retrievers": ["tiny"]}):
            a, b = plain.search(query, 10, **options), bp.search(query, 10, **options)
            np.testing.assert_allclose(a[0].scores, b[0].scores, rtol=1e-5)
            assert set(a[0].ids[:5]) == set(b[0].ids[:5])
