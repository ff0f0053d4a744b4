"""Paired significance tests and Holm-Bonferroni against reference values."""

import numpy as np
import pytest
from scipy import stats

from lsr.eval.significance import (
    compare_to_baseline,
    holm,
    paired_t_test,
    randomization_test,
)


def test_t_test_is_scipys_paired_test():
    rng = np.random.default_rng(1)
    a = rng.random(200)
    b = a - 0.03 + rng.normal(0, 0.1, 200)
    assert paired_t_test(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert paired_t_test(a, a) == 1.0  # no difference at all
    assert paired_t_test(a + 0.1, a) == 0.0  # the same difference on every query


def test_randomization_test_agrees_with_exact_enumeration():
    d = np.array([0.3, -0.1, 0.2, 0.25, 0.05, -0.05, 0.15])
    signs = np.array(np.meshgrid(*[[-1, 1]] * d.size)).reshape(d.size, -1).T
    exact = (np.abs(signs @ d) >= abs(d.sum()) - 1e-12).mean()  # all 128 assignments
    p = randomization_test(d, np.zeros_like(d), permutations=20_000)
    assert p == pytest.approx(exact, abs=0.01)
    assert randomization_test(d, d) == 1.0
    assert randomization_test(d, np.zeros_like(d)) == randomization_test(d, np.zeros_like(d))


def test_holm_by_hand():
    # sorted: 0.01 x4 = 0.04; 0.03 x3 = 0.09; 0.04 x2 = 0.08 -> 0.09 (monotone); 0.2 x1
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == []


def test_comparisons_against_the_baseline():
    rng = np.random.default_rng(2)
    qids = [str(i) for i in range(100)]
    base = {"m": dict(zip(qids, rng.random(100), strict=True))}
    better = {"m": {q: v + 0.2 for q, v in base["m"].items()}}
    same = {"m": dict(base["m"])}
    scores = {("b", "d"): base, ("x", "d"): better, ("y", "d"): same, ("x", "other"): better}
    found = compare_to_baseline(scores, "b", ["m"], permutations=2000)
    by = {(c.encoder, c.dataset): c for c in found}
    assert set(by) == {("x", "d"), ("y", "d")}  # no baseline run on "other"
    assert by[("x", "d")].difference == pytest.approx(0.2)
    assert by[("x", "d")].significant("t") and by[("x", "d")].significant("randomization")
    assert not by[("y", "d")].significant("t") and by[("y", "d")].t_p_holm == 1.0
