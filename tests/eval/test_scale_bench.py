"""``lsr bench scale``: a fitted corpus built into a compressed index in bounded memory, then
searched memory-mapped (small here; the README's figures are for 8.8M documents)."""

import json

import numpy as np
import pytest

from lsr.eval import faithful
from lsr.eval.scale_bench import build_scale_index
from lsr.index import CompressedIndex, IndexBuilder
from tests.eval.test_faithful import _planted


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    docs, queries = _planted(n_docs=600, n_queries=60)
    path = tmp_path_factory.mktemp("generator") / "g.npz"
    faithful.fit(docs, queries).save(path)
    return path


def test_the_built_collection_is_the_generators_corpus(tmp_path, generator):
    model = faithful.FaithfulModel.load(generator)
    stats = build_scale_index(
        model, 3000, tmp_path / "c", chunk=700, run_postings=20_000, merge_postings=10_000
    )
    assert stats["peak_rss_bytes"] > 0 and stats["seconds"] >= stats["merge_seconds"]
    compressed = CompressedIndex.load(tmp_path / "c")
    index = IndexBuilder(compressed.vocab).extend(model.corpus(3000)).finish()
    queries, _ = model.queries(25, 3000)
    got, expected = compressed.search(queries, k=10), index.search(queries, k=10)
    np.testing.assert_array_equal(got.docs, expected.docs)
    np.testing.assert_array_equal(got.scores, expected.scores)


def test_lsr_bench_scale_builds_once_and_reports(tmp_path, generator, capsys):
    from lsr.service.cli import main

    base = ["bench", "scale", "--like", str(generator), "--index", str(tmp_path / "c"),
            "--docs", "2000", "--synthetic-queries", "20"]  # fmt: skip
    assert main([*base, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_docs"] == 2000 and 0 < report["bytes_per_posting"] < 4
    modes = report["search"]["modes"]
    assert modes["exact, one query at a time, 2 threads"]["p99_ms"] > 0
    assert all(0 <= row.get("recall", 1) <= 1 for row in modes.values())
    built = (tmp_path / "c" / "build.json").stat().st_mtime_ns
    assert main(base) == 0  # reuses the collection
    out = capsys.readouterr().out
    assert "bytes per posting" in out and "p99 ms" in out
    assert (tmp_path / "c" / "build.json").stat().st_mtime_ns == built
    assert main([*base[:-4], "--docs", "3000", "--synthetic-queries", "5"]) != 0
    assert "holds 2,000 documents" in capsys.readouterr().err
    assert main(["bench", "scale", "--like", str(generator)]) != 0
    assert "--index DIR" in capsys.readouterr().err
