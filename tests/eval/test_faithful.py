"""The generator fitted to real vectors (lsr.eval.faithful) and its validation."""

import json

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.errors import InputError
from lsr.eval import faithful
from lsr.eval.faithful_validation import statistics, validate
from lsr.eval.synthetic import synthetic_corpus

VOCAB = 4000


def _planted(n_docs=2000, n_queries=150, n_topics=25, seed=0):
    """A 'real' corpus with planted topics: each topic owns 150 terms (Zipf-weighted), a
    document takes ~80% of its terms from its topic and the rest from everywhere; a query
    takes terms from one document and its topic."""
    rng = np.random.default_rng(seed)
    own = [rng.choice(VOCAB, 150, replace=False) for _ in range(n_topics)]
    zipf = 1.0 / np.arange(1, 151)
    zipf /= zipf.sum()

    def draw(topic, n):
        from_topic = rng.choice(own[topic], size=int(n * 0.8), p=zipf)
        anywhere = rng.integers(0, VOCAB, n - from_topic.size)
        terms = np.unique(np.concatenate([from_topic, anywhere]))
        return terms, rng.lognormal(0.0, 0.6, terms.size).astype(np.float32)

    rows = []
    topics = rng.integers(0, n_topics, n_docs)
    for z in topics:
        rows.append(draw(z, int(rng.integers(40, 80))))
    queries = []
    for d in rng.integers(0, n_docs, n_queries):
        terms, _ = rows[d]
        mine = rng.choice(terms, size=min(6, terms.size), replace=False)
        extra, _ = draw(topics[d], 6)
        q = np.unique(np.concatenate([mine, extra]))
        queries.append((q, rng.lognormal(0.0, 0.6, q.size).astype(np.float32)))

    def csr(pairs):
        indptr = np.cumsum([0] + [t.size for t, _ in pairs])
        return sp.csr_array(
            (np.concatenate([w for _, w in pairs]), np.concatenate([t for t, _ in pairs]), indptr),
            shape=(len(pairs), VOCAB),
        )

    return csr(rows), csr(queries)


@pytest.fixture(scope="module")
def planted():
    docs, queries = _planted()
    return docs, queries, faithful.fit(docs, queries)


def test_a_corpus_is_the_same_whatever_the_chunking_and_any_document_can_be_drawn_again(planted):
    _, _, model = planted
    whole = sp.vstack([m for m, _ in model.corpus(900, chunk=900)], format="csr")
    parts = list(model.corpus(900, chunk=250))
    assert [len(ids) for _, ids in parts] == [250, 250, 250, 150]
    assert parts[1][1][0] == "d250"
    chunked = sp.vstack([m for m, _ in parts], format="csr")
    assert (whole != chunked).nnz == 0
    assert whole.has_sorted_indices and np.all(whole.data > 0)
    again = sp.vstack([m for m, _ in model.corpus(900, chunk=900)], format="csr")
    assert (whole != again).nnz == 0
    other = sp.vstack([m for m, _ in model.corpus(900, seed=5)], format="csr")
    assert (whole != other).nnz > 0


def test_the_fitted_sample_matches_the_real_statistics_and_independent_terms_do_not(planted):
    docs, queries, model = planted
    real = statistics(docs, queries)
    fake = statistics(*model.sample(docs.shape[0], queries.shape[0]))
    vocab = docs.shape[1]
    independent_docs = sp.vstack(
        [m for m, _ in synthetic_corpus(docs.shape[0], vocab, 60)], format="csr"
    )
    independent = statistics(independent_docs, queries)
    for stat in ("non-zeros per document p10", "non-zeros per document p50",
                 "non-zeros per document p90", "non-zeros per query p50"):  # fmt: skip
        assert fake[stat] == pytest.approx(real[stat], rel=0.1), stat
    for stat in ("document weight p10", "document weight p50", "document weight p90"):
        assert fake[stat] == pytest.approx(real[stat], rel=0.1), stat
    for rank in (10, 100, 1000):
        stat = f"df of the term ranked {rank} / docs"
        assert fake[stat] == pytest.approx(real[stat], rel=0.35), stat
    near = "cosine to nearest neighbour p50"
    assert abs(fake[near] - real[near]) < 0.05
    assert abs(independent[near] - real[near]) > 0.15  # what the old generator misses


