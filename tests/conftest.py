"""Shared fixtures: offline Hugging Face, random sparse data, paths to ../shared data."""

import errno
import os
import subprocess
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
def small_fs(tmp_path):
    """A real 3 MiB tmpfs, so writes meet a real ENOSPC (needs root and mount rights)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_disk(folder: Path, chunk: int = 64 * 1024) -> Path:
    """Fill the filesystem of ``folder`` with a file until ENOSPC; returns the file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * chunk)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY_WORDS = (
    "the a of is what where who how cat cats dog dogs sat mat paris france french capital city "
    "coffee tea drink drinks cup red blue green ocean whale whales fish river mountain snow "
    "music jazz piano guitar train railway station bread flour yeast bake oven bee bees honey "
    "flower volcano lava eruption chess king queen board moon sun star planet orbit"
).split()


def make_tiny_mlm(folder: Path, words=TINY_WORDS, seed: int = 0, hidden: int = 32) -> Path:
    """A random-weight BertForMaskedLM with a word-level WordPiece vocabulary, saved to ``folder``.

    Built entirely in the test (no download): a `tokenizers` WordPiece tokenizer wrapped in
    PreTrainedTokenizerFast, and a 1-layer BERT whose MLM head spans the same vocabulary.
    """
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    from lsr.hf import import_transformers

    tf = import_transformers()
    BertConfig, BertForMaskedLM = tf.BertConfig, tf.BertForMaskedLM
    PreTrainedTokenizerFast = tf.PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIAL + list(words))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    folder.mkdir(parents=True, exist_ok=True)
    BertForMaskedLM(config).save_pretrained(str(folder))
    fast.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_mlm(tmp_path_factory) -> Path:
    return make_tiny_mlm(tmp_path_factory.mktemp("tiny") / "mlm")
