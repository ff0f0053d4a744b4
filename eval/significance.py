"""Paired significance tests of per-query scores against a baseline, with Holm-Bonferroni.

Two tests, as IR papers report them (Smucker, Allan and Carterette, CIKM 2007): the paired
t-test and the randomization (permutation) test, which flips the sign of each query's
difference at random and asks how often the mean difference is at least as large as the one
observed (two-sided, with a fixed seed so a report is reproducible). Comparing several
systems on several datasets is many tests at once, so p-values are corrected with Holm's
step-down method over each measure's family of comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

ALPHA = 0.05
PERMUTATIONS = 10_000
_SEED = 20071106  # fixed: the same runs give the same p-values


@dataclass
class Comparison:
    """One system against the baseline on one dataset and measure."""

    encoder: str
    baseline: str
    dataset: str
    measure: str
    n_queries: int
    mean: float
    baseline_mean: float
    t_p: float
    randomization_p: float
    t_p_holm: float = math.nan
    randomization_p_holm: float = math.nan

    @property
    def difference(self) -> float:
        return self.mean - self.baseline_mean

    def significant(self, test: str, alpha: float = ALPHA) -> bool:
        """Whether the corrected p-value of ``test`` ("t" or "randomization") is below alpha."""
        p = self.t_p_holm if test == "t" else self.randomization_p_holm
        return p < alpha

    def to_dict(self) -> dict:
        return {**asdict(self), "difference": self.difference}


def paired_t_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of the paired t-test of ``a`` against ``b`` (1.0 when equal)."""
    from scipy import stats

    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if d.size < 2 or not np.any(d):
        return 1.0
    if np.allclose(d, d[0]):  # a constant non-zero difference: no variance, certain
        return 0.0
    return float(stats.ttest_rel(a, b).pvalue)


def randomization_test(
    a: np.ndarray, b: np.ndarray, permutations: int = PERMUTATIONS, seed: int = _SEED
) -> float:
    """Two-sided p-value of the paired randomization test: the share of random sign flips of
    the per-query differences whose mean is at least as far from 0 as the observed one
    (counting the observed assignment, so never 0)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if d.size == 0 or not np.any(d):
        return 1.0
    observed = abs(d.mean()) - 1e-12
    rng = np.random.default_rng(seed)
    hits, done, chunk = 0, 0, max(1, min(permutations, 4_000_000 // d.size))
    while done < permutations:
        n = min(chunk, permutations - done)
        signs = rng.integers(0, 2, size=(n, d.size), dtype=np.int8) * 2 - 1
        hits += int((np.abs(signs @ d) / d.size >= observed).sum())
        done += n
    return (hits + 1) / (permutations + 1)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def compare_to_baseline(
    per_query: Mapping[tuple[str, str], Mapping[str, Mapping[str, float]]],
    baseline: str,
    measures: Sequence[str],
    permutations: int = PERMUTATIONS,
) -> list[Comparison]:
    """Every other encoder against ``baseline`` on every dataset both ran, for each measure;
    ``per_query[(encoder, dataset)][measure][query_id]`` holds the scores. Holm's correction
    is applied per measure over all its comparisons."""
    out: list[Comparison] = []
    for measure in measures:
        family = []
        for (encoder, dataset), scores in per_query.items():
            base = per_query.get((baseline, dataset))
            if encoder == baseline or base is None:
                continue
            qids = sorted(base[measure])
            a = np.array([scores[measure].get(q, 0.0) for q in qids])
            b = np.array([base[measure][q] for q in qids])
            family.append(
                Comparison(
                    encoder=encoder,
                    baseline=baseline,
                    dataset=dataset,
                    measure=measure,
                    n_queries=len(qids),
                    mean=float(a.mean()) if a.size else 0.0,
                    baseline_mean=float(b.mean()) if b.size else 0.0,
                    t_p=paired_t_test(a, b),
                    randomization_p=randomization_test(a, b, permutations),
                )
            )
        for c, t, r in zip(
            family,
            holm([c.t_p for c in family]),
            holm([c.randomization_p for c in family]),
            strict=True,
        ):
            c.t_p_holm, c.randomization_p_holm = t, r
        out += family
    return out
