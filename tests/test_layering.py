"""The import rules of DESIGN.md: lower layers never pull in higher ones or heavy libraries."""

import subprocess
import sys

import pytest


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        ("import kernels", {"index", "lsr", "eval", "service", "torch"}),
        ("import index", {"lsr", "eval", "service", "torch", "transformers", "tokenizers"}),
        ("import lsr", {"index", "eval", "service", "torch", "transformers", "fastapi"}),
        ("import eval", {"service", "torch", "fastapi", "ir_datasets"}),
        ("import service.cli", {"torch", "fastapi", "ir_datasets"}),
    ],
)
def test_imports_stay_in_their_layer(statement, forbidden):
    assert not (_loaded_after(statement) & forbidden)
