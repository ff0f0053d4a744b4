"""Metric values from ir-measures against values checked by hand."""

import math

import pytest

from lsr.eval import evaluate
from lsr.eval.metrics import per_query

QRELS = {"q1": {"a": 1, "b": 1}, "q2": {"x": 2}}
RUN = {"q1": {"a": 3.0, "c": 2.0, "b": 1.0}}  # q2 retrieved nothing


def test_hand_checked_values():
    table = per_query(RUN, QRELS, ["nDCG@10", "RR@10", "AP@100", "R@100", "P@2"])
    ndcg = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert table["nDCG@10"]["q1"] == pytest.approx(ndcg)
    assert table["RR@10"]["q1"] == 1.0
    assert table["AP@100"]["q1"] == pytest.approx((1 + 2 / 3) / 2)
    assert table["R@100"]["q1"] == 1.0
    assert table["P@2"]["q1"] == 0.5
    assert all(v["q2"] == 0.0 for v in table.values())


def test_mean_counts_queries_without_hits_as_zero():
    means = evaluate(RUN, QRELS, ["RR@10", "R@100"])
    assert means == {"RR@10": 0.5, "R@100": 0.5}


def test_unknown_measure():
    with pytest.raises(ValueError, match="Unknown measure"):
        evaluate(RUN, QRELS, ["nDCG@@10"])
