"""Shared fixtures: offline Hugging Face, random sparse data, paths to ../shared data."""

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (the team's shared data is read in place, never copied)")
    return path


def random_csr(rng, n_rows, n_cols, density, integer=False, max_value=5):
    """Random non-negative sparse rows; ``integer`` weights make every score exact in float32."""
    m = sp.random_array((n_rows, n_cols), density=density, format="csr", dtype=np.float32, rng=rng)
    if integer:
        m.data = rng.integers(1, max_value + 1, size=m.data.shape[0]).astype(np.float32)
    return sp.csr_array(m)


def brute_force_topk(docs: sp.csr_array, queries: sp.csr_array, k: int):
    """Reference top-k by scipy matrix product: score desc, doc number asc, positive scores only."""
    scores = (queries @ docs.T).toarray()
    out = []
    for row in scores:
        order = np.lexsort((np.arange(row.shape[0]), -row))
        order = [int(d) for d in order if row[d] > 0][:k]
        out.append((order, row[order]))
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
