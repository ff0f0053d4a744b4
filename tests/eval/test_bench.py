"""``lsr bench`` runs every configuration and reports exact recall 1.0 for exact algorithms."""

import json
import time

import numpy as np
import pytest

from lsr.eval.bench import BenchRow, bench_index, bench_synthetic, compare
from lsr.eval.synthetic import synthetic_corpus, synthetic_queries
from lsr.index import IndexBuilder
from lsr.index.clustered import ClusterSettings
from lsr.service.cli import main


def test_synthetic_collection_has_the_requested_shape():
    [(docs, ids)] = list(synthetic_corpus(2000, vocab=3000, doc_terms=60, chunk=5000))
    assert docs.shape == (2000, 3000) and len(ids) == 2000
    assert 45 <= docs.nnz / 2000 <= 75
    q = synthetic_queries(50, vocab=3000, query_terms=20)
    assert 15 <= q.nnz / 50 <= 25
    short = synthetic_queries(50, vocab=3000, query_terms=6, inference_free=True)
    assert short.nnz / 50 < 8


@pytest.mark.slow
def test_bench_index_rows_and_exact_recall():
    builder = IndexBuilder([f"t{i}" for i in range(3000)])
    for batch in synthetic_corpus(3000, vocab=3000, doc_terms=40):
        builder.add(*batch)
    index = builder.finish()
    queries = synthetic_queries(30, vocab=3000, query_terms=15)
    report = bench_index(index, queries, "tiny", k=10, batch_seconds=0.0)
    names = [r.name for r in report.rows]
    for exact in ("exhaustive", "maxscore", "maxscore-taat", "bmw", "ranges", "auto"):
        row = report.rows[names.index(exact)]
        assert row.recall == 1.0 and row.qps_single > 0 and row.qps_batch > 0
        assert row.p99_ms >= row.p50_ms
    assert any("theta" in n for n in names) and any("query_terms" in n for n in names)
    clustered = [r for r in report.rows if r.name.startswith("clustered")]
    assert len(clustered) >= 4 and all(0.0 < r.recall <= 1.0 for r in clustered)
    assert report.extra["clustered_build_seconds"] > 0
    assert "numba_warmup_seconds" in report.extra
    assert 1.0 < report.index_bytes_per_posting < 10
    assert "tiny: 3,000 docs" in report.table()


def test_batches_are_timed_back_to_back_after_an_untimed_one():
    from lsr.eval.bench import _Candidate, _time_interleaved

    calls, cold = [], [False]

    def single(i):
        cold[0] = True  # the next batch runs after a single-query pass, like a cold one

    def batch():
        calls.append(cold[0])
        time.sleep(0.05 if cold[0] else 0.001)
        cold[0] = False

    candidate = _Candidate("c", single, batch, None)
    _time_interleaved([candidate], n=3, repeat=2, batch_seconds=0.02)
    assert calls.count(True) == 2 and len(calls) >= 2 * (1 + 2)
    assert len(candidate.times) == 2 and all(len(t) == 3 for t in candidate.times)
    assert len(candidate.batch_times) == 3  # BATCH_ROUNDS, more than repeat
    assert 0.001 <= float(np.median(candidate.batch_times)) < 0.0025  # the cold batch untimed


def test_rows_count_the_median_pass_and_round_not_the_best():
    from lsr.eval.bench import _Candidate

    c = _Candidate("c", None, None, 1.0)
    c.times = [np.full(10, 0.001), np.full(10, 0.002), np.full(10, 0.010)]
    c.batch_times = [0.01, 0.5, 0.02]
    row = c.row(10)
    assert row.qps_single == pytest.approx(10 / 0.02) and row.qps_batch == pytest.approx(500)


def _row(name, qps_single, qps_batch, recall=1.0, engine="lsr"):
    return BenchRow(name, qps_single, 0.1, 0.2, qps_batch, recall, engine=engine)


def test_compare_sets_auto_against_exact_peers_and_the_fastest_at_the_target_recall():
    rows = [
        _row("exhaustive", 100, 900),
        _row("auto", 300, 600),
        _row("clustered fast", 2000, 1000, recall=0.94),  # below the target: left out
        _row("clustered ok", 1200, 3000, recall=0.96),
        _row("splade-index (numba)", 100, 300, engine="splade-index"),
        _row("bmp safe", 150, 150, recall=0.97, engine="bmp"),
        _row("bmp alpha=0.8 beta=1.0", 400, 400, recall=0.90, engine="bmp"),
        _row("seismic hf=0.9 query_cut=5", 1000, 800, recall=0.99, engine="seismic"),
        _row("seismic hf=1.0 query_cut=9", 600, 1500, recall=0.999, engine="seismic"),
    ]
    by = {(v["what"], v["peer"]): v for v in compare(rows)}
    assert set(by) == {
        ("exact", "splade-index (numba)"),
        ("exact", "bmp safe"),
        ("recall >= 0.95", "bmp safe"),
        ("recall >= 0.95", "seismic hf=0.9 query_cut=5 (batch: seismic hf=1.0 query_cut=9)"),
    }
    assert by["exact", "splade-index (numba)"]["single"] == pytest.approx(3.0)
    assert by["exact", "bmp safe"]["batch"] == pytest.approx(4.0)
    seismic = by["recall >= 0.95", "seismic hf=0.9 query_cut=5 (batch: seismic hf=1.0 query_cut=9)"]
    assert seismic["ours"] == "clustered ok"
    assert seismic["single"] == pytest.approx(1.2) and seismic["batch"] == pytest.approx(2.0)


