"""Exact ``auto`` on a large index learns which exact kernel is faster from the queries it
serves (``lsr.index.auto_exact``); results never depend on what it picked."""

import numpy as np

from lsr.index import inverted
from lsr.index.auto_exact import TRIALS, AutoExact
from lsr.kernels.dispatch import EXHAUSTIVE, MAXSCORE_TAAT, RANGES
from tests.conftest import random_csr
from tests.index.test_pruning import _same, _zipf_index


def test_the_faster_contender_per_posting_wins():
    auto = AutoExact(trials=3)
    for _ in range(3):
        assert auto.choice is None
        auto.record(auto.next_trial(), 0.004, 1000)  # exhaustive: 4 us per posting
        auto.record(auto.next_trial(), 0.002, 2000)  # maxscore-taat: 1 us per posting
        auto.record(auto.next_trial(), 0.003, 2000)  # ranges: 1.5 us per posting
    assert auto.choice == MAXSCORE_TAAT and auto.next_trial() is None
    assert auto.to_dict() == {
        "choice": "maxscore-taat",
        "ns_per_posting": {"exhaustive": 4000.0, "maxscore-taat": 1000.0, "ranges": 1500.0},
    }
    auto.record(EXHAUSTIVE, 0.0, 1000)  # decided: later timings change nothing
    assert auto.choice == MAXSCORE_TAAT


def test_trials_alternate_and_queries_reading_nothing_are_not_counted():
    auto = AutoExact(trials=2)
    assert [auto.next_trial() for _ in range(2)] == [EXHAUSTIVE, EXHAUSTIVE]  # not recorded yet
    auto.record(EXHAUSTIVE, 0.001, 0)
    assert auto.next_trial() == EXHAUSTIVE
    auto.record(EXHAUSTIVE, 0.001, 10)
    assert auto.next_trial() == MAXSCORE_TAAT
    auto.record(MAXSCORE_TAAT, 0.001, 10)
    assert auto.next_trial() == RANGES


def test_index_learns_its_exact_kernel_and_results_never_change(rng, monkeypatch):
    """With the size threshold lowered, single exact ``auto`` queries time the contenders
    until each has ``TRIALS`` samples, then run the winner; batches follow the choice."""
    monkeypatch.setattr(inverted, "AUTO_TAAT_MIN_DOCS", 0)
    _, idx = _zipf_index(rng, n_docs=4000)
    queries = random_csr(rng, 4 * TRIALS, 400, 40 / 400)
    ref = idx.search(queries, 10, algorithm="exhaustive")
    for i in range(queries.shape[0]):
        assert idx.search(queries[[i]], 10)[0] == ref[i]
    learned = idx.auto_exact.to_dict()
    assert learned["choice"] in ("exhaustive", "maxscore-taat", "ranges")
    assert set(learned["ns_per_posting"]) == {"exhaustive", "maxscore-taat", "ranges"}
    _same(ref, idx.search(queries, 10))
    approximate = idx.search(queries[[0]], 10, theta=1.5)  # approximate auto learns nothing
    assert approximate.counts[0] == 10


def test_small_indexes_and_other_algorithms_do_not_time_anything(rng):
    _, idx = _zipf_index(rng, n_docs=2000)  # below AUTO_TAAT_MIN_DOCS
    queries = random_csr(rng, 5, 400, 40 / 400)
    for i in range(5):
        idx.search(queries[[i]], 10)
        idx.search(queries[[i]], 10, algorithm="maxscore-taat")
    assert idx.auto_exact.to_dict() == {"choice": None, "ns_per_posting": {}}
    assert np.isfinite(idx.search(queries, 10).scores).all()
