"""Dense encoders: the wordllama model shipped in its wheel, and transformers (tiny BERTs
built here) with mean or CLS pooling, prompts and sentence-transformers folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lsr.dense import TransformerDenseEncoder, is_dense
from lsr.encoders import load_encoder
from lsr.errors import EncoderError


def test_wordllama_is_real_offline_and_normalized(tmp_path):
    pytest.importorskip("wordllama")
    enc = load_encoder("dense:wordllama")
    assert is_dense(enc) and enc.dim == 256
    v = enc.encode_queries(["protein folding in yeast", "protein folding in yeast cells", "jazz"])
    assert v.shape == (3, 256) and v.dtype == np.float32
    assert np.allclose((v**2).sum(1), 1.0, atol=1e-5)
    # a real model: related texts are closer than unrelated ones
    assert v[0] @ v[1] > v[0] @ v[2] + 0.1
    enc.save_pretrained(tmp_path / "saved")
    again = load_encoder(tmp_path / "saved")
    assert np.array_equal(again.encode_documents(["jazz"]), enc.encode_documents(["jazz"]))
    assert enc.encode_documents([]).shape == (0, 256)


def _manual(folder, texts, pooling):
    import torch

    from lsr.hf import import_transformers

    tf = import_transformers()
    tok = tf.AutoTokenizer.from_pretrained(str(folder))
    model = tf.AutoModel.from_pretrained(str(folder)).eval()
    batch = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
    pooled = pooled.numpy()
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_transformer_pooling_matches_a_manual_computation(tiny_mlm, pooling, tmp_path):
    texts = ["the cat sat on the mat", "paris is the capital of france", "jazz"]
    enc = load_encoder(f"dense:{tiny_mlm}", pooling=pooling, max_length=128)
    got = enc.encode_documents(texts)
    assert np.allclose(got, _manual(tiny_mlm, texts, pooling), atol=1e-5)
    enc.save_pretrained(tmp_path / "enc")
    again = load_encoder(tmp_path / "enc")
    assert again.config["pooling"] == pooling
    assert np.allclose(again.encode_documents(texts), got, atol=1e-6)


def test_prompts_and_sentence_transformers_settings(tiny_mlm, tmp_path):
    import shutil

    folder = tmp_path / "st"
    shutil.copytree(tiny_mlm, folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_cls_token": True})
    )
    kinds = ("Transformer", ""), ("Pooling", "1_Pooling")
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (kind, path) in enumerate(kinds)
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "what is ", "document": "doc "}})
    )
    enc = load_encoder(f"dense:{folder}")
    assert (enc.pooling, enc.max_length, enc.query_prompt, enc.document_prompt) == (
        "cls",
        64,
        "what is ",
        "doc ",
    )
    q = enc.encode_queries(["cats"])
    assert np.allclose(q, _manual(folder, ["what is cats"], "cls"), atol=1e-5)
    assert not np.allclose(q, enc.encode_documents(["cats"]))
    assert load_encoder(f"dense:{folder}", pooling="mean").pooling == "mean"  # options win


def test_sentence_transformers_itself_gives_the_same_vectors(tiny_mlm):
    from lsr.hf import import_transformers

    import_transformers()  # (sentence-transformers imports transformers: the checkout's way)
    st = pytest.importorskip("sentence_transformers")
    try:  # sentence-transformers 6
        from sentence_transformers.sentence_transformer.modules import (
            Normalize,
            Pooling,
            Transformer,
        )
    except ImportError:  # 5
        from sentence_transformers.models import Normalize, Pooling, Transformer
    model = st.SentenceTransformer(
        modules=[
            Transformer(str(tiny_mlm), max_seq_length=128),
            Pooling(32, pooling_mode="mean"),
            Normalize(),
        ],
        device="cpu",
    )
    texts = ["the cat sat on the mat", "whales in the ocean"]
    expected = model.encode(texts, convert_to_numpy=True)
    got = load_encoder(f"dense:{tiny_mlm}", pooling="mean").encode_documents(texts)
    assert np.abs(got - expected).max() < 1e-5


def test_bad_settings_are_refused(tiny_mlm, tmp_path):
    with pytest.raises(EncoderError, match="pooling"):
        load_encoder(f"dense:{tiny_mlm}", pooling="max")
    with pytest.raises(EncoderError, match="Cannot load a transformer"):
        TransformerDenseEncoder.load(tmp_path / "nothing-here")
    with pytest.raises(EncoderError, match="names no model"):
        load_encoder("dense:")


def test_a_hub_id_reads_its_sentence_transformers_settings_from_the_cache(tiny_mlm, tmp_path):
    """``dense:OWNER/NAME`` offline: the model and its sentence-transformers files come from
    the Hugging Face cache (laid out as huggingface_hub lays it out), CLS pooling included."""
    import os
    import shutil
    import subprocess
    import sys

    snapshot = tmp_path / "hub" / "models--tiny--st-model" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_mlm, snapshot)
    (snapshot / "1_Pooling").mkdir()
    (snapshot / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_cls_token": True})
    )
    (snapshot / "modules.json").write_text(json.dumps([
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
    ]))  # fmt: skip
    (snapshot / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: "}})
    )
    refs = tmp_path / "hub" / "models--tiny--st-model" / "refs"
    refs.mkdir()
    (refs / "main").write_text("0123abcd")
    code = (
        "from lsr.encoders import load_encoder\n"
        "e = load_encoder('dense:tiny/st-model')\n"
        "print(e.pooling, repr(e.query_prompt), e.encode_queries(['cats']).shape)\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[0] == "cls 'query: ' (1, 32)"