@pytest.mark.slow
def test_seismic_and_bmp_peers_search_our_vectors(capfd):
    pytest.importorskip("seismic", reason="pyseismic-lsr, a peer of the bench extra")
    pytest.importorskip("bmp", reason="bmp, a peer of the bench extra")
    from lsr.eval.peers import SEISMIC_HEAP_FACTORS

    builder = IndexBuilder([f"t{i}" for i in range(3000)])
    for batch in synthetic_corpus(4000, vocab=3000, doc_terms=40):
        builder.add(*batch)
    index = builder.finish()
    queries = synthetic_queries(40, vocab=3000, query_terms=15)
    report = bench_index(index, queries, "tiny", k=10, batch_seconds=0.0, clustered={})
    rows = {r.name: r for r in report.rows}
    seismic = [r for r in report.rows if r.engine == "seismic"]
    assert len(seismic) == 3 * len(SEISMIC_HEAP_FACTORS)
    # every list is shorter than Seismic's 3,500 postings: nothing pruned, all terms probed,
    # a heap factor of 1: its answers are ours but for its 16-bit float values
    widest = max((r for r in seismic if "hf=1.0" in r.name),
                 key=lambda r: int(r.name.split("=")[-1]))  # fmt: skip
    assert widest.recall >= 0.95
    assert all(0.0 <= r.recall <= 1.0 and r.qps_single > 0 for r in seismic)
    assert rows["bmp safe"].recall >= 0.9  # its query quantized to 32 levels
    assert report.extra["bmp query terms kept"] == 1.0
    assert report.extra["seismic build_seconds"] > 0 and report.extra["bmp build_seconds"] > 0
    assert {v["what"] for v in report.versus} == {"exact", "recall >= 0.95"}
    assert "exact: auto / bmp safe:" in report.table()
    assert capfd.readouterr().out == ""  # the peers' own progress went to stderr


@pytest.mark.parametrize(
    ("option", "message"),
    [({"repeat": 0}, "repeat must be"), ({"batch_seconds": -1.0}, "batch_seconds must be")],
)
def test_bench_index_refuses_bad_timing_options(option, message):
    builder = IndexBuilder([f"t{i}" for i in range(50)])
    for batch in synthetic_corpus(100, vocab=50, doc_terms=5):
        builder.add(*batch)
    with pytest.raises(ValueError, match=message):
        bench_index(builder.finish(), synthetic_queries(3, vocab=50, query_terms=3), "x", **option)


def test_bench_synthetic_reports_build_figures():
    report = bench_synthetic(
        2000, n_queries=20, vocab=2000, doc_terms=30, query_terms=10, peers=False, approximate=False
    )
    assert report.extra["build_seconds"] > 0 and report.extra["n_postings"] > 0
    names = ["exhaustive", "maxscore", "maxscore-taat", "bmw", "ranges", "auto"]
    assert [r.name for r in report.rows] == names


@pytest.mark.slow
def test_cli_bench_index_and_errors(tmp_path, capsys):
    from lsr import sample_dataset

    assert main(["index", str(sample_dataset()), "--out", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    argv = [
        "bench",
        str(tmp_path / "idx"),
        "--queries",
        str(sample_dataset() / "queries.jsonl"),
        "--no-peers",
        "--json",
        "--cluster-size",
        "4",
        "--cluster-postings",
        "50",
        "--cluster-pruning",
        "fixed",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_queries"] == 40 and report["rows"][0]["recall"] == 1.0
    assert report["extra"]["clustered_settings"]["cluster_size"] == 4
    assert report["extra"]["clustered_settings"]["pruning"] == "fixed"
    # an option left out takes the library's default
    assert report["extra"]["clustered_settings"]["summary_mass"] == ClusterSettings().summary_mass
    assert main([*argv, "--no-clustered"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert not any(r["name"].startswith("clustered") for r in rows)
    assert main([*argv[:-6], "--cluster-size", "0"]) == 2
    assert "--cluster-size: must be a positive integer" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "idx"), "--no-peers"]) == 2
    assert "needs --queries" in capsys.readouterr().err
    assert main([*argv, "--repeat", "0"]) == 2
    assert "--repeat: must be a positive integer" in capsys.readouterr().err
    assert main(["bench", "synthetic", "--docs", "100", "--repeat", "-1", "--no-peers"]) == 2
    assert "--repeat: must be a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["./no/such/folder"])
def test_cli_bench_unknown_target(target, capsys):
    assert main(["bench", target, "--no-peers"]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_bench_reads_times_get_and_explain(tmp_path, capsys):
    from lsr import sample_dataset

    out = tmp_path / "idx"
    assert main(["index", str(sample_dataset()), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["bench", str(out), "--queries", str(sample_dataset()), "--reads", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_docs"] == 300 and set(report["explain_ms"]) == {"10", "100", "1000"}
    assert 0 < report["get_ms"]["p50"] <= report["get_ms"]["p99"] <= report["get_ms"]["max"]
    assert main(["bench", str(out), "--queries", str(sample_dataset()), "--reads"]) == 0
    assert "GET /documents/{id}" in capsys.readouterr().out
    assert main(["bench", "synthetic", "--reads"]) == 2
    assert "--reads benchmarks an index directory" in capsys.readouterr().err
