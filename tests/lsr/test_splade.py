"""SPLADE and inference-free encoders on tiny random BERTs built in the test, and splade-tiny."""

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lsr import EncoderError, load_encoder
from lsr.inference_free import InferenceFreeEncoder
from lsr.splade import SpladeEncoder
from tests.conftest import shared_path

TEXTS = [
    "the cat sat on the mat",
    "paris is the capital city of france",
    "coffee",
    "whales and fish swim in the ocean while the sun and moon orbit",
]


def manual_splade(encoder, text, activation="log1p_relu"):
    """SPLADE by the formula, position by position, from the raw model logits."""
    m = encoder.doc_model
    enc = m.tokenizer(text, return_tensors="pt", truncation=True, max_length=m.max_length)
    with torch.no_grad():
        logits = m.model(**enc).logits[0]
    act = torch.log1p(torch.relu(logits))
    if activation == "l0":
        act = torch.log1p(act)
    w = act.max(dim=0).values
    w[m.special_ids] = 0
    return w.numpy()


def test_splade_vectors_follow_the_formula(tiny_mlm):
    enc = load_encoder(tiny_mlm)
    assert isinstance(enc, SpladeEncoder)
    docs = enc.encode_documents(TEXTS)
    assert isinstance(docs, sp.csr_array) and docs.shape == (4, len(enc.vocab))
    assert docs.dtype == np.float32
    for i, text in enumerate(TEXTS):  # batched, length-sorted encoding keeps the input order
        assert np.allclose(docs[[i]].toarray()[0], manual_splade(enc, text), atol=1e-5)
    assert docs[:, enc.doc_model.special_ids.numpy()].nnz == 0


def test_pruning_options(tiny_mlm):
    full = load_encoder(tiny_mlm).encode_documents(TEXTS)
    top = load_encoder(tiny_mlm, max_active_dims=5).encode_documents(TEXTS)
    assert np.diff(top.indptr).max() <= 5
    for i in range(len(TEXTS)):
        kept = top[[i]].toarray()[0]
        ref = full[[i]].toarray()[0]
        assert np.allclose(np.sort(kept)[-5:], np.sort(ref)[-5:])
    cut = load_encoder(tiny_mlm, threshold=0.2).encode_documents(TEXTS)
    assert cut.data.min() > 0.2 and cut.nnz == (full.data > 0.2).sum()


def test_long_documents_are_chunked_and_max_pooled(tiny_mlm):
    words = (
        "the cat sat mat paris france capital city coffee tea drink cup "
        "red blue green ocean whale fish"
    ).split()
    enc = load_encoder(tiny_mlm, max_length=8, max_chunks=3)  # 6 body tokens per window
    whole = enc.encode_documents([" ".join(words)]).toarray()[0]
    single = load_encoder(tiny_mlm, max_length=8)
    parts = single.encode_documents([" ".join(words[i : i + 6]) for i in (0, 6, 12)]).toarray()
    assert np.allclose(whole, parts.max(axis=0), atol=1e-5)
    truncated = single.encode_documents([" ".join(words)]).toarray()[0]
    assert np.allclose(truncated, parts[0], atol=1e-5)


def test_save_and_reload_with_a_separate_query_model(tiny_mlm, tmp_path):
    from tests.conftest import make_tiny_mlm

    qm = make_tiny_mlm(tmp_path / "qmodel", seed=7)
    enc = SpladeEncoder.from_pretrained(tiny_mlm, query_model=qm, max_active_dims=20)
    enc.save_pretrained(tmp_path / "saved")
    again = load_encoder(tmp_path / "saved")
    assert again.query_model is not None and again.max_active_dims == 20
    for a, b in [
        (enc.encode_queries(TEXTS), again.encode_queries(TEXTS)),
        (enc.encode_documents(TEXTS), again.encode_documents(TEXTS)),
    ]:
        assert np.allclose(a.toarray(), b.toarray(), atol=1e-6)
    assert not np.allclose(
        enc.encode_queries(TEXTS).toarray(), enc.encode_documents(TEXTS).toarray()
    )


def test_inference_free_queries_are_table_lookups(tiny_mlm, tmp_path):
    enc = InferenceFreeEncoder.from_pretrained(tiny_mlm)
    assert not enc.fitted
    with pytest.raises(EncoderError, match="no query weights"):
        enc.encode_queries(["cat"])
    enc.fit(TEXTS)
    enc.doc_model.model = None  # no model may run at query time
    q = enc.encode_queries(["the cat cat zebra [CLS]"])
    vocab = enc.vocab
    assert {vocab[i] for i in q.indices} == {"the", "cat"}  # distinct, known, non-special
    n, df_cat, df_the = len(TEXTS), 1, 3
    expect = {
        "cat": np.log1p((n - df_cat + 0.5) / (df_cat + 0.5)),
        "the": np.log1p((n - df_the + 0.5) / (df_the + 0.5)),
    }
    for i, w in zip(q.indices, q.data, strict=True):
        assert w == pytest.approx(expect[vocab[i]], rel=1e-6)