def test_queries_are_written_from_a_document_that_ranks_near_their_top(planted):
    docs, queries, model = planted
    n = 3000
    corpus = model.documents(n)
    q, sources = model.queries(200, n)
    assert q.shape == (200, VOCAB) and sources.min() >= 0 and sources.max() < n
    scores = np.asarray((q @ corpus.T).toarray())
    ranks = (scores > scores[np.arange(200), sources][:, None]).sum(axis=1)
    assert np.mean(ranks < 10) > 0.5
    again, same = model.queries(200, n)
    assert (again != q).nnz == 0 and np.array_equal(same, sources)


def test_a_saved_generator_draws_the_same_corpus(planted, tmp_path):
    _, _, model = planted
    model.save(tmp_path / "g.npz")
    loaded = faithful.FaithfulModel.load(tmp_path / "g.npz")
    assert loaded.focus_share == model.focus_share
    a, b = model.sample(300, 20), loaded.sample(300, 20)
    assert (a[0] != b[0]).nnz == 0 and (a[1] != b[1]).nnz == 0
    np.savez(tmp_path / "other.npz", prior=model.prior)
    with pytest.raises(InputError, match="lacks"):
        faithful.FaithfulModel.load(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_text("not a numpy file")
    with pytest.raises(InputError, match="not a generator"):
        faithful.FaithfulModel.load(tmp_path / "junk.npz")
    with pytest.raises(InputError, match="not a generator"):
        faithful.FaithfulModel.load(tmp_path / "absent.npz")


def test_fitting_refuses_bad_vectors():
    docs, queries = _planted(200, 10, 5)
    with pytest.raises(InputError, match="empty"):
        faithful.fit(sp.csr_array((0, VOCAB), dtype=np.float32))
    with pytest.raises(InputError, match="columns"):
        faithful.fit(docs, sp.csr_array(queries.toarray()[:, :100]))
    bad = docs.copy()
    bad.data[0] = -1.0
    with pytest.raises(InputError, match="negative"):
        faithful.fit(bad)


def test_validation_sets_real_fitted_and_independent_side_by_side(planted):
    docs, queries, model = planted

    class Row:
        def __init__(self, name):
            self.name, self.recall, self.qps_single = name, 0.9, 1000.0

    class Report:  # the curves' benchmark is lsr bench's, tested in test_bench
        rows = [Row("seismic hf=0.9 query_cut=5"), Row("clustered hf=1.0 terms=3"), Row("bmp")]

    result = validate(docs[:600], queries[:50], model, bench=lambda index, q: Report())
    assert set(result.curves) == {"real", "faithful", "independent"}
    assert [r["name"] for r in result.curves["real"]] == [
        "seismic hf=0.9 query_cut=5",
        "clustered hf=1.0 terms=3",
    ]
    text = result.table()
    assert "cosine to nearest neighbour p50" in text and "faithful" in text
    json.dumps(result.to_dict())


@pytest.mark.slow
def test_lsr_bench_synthetic_like_fits_real_vectors_and_benchmarks(tmp_path, planted):
    from lsr.service.cli import main
    from lsr.vector_files import write_vectors

    docs, queries, _ = planted
    vocab = [f"t{i}" for i in range(VOCAB)]
    write_vectors(tmp_path / "d.parquet", [(docs, [f"r{i}" for i in range(docs.shape[0])])], vocab)
    write_vectors(
        tmp_path / "q.parquet", [(queries, [f"q{i}" for i in range(queries.shape[0])])], vocab
    )
    base = ["bench", "synthetic", "--like", str(tmp_path / "d.parquet")]
    rc = main(base + ["--queries", str(tmp_path / "q.parquet"), "--docs", "3000",
                      "--synthetic-queries", "30", "--no-peers", "--no-clustered",
                      "--save-generator", str(tmp_path / "g.npz"), "--json"])  # fmt: skip
    assert rc == 0 and (tmp_path / "g.npz").exists()
    rc = main(["bench", "synthetic", "--like", str(tmp_path / "g.npz"), "--docs", "2000",
               "--synthetic-queries", "20", "--no-peers", "--no-clustered",
               "--no-approximate"])  # fmt: skip
    assert rc == 0


def test_lsr_bench_synthetic_like_refuses_bad_combinations(tmp_path, capsys):
    from lsr.service.cli import main

    assert main(["bench", "synthetic", "--validate"]) != 0
    assert "--like" in capsys.readouterr().err
    assert main(["bench", "synthetic", "--like", str(tmp_path / "none.parquet")]) != 0
    assert "not found" in capsys.readouterr().err
    assert main(["bench", "synthetic", "--like", "x.parquet", "--inference-free"]) != 0
    assert "drop --inference-free" in capsys.readouterr().err
