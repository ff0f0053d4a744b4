"""Fixtures of the index tests."""

import pytest

from lsr.index import Index
from tests.conftest import random_csr


@pytest.fixture
def base(tmp_path, rng):
    """A 50-document collection (ids b0..b49) over a 40-term vocabulary."""
    path = tmp_path / "idx"
    docs = random_csr(rng, 50, 40, 0.2, integer=True)
    Index.build(docs, [f"b{i}" for i in range(50)], [f"t{i}" for i in range(40)]).save(path)
    return path
