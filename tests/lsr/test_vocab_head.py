"""The screened vocabulary head (int8 bound, then float32 on the candidates) gives exactly the
terms and weights of the whole head: on random layers built to put logits just around zero,
on tiny BERTs with every encoding option, and on splade-tiny with SciFact queries."""

import json

import numpy as np
import pytest
import torch

import lsr.mlm
from lsr import load_encoder
from lsr.mlm import MLMSparseModel, to_sparse
from lsr.vocab_head import MAX_ROWS, ScreenedDecoder, int8_products_available
from tests.conftest import shared_path

pytestmark = pytest.mark.skipif(
    not int8_products_available(), reason="this torch has no int8 matrix product on the CPU"
)


def reference(decoder, x, lengths):
    """Per text, the positive max logits of the whole layer, as (term ids, logits)."""
    out = []
    with torch.no_grad():
        for rows in torch.split(x, lengths):
            top = decoder(rows).amax(dim=0)
            terms = torch.nonzero(top > 0).squeeze(1)
            out.append((terms, top[terms]))
    return out


def positive_max(screen, x, lengths):
    """The screened candidates reduced as max pooling does: terms whose max logit is > 0."""
    out = []
    for terms, logits in screen.candidates(x, lengths):
        top = logits.amax(dim=0)
        out.append((terms[top > 0], top[top > 0]))
    return out


def assert_same(got, want):
    assert len(got) == len(want)
    for (terms, logits), (ref_terms, ref_logits) in zip(got, want, strict=True):
        assert torch.equal(terms, ref_terms)
        assert torch.allclose(logits, ref_logits, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_screening_keeps_every_positive_logit_even_just_above_zero(seed):
    gen = torch.Generator().manual_seed(seed)
    hidden, vocab = 48, 3000
    lengths = [1, 7, 40, MAX_ROWS + 90, 3]  # one text spans two int8 products
    x = torch.randn(sum(lengths), hidden, generator=gen) * torch.rand(1, hidden, generator=gen) * 4
    x[sum(lengths[:4]) :] = 0.0  # a text whose rows are all zero
    decoder = torch.nn.Linear(hidden, vocab)
    with torch.no_grad():
        decoder.weight.copy_(torch.randn(vocab, hidden, generator=gen) * 0.3)
        decoder.weight[5] = 0.0  # a zero row: its step must not divide by zero
        # biases that put each term's largest logit on the first text at +-1e-4 or +-1e-2
        top = (x[1:8] @ decoder.weight.T).amax(dim=0)
        offsets = torch.tensor([1e-4, -1e-4, 1e-2, -1e-2]).repeat(vocab // 4)
        decoder.bias.copy_(-top + offsets)
    lsr_screen = ScreenedDecoder(decoder)
    want = reference(decoder, x, lengths)
    assert_same(positive_max(lsr_screen, x, lengths), want)
    assert want[1][0].numel() == vocab // 2  # the +1e-4 and +1e-2 terms of the second text
    assert want[-1][0].numel() == int((decoder.bias > 0).sum())  # zero rows: the bias alone


def test_a_layer_changed_in_place_is_quantized_again():
    torch.manual_seed(0)
    decoder = torch.nn.Linear(16, 500)
    x = torch.randn(30, 16)
    screen = ScreenedDecoder(decoder)
    assert_same(positive_max(screen, x, [10, 20]), reference(decoder, x, [10, 20]))
    with torch.no_grad():  # what an optimizer step does
        decoder.weight.mul_(-3.0)
        decoder.bias.add_(0.5)
    assert_same(positive_max(screen, x, [10, 20]), reference(decoder, x, [10, 20]))


TEXTS = [
    "the cat sat on the mat",
    "paris is the capital city of france",
    "coffee",
    "",
    "whales and fish swim in the ocean while the sun and moon orbit the cat",
]


@pytest.mark.parametrize(
    "options, encode",
    [
        ({}, {}),
        ({"activation": "l0"}, {}),
        ({"pooling": "sum"}, {}),
        ({"pooling": "sum", "activation": "l0", "zero_special": False}, {"threshold": 0.3}),
        ({"zero_special": False}, {}),
        ({}, {"max_active_dims": 3}),
        ({}, {"threshold": 0.3}),
        ({"max_length": 6, "max_chunks": 3}, {}),
    ],
)
def test_an_encoder_gives_the_whole_heads_vectors(tiny_mlm, options, encode):
    m = MLMSparseModel.from_pretrained(tiny_mlm, **options)
    assert m._screen is not None and m._screening
    m.model.eval()
    with torch.inference_mode():
        whole = to_sparse(
            m.forward(TEXTS), encode.get("max_active_dims"), encode.get("threshold", 0.0)
        )
        screened = m._screened_rows(
            TEXTS, None, encode.get("max_active_dims"), encode.get("threshold", 0.0)
        )
    assert np.array_equal(whole.indptr, screened.indptr)
    assert np.array_equal(whole.indices, screened.indices)
    assert np.allclose(whole.data, screened.data, rtol=1e-6, atol=1e-6)
    if m.zero_special:
        assert screened[:, m.special_ids.numpy()].nnz == 0
    encoded = m.encode(TEXTS, batch_size=2, **encode)  # batched, longest first, order kept
    assert np.allclose(encoded.toarray(), whole.toarray(), atol=1e-6)


def test_without_int8_products_the_whole_head_runs(tiny_mlm, monkeypatch):
    expected = load_encoder(tiny_mlm).encode_documents(TEXTS)
    monkeypatch.setattr(lsr.mlm, "int8_products_available", lambda: False)
    m = load_encoder(tiny_mlm)
    assert m.doc_model._screen is None
    assert np.allclose(m.encode_documents(TEXTS).toarray(), expected.toarray(), atol=1e-6)


def test_splade_tiny_gives_the_same_vectors_screened_or_not():
    folder = shared_path("models", "splade-tiny")
    queries_file = shared_path("data", "scifact", "queries.jsonl")
    enc = load_encoder(folder)
    m = enc.doc_model
    assert m._screening
    with open(queries_file) as f:
        texts = [json.loads(line)["text"] for line in f][:200]
    screened = enc.encode_queries(texts)
    m._screen = None
    whole = enc.encode_queries(texts)
    assert np.array_equal(whole.indptr, screened.indptr)
    assert np.array_equal(whole.indices, screened.indices)
    assert np.abs(whole.data - screened.data).max() <= 1e-6
