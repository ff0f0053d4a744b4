"""One result type and one merge: every searchable unpacks the same way, and the top-k of
several parts merged equals the top-k of one index over all their documents."""

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.errors import InputError
from lsr.index import ClusteredIndex, Hits, Index, LiveIndex, Searchable, merge_topk
from tests.conftest import brute_force_topk, random_csr

V = 40
VOCAB = [f"t{i}" for i in range(V)]


def _parts(rng, sizes, integer=True):
    docs, parts, start = [], [], 0
    for n in sizes:
        m = random_csr(rng, n, V, 0.15, integer=integer, max_value=3)  # many ties
        ids = [f"d{start + i}" for i in range(n)]
        parts.append(Index.build(m, ids, VOCAB, quantization="float32"))
        docs.append(m)
        start += n
    return parts, docs


def test_every_searchable_answers_one_result_type(rng, tmp_path):
    index = Index.build(random_csr(rng, 60, V, 0.2), [f"d{i}" for i in range(60)], VOCAB)
    index.save(tmp_path / "idx")
    queries = random_csr(rng, 3, V, 0.3)
    with LiveIndex(tmp_path / "idx") as live:
        clustered = ClusteredIndex.build(index, cluster_size=4)
        for searchable in (index, live, clustered):
            assert isinstance(searchable, Searchable)
            results = searchable.search(queries, k=5)
            ids, scores = results[0]
            assert isinstance(results[0], Hits) and len(ids) == len(scores) <= 5
            assert [h.ids for h in results] == [results[i].ids for i in range(3)]
            assert results[1].items() == list(zip(*results[1], strict=True))


@pytest.mark.parametrize("k", [1, 7, 50])
def test_merged_parts_equal_one_index_over_all_documents(rng, k):
    parts, docs = _parts(rng, [30, 1, 45, 12])
    queries = random_csr(rng, 12, V, 0.25, integer=True, max_value=3)
    merged = merge_topk([p.search(queries, k) for p in parts], k)
    everything = sp.vstack(docs, format="csr")
    for i, (order, scores) in enumerate(brute_force_topk(everything, queries, k)):
        # part order = document order here, so the tie order is the single index's too
        assert merged[i].ids == [f"d{j}" for j in order]
        assert merged[i].scores == scores.tolist()


@pytest.mark.parametrize("k", [1, 7, 50])
def test_one_query_merges_like_the_batch(rng, k):
    """A single query takes a shorter merge (a service's search of its segments and write
    buffer); it must give what the batch merge gives its row: ids, scores, tie order,
    padding, documents."""
    parts, _ = _parts(rng, [30, 0, 1, 45, 12])
    queries = random_csr(rng, 20, V, 0.25, integer=True, max_value=3)
    answers = [p.search(queries, k) for p in parts]
    for part in answers:
        part.documents = [[{"row": i, "rank": r} for r in range(c)] for i, c in
                          enumerate(part.counts.tolist())]  # fmt: skip
    batch = merge_topk(answers, k)
    for i in range(len(queries.indptr) - 1):
        one = merge_topk(_rows(answers, i), k)
        assert one[0].ids == batch[i].ids and one[0].scores == batch[i].scores
        assert one[0].documents == batch[i].documents
        assert one.k == batch.k and one.counts.tolist() == [batch.counts[i]]
        assert one.scores.dtype == batch.scores.dtype and one.docs.dtype == batch.docs.dtype


def _rows(answers, i):
    from lsr.index import SearchResults

    return [
        SearchResults(
            a.docs[i : i + 1], a.scores[i : i + 1], a.counts[i : i + 1], a.doc_ids, [a.documents[i]]
        )  # fmt: skip
        for a in answers
    ]


def test_exclusions_drop_hits_before_ranking(rng):
    parts, docs = _parts(rng, [50, 20])
    queries = random_csr(rng, 6, V, 0.3, integer=True)
    dropped = np.zeros(50, dtype=bool)
    dropped[::3] = True
    k = 8
    results = [parts[0].search(queries, k + int(dropped.sum())), parts[1].search(queries, k)]
    merged = merge_topk(results, k, [dropped, None])
    kept = [i for i in range(50) if not dropped[i]]
    ids = [f"d{i}" for i in kept] + [f"d{50 + i}" for i in range(20)]
    matrix = sp.vstack([docs[0][kept], docs[1]], format="csr")
    for i, (order, scores) in enumerate(brute_force_topk(matrix, queries, k)):
        assert merged[i].ids == [ids[j] for j in order]
        assert merged[i].scores == scores.tolist()


def test_merge_refuses_mismatched_parts(rng):
    parts, _ = _parts(rng, [10, 10])
    a = parts[0].search(random_csr(rng, 2, V, 0.3), 3)
    b = parts[1].search(random_csr(rng, 3, V, 0.3), 3)
    with pytest.raises(InputError, match="same queries"):
        merge_topk([a, b], 3)
    with pytest.raises(InputError, match="at least one"):
        merge_topk([], 3)


def test_head_of_an_exact_search_is_the_smaller_search(rng):
    parts, _ = _parts(rng, [80])
    queries = random_csr(rng, 5, V, 0.3, integer=True)
    wide, narrow = parts[0].search(queries, 20).head(4), parts[0].search(queries, 4)
    assert [h for h in wide] == [h for h in narrow]


def test_ids_at_reads_ids_from_the_buffers_as_take_does():
    import numpy as np
    import pyarrow as pa

    from lsr.index.results import ids_at

    ids = pa.array([f"doc-{i}-é" for i in range(200)] + ["", "a/b"])
    for array in (ids, ids.slice(7), ids.cast(pa.large_string()), ids.slice(3).cast(
            pa.large_string())):  # fmt: skip
        for numbers in (np.array([0, 5, 3, 5]), np.array([], np.int64), np.arange(100)):
            numbers = numbers[numbers < len(array)]
            expected = array.take(pa.array(numbers, type=pa.int64())).to_pylist()
            assert ids_at(array, numbers) == expected
    assert ids_at(ids, np.array([200, 201])) == ["", "a/b"]
