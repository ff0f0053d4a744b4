"""Document reordering by recursive graph bisection: same results, smaller gaps."""

import json

import numpy as np
import pytest
import scipy.sparse as sp

from lsr import sample_dataset
from lsr.errors import InputError
from lsr.index import IndexBuilder
from lsr.index.reorder import bp_order, gap_bits_per_posting, permute, reorder
from lsr.kernels.dispatch import ALGORITHM_NAMES

VOCAB = 3000


def _topical(n_docs=4000, n_topics=40, seed=0):
    """Documents in topics (each owns 60 terms) plus a few common terms, shuffled: bisection
    has something to find. Integer weights, so many scores tie."""
    rng = np.random.default_rng(seed)
    own = [rng.choice(VOCAB, 60, replace=False) for _ in range(n_topics)]
    rows, cols, data = [], [], []
    for d in range(n_docs):
        z = rng.integers(n_topics)
        terms = np.unique(np.concatenate([rng.choice(own[z], 20), rng.integers(0, 30, 4)]))
        rows += [d] * terms.size
        cols += terms.tolist()
        data += rng.integers(1, 6, terms.size).tolist()
    m = sp.csr_array((np.asarray(data, np.float32), (rows, cols)), shape=(n_docs, VOCAB))
    queries = sp.csr_array(m[rng.choice(n_docs, 60, replace=False)] > 0, dtype=np.float32)
    return m, queries


def _index(m, quantization="uint8"):
    builder = IndexBuilder([f"t{i}" for i in range(VOCAB)], quantization=quantization)
    builder.add(m, [f"d{i}" for i in range(m.shape[0])])
    return builder.finish()


def _hits(results):
    """Per query, score -> the set of ids with that score (ties may reorder)."""
    out = []
    for hits in results:
        by_score = {}
        for doc_id, score in zip(hits.ids, hits.scores, strict=True):
            by_score.setdefault(round(float(score), 5), set()).add(doc_id)
        out.append(by_score)
    return out


@pytest.mark.parametrize("quantization", ["uint8", "float32"])
def test_a_reordered_index_returns_the_same_documents_and_scores(quantization):
    m, queries = _topical()
    index = _index(m, quantization)
    reordered, done = reorder(index)
    assert sorted(done.order.tolist()) == list(range(index.n_docs))
    assert done.swaps > 0 and reordered.metadata["reorder"] == "bp"
    assert reordered.n_postings == index.n_postings
    assert done.bits_after < 0.85 * done.bits_before  # the gaps shrink
    assert reordered.doc_ids.to_pylist() == [f"d{i}" for i in done.order]
    k = 20
    allowed = np.zeros(index.n_docs, dtype=bool)
    allowed[::3] = True  # a filter / deletes, as a bitmap over each index's own numbers
    allowed_new = allowed[done.order]
    for algorithm in ALGORITHM_NAMES:
        before = index.search(queries, k, algorithm=algorithm)
        after = reordered.search(queries, k, algorithm=algorithm)
        for a, b in zip(before, after, strict=True):
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
        # the last score's ties may be cut differently; every other score has the same ids
        for a, b in zip(_hits(before), _hits(after), strict=True):
            last = min(a)
            assert {s: ids for s, ids in a.items() if s != last} == {
                s: ids for s, ids in b.items() if s != last
            }
        filtered = index.search(queries, k, algorithm=algorithm, allowed=allowed)
        filtered_new = reordered.search(queries, k, algorithm=algorithm, allowed=allowed_new)
        for a, b in zip(filtered, filtered_new, strict=True):
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
    for d in (0, 17, index.n_docs - 1):  # each document keeps its vector under its id
        doc_id = f"d{d}"
        assert reordered.document_vector(reordered.doc_index(doc_id)) == index.document_vector(d)


def test_bisection_is_deterministic_whatever_the_threads_and_beats_a_random_order():
    m, _ = _topical(2000, seed=3)
    index = _index(m)
    one, _ = bp_order(index, threads=1)
    two, _ = bp_order(index, threads=2)
    assert np.array_equal(one, two)
    shuffled = permute(index, np.random.default_rng(0).permutation(index.n_docs))
    assert gap_bits_per_posting(permute(index, one)) < gap_bits_per_posting(shuffled) - 0.5


def test_bad_orders_and_methods_are_refused():
    index = _index(_topical(100)[0])
    with pytest.raises(InputError, match="permutation"):
        permute(index, np.zeros(index.n_docs, dtype=np.int64))
    with pytest.raises(InputError, match="permutation"):
        permute(index, np.arange(index.n_docs - 1))
    with pytest.raises(InputError, match="Unknown reordering"):
        reorder(index, "random")


def test_lsr_index_reorder_bp_keeps_results_stored_documents_and_later_writes(tmp_path, capsys):
    from lsr.pipeline import Searcher
    from lsr.service.cli import main

    plain, bp = tmp_path / "plain", tmp_path / "bp"
    assert main(["index", str(sample_dataset()), "--out", str(plain)]) == 0
    assert main(["index", str(sample_dataset()), "--out", str(bp), "--reorder", "bp"]) == 0
    capsys.readouterr()
    queries = ["how do bees make honey", "volcano eruption ash", "the history of chess"]
    with Searcher.open(plain) as a, Searcher.open(bp) as b:
        for q in queries:
            ha = a.search([q], k=10, fields=["title"])[0]
            hb = b.search([q], k=10, fields=["title"])[0]
            np.testing.assert_allclose(ha.scores, hb.scores, rtol=1e-6)
            by_id = dict(zip(hb.ids, hb.documents, strict=True))
            for doc_id, doc in zip(ha.ids, ha.documents, strict=True):
                if doc_id in by_id:  # stored fields moved with their documents
                    assert by_id[doc_id] == doc
        assert b.index.doc_ids.to_pylist() != a.index.doc_ids.to_pylist()
    commit = json.loads(sorted(bp.glob("commit-*.json"))[-1].read_text())
    figures = commit["metadata"]["reorder"]
    assert figures["method"] == "bp" and figures["swaps"] > 0 and figures["seconds"] >= 0
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"_id": "new1", "title": "bees", "text": "honey bees"}) + "\n")
    assert main(["index", str(extra), "--out", str(bp), "--append"]) == 0
    with Searcher.open(bp) as b:
        assert "new1" in b.search(["honey bees"], k=5)[0].ids
    for bad in (["--append"], ["--shards", "2"]):
        out = str(tmp_path / "x")
        assert main(["index", str(sample_dataset()), "--out", out, "--reorder", "bp", *bad]) != 0
        assert "--reorder" in capsys.readouterr().err