def test_idf_json_round_trip_and_public_layout(tiny_mlm, tmp_path):
    import shutil

    folder = tmp_path / "public-model"
    shutil.copytree(tiny_mlm, folder)
    (folder / "idf.json").write_text(
        json.dumps({"cat": 3.5, "paris": 2.0, "nope-not-a-token": 9.0})
    )
    enc = load_encoder(folder)  # a model folder with idf.json is an inference-free checkpoint
    assert isinstance(enc, InferenceFreeEncoder)
    assert enc.decode(enc.encode_queries(["paris cat dog"])) == [("cat", 3.5), ("paris", 2.0)]
    enc.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "idf.json").read_text()) == {"cat": 3.5, "paris": 2.0}
    again = load_encoder(tmp_path / "saved")
    assert isinstance(again, InferenceFreeEncoder)
    assert np.array_equal(again.query_weights, enc.query_weights)


def test_l0_activation(tiny_mlm):
    enc = InferenceFreeEncoder.from_pretrained(tiny_mlm, activation="l0")
    docs = enc.encode_documents(TEXTS[:2])
    assert np.allclose(docs[[1]].toarray()[0], manual_splade(enc, TEXTS[1], "l0"), atol=1e-5)


def test_loading_errors(tiny_mlm, tmp_path):
    with pytest.raises(EncoderError, match="Cannot load a masked-LM model"):
        load_encoder("someone/not-a-model-offline")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderError, match="neither a saved lsr encoder"):
        load_encoder(tmp_path / "empty")
    with pytest.raises(EncoderError, match="Unknown encoder"):
        load_encoder("no-such-thing.bin")
    with pytest.raises(EncoderError, match="Unknown activation"):
        load_encoder("inference-free:" + str(tiny_mlm), activation="gelu")


def test_splade_tiny_expands_queries_as_trained():
    enc = load_encoder(shared_path("models", "splade-tiny"))
    q = enc.encode_queries(["what is the capital of france"])
    terms = [t for t, _ in enc.decode(q)]
    assert {"capital", "france"} <= set(terms[:3])
    assert "paris" in terms and "french" in terms[:5]
    assert "[CLS]" not in terms and "[SEP]" not in terms


def test_the_vocabulary_head_runs_on_real_tokens_only(tiny_mlm, monkeypatch):
    """A batch of texts of different lengths gives the same pooled logits whether the head
    runs on the real tokens (the split path) or the whole model runs over the padding."""
    import lsr.mlm

    m = load_encoder(tiny_mlm).doc_model
    assert m._split is not None  # BertForMaskedLM: encoder and head
    windows, _ = m._windows(TEXTS, m.max_length)
    ids, mask = m._tensors(windows)
    assert (mask == 0).any()  # there is padding to leave out
    with torch.inference_mode():
        whole = m._max_logits(ids, mask, None)
        split = m._max_logits(ids, mask, m._split)
    assert torch.allclose(whole, split, atol=1e-5)

    # a head that is not the model's own fails the check at load, and the model runs whole
    def wrong_parts(model):
        decoder = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size)
        return lsr.mlm.HeadParts(model.bert, lambda h: h, decoder)

    monkeypatch.setattr(lsr.mlm, "_head_parts", wrong_parts)
    wrong = load_encoder(tiny_mlm).doc_model
    assert wrong._split is None and wrong._screen is None


def test_gradients_flow_through_the_split_head(tiny_mlm):
    m = load_encoder(tiny_mlm).doc_model
    m.model.train()
    m.forward(TEXTS).sum().backward()
    assert m.model.cls.predictions.transform.dense.weight.grad.abs().sum() > 0


def test_a_naver_folder_loads_with_the_same_vectors(tiny_mlm, tmp_path):
    """naver's SPLADE checkpoints ship config.json, pytorch_model.bin and vocab.txt only (no
    tokenizer.json): the fast tokenizer is built from vocab.txt and the vectors are the same."""
    from lsr.hf import import_transformers

    tf = import_transformers()
    model = tf.BertForMaskedLM.from_pretrained(str(tiny_mlm))
    naver = tmp_path / "naver"
    naver.mkdir()
    torch.save(model.state_dict(), naver / "pytorch_model.bin")
    model.config.to_json_file(str(naver / "config.json"))
    vocab = sorted(
        load_encoder(tiny_mlm).doc_model.tokenizer.get_vocab().items(), key=lambda kv: kv[1]
    )
    (naver / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab))
    assert sorted(p.name for p in naver.iterdir()) == [
        "config.json",
        "pytorch_model.bin",
        "vocab.txt",
    ]
    enc = load_encoder(naver)
    assert isinstance(enc, SpladeEncoder) and enc.doc_model.zero_special
    expected = load_encoder(tiny_mlm)
    for side in ("encode_documents", "encode_queries"):
        got, want = getattr(enc, side)(TEXTS), getattr(expected, side)(TEXTS)
        assert np.array_equal(got.indices, want.indices)
        assert np.abs(got.data - want.data).max() <= 1e-6
