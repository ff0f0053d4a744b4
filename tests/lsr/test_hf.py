"""transformers imports from a source checkout, whose ``kernels/`` folder would otherwise
shadow Hugging Face's ``kernels`` package (which transformers 5 imports)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
from lsr.hf import import_transformers
model_class = import_transformers().BertForMaskedLM  # imports the modeling and kernels code
import kernels
print(kernels.__file__)
"""


def test_transformers_imports_with_the_checkout_root_on_sys_path():
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert not done.stdout.strip().startswith(str(ROOT / "kernels"))
