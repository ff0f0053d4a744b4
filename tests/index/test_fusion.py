"""Fusion formulas against hand-computed examples: ties, missing documents, single-hit and
empty lists, weights, depth, RRF."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from lsr.errors import InputError
from lsr.index.fusion import FusionSpec, fuse, fuse_lists, read_fusion, write_fusion
from lsr.index.results import SearchResults


def test_minmax_convex_by_hand():
    bm25 = (["a", "b", "c"], [10.0, 6.0, 2.0])  # normalized: 1, 0.5, 0
    dense = (["c", "d"], [0.9, 0.5])  # normalized: 1, 0; floor 0
    ids, scores, parts = fuse_lists([bm25, dense], FusionSpec.with_alpha(0.3))
    # a: .3*1 + .7*0 = .3; b: .3*.5 = .15; c: .3*0 + .7*1 = .7; d: .3*0 (floor) + .7*0 = 0
    assert ids == ["c", "a", "b", "d"]
    assert scores == pytest.approx([0.7, 0.3, 0.15, 0.0])
    assert parts[0] == pytest.approx([0.0, 0.7])
    assert parts[1][1] is None and parts[3][0] is None  # a not in dense, d not in bm25


def test_zscore_floor_is_the_lowest_z_of_the_list():
    one = (["a", "b", "c"], [3.0, 2.0, 1.0])  # z: 1.2247, 0, -1.2247
    two = (["d"], [5.0])  # a single hit: std 0, z 0, floor 0
    ids, scores, _ = fuse_lists([one, two], FusionSpec(normalization="zscore"))
    z = math.sqrt(1.5)
    assert dict(zip(ids, scores, strict=True)) == pytest.approx(
        {"a": z + 0, "b": 0 + 0, "c": -z + 0, "d": -z + 0}
    )
    # ties (b and d at 0? no: d = floor(one) + 0 = -z, tied with c): c came first
    assert ids.index("c") < ids.index("d")


def test_single_hit_and_all_tied_lists_under_minmax():
    ids, scores, _ = fuse_lists([(["a"], [4.0]), (["b", "a"], [2.0, 2.0])], FusionSpec())
    # list 1: a -> 1 (all tied gives 1), floor 0; list 2: both tied -> 1
    assert dict(zip(ids, scores, strict=True)) == {"a": 2.0, "b": 1.0}


def test_empty_lists_contribute_nothing():
    ids, scores, parts = fuse_lists([([], []), (["x", "y"], [1.0, 0.0])], FusionSpec())
    assert ids == ["x", "y"] and scores == [1.0, 0.0]
    assert parts == [[None, 1.0], [None, 0.0]]
    assert fuse_lists([([], []), ([], [])], FusionSpec()) == ([], [], [])


def test_rrf_by_hand_and_its_k():
    one = (["a", "b", "c"], [9.0, 8.0, 7.0])
    two = (["c", "a"], [0.5, 0.4])
    ids, scores, _ = fuse_lists([one, two], FusionSpec(method="rrf", k=60))
    expected = {"a": 1 / 61 + 1 / 62, "b": 1 / 62, "c": 1 / 63 + 1 / 61}
    assert dict(zip(ids, scores, strict=True)) == pytest.approx(expected)
    assert ids == ["a", "c", "b"]
    ids, scores, _ = fuse_lists([one, two], FusionSpec(method="rrf", k=1, weights=(1, 3)))
    assert dict(zip(ids, scores, strict=True)) == pytest.approx(
        {"a": 1 / 2 + 3 / 3, "b": 1 / 3, "c": 1 / 4 + 3 / 2}
    )


def test_ties_keep_first_appearance_order():
    ids, _, _ = fuse_lists([(["b", "a"], [1.0, 1.0]), (["c"], [1.0])], FusionSpec(weights=(1, 1)))
    assert ids == ["b", "a", "c"]  # all 1 + 0 floor ... c: 0 + 1


def test_depth_cuts_each_list_before_normalizing():
    one = (["a", "b", "c", "d"], [4.0, 3.0, 2.0, 1.0])
    ids, scores, _ = fuse_lists([one, (["d"], [1.0])], FusionSpec(depth=2, weights=(1, 1)))
    # list one cut to a, b: normalized 1, 0; d only from list two
    assert dict(zip(ids, scores, strict=True)) == {"a": 1.0, "b": 0.0, "d": 1.0}


def test_three_retrievers_weighted_sum():
    lists = [(["a", "b"], [2.0, 0.0]), (["b", "c"], [1.0, 0.0]), (["c", "a"], [5.0, 1.0])]
    ids, scores, _ = fuse_lists(lists, FusionSpec(weights=(0.5, 0.25, 0.25)))
    assert dict(zip(ids, scores, strict=True)) == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.25})
    assert ids == ["a", "b", "c"]


def _results(rows: list[tuple[list[str], list[float]]]) -> SearchResults:
    width = max(len(r[0]) for r in rows)
    docs = np.full((len(rows), width), -1, np.int64)
    scores = np.zeros((len(rows), width), np.float32)
    flat = []
    for i, (ids, s) in enumerate(rows):
        docs[i, : len(ids)] = np.arange(len(flat), len(flat) + len(ids))
        scores[i, : len(ids)] = s
        flat += ids
    return SearchResults(docs, scores, np.asarray([len(r[0]) for r in rows]),
                         pa.array(flat, pa.large_string()))  # fmt: skip


def test_fuse_search_results_per_query_and_top_k():
    sparse = _results([(["a", "b"], [2.0, 1.0]), (["x"], [1.0])])
    dense = _results([(["b", "c"], [0.9, 0.1]), (["y", "x"], [0.8, 0.2])])
    out = fuse([sparse, dense], FusionSpec(weights=(1, 1)), k=2)
    assert out[0].ids == ["a", "b"] and out[0].scores == pytest.approx([1.0, 1.0])
    assert out[1].ids == ["x", "y"]  # x: 1 + 0, y: 0 (floor) + 1: tie, x first
    assert out.contributions[1][1] == [None, 1.0]
    assert out.head(1)[1].ids == ["x"] and out.head(1).contributions[1] == [[1.0, 0.0]]


def test_bad_settings_and_the_saved_file(tmp_path):
    for bad in ({"method": "max"}, {"normalization": "l2"}, {"weights": (1, -1)},
                {"weights": (0, 0)}, {"k": 0}, {"depth": 0}):  # fmt: skip
        with pytest.raises(InputError):
            FusionSpec(**bad)
    with pytest.raises(InputError, match="alpha"):
        FusionSpec.with_alpha(1.5)
    with pytest.raises(InputError, match="2 fusion weights given for 3"):
        fuse_lists([([], [])] * 3, FusionSpec(weights=(1, 1)))
    assert read_fusion(tmp_path) is None
    spec = FusionSpec(weights=(0.3, 0.7), retrievers=("bm25", "wordllama"), tuned={"on": "train"})
    write_fusion(tmp_path, spec)
    again = read_fusion(tmp_path)
    assert again == spec and again.tuned == {"on": "train"}
    (tmp_path / "fusion.json").write_text('{"method": "nope"}')
    with pytest.raises(InputError, match="unknown fusion"):
        read_fusion(tmp_path)
