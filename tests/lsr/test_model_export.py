"""``lsr export-model``: what sentence-transformers loads from the exported folder gives lsr's
vectors (max abs difference <= 1e-5, same non-zero terms), for each setting a model carries;
OpenSearch's layout reads back into lsr with the same vectors."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from lsr import EncoderError, load_encoder
from lsr.inference_free import InferenceFreeEncoder
from lsr.mlm import MLMSparseModel
from lsr.service.cli import main
from lsr.splade import SpladeEncoder
from tests.conftest import make_tiny_mlm, shared_path
from tests.lsr.test_st_folders import TEXTS, assert_same_vectors, st_vectors

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None,
    reason="sentence-transformers (a dev dependency) is not installed",
)


def _splade(mlm, pooling="max", activation="log1p_relu", zero_special=True, **options):
    doc = MLMSparseModel.from_pretrained(
        mlm, pooling=pooling, activation=activation, zero_special=zero_special, device="cpu"
    )
    return SpladeEncoder(doc, **options)


def _export(encoder, tmp_path, fmt="sentence-transformers"):
    encoder.save_pretrained(tmp_path / "lsr")
    out = tmp_path / fmt
    assert main(["export-model", str(tmp_path / "lsr"), "--format", fmt, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    "pooling, activation, zero_special, max_active_dims",
    [
        ("max", "log1p_relu", True, None),
        ("max", "log1p_relu", False, None),
        ("sum", "log1p_relu", True, 7),
        ("max", "l0", True, 5),
    ],
)
def test_sentence_transformers_loads_a_splade_export_with_our_vectors(
    tiny_mlm, tmp_path, pooling, activation, zero_special, max_active_dims
):
    ours = _splade(tiny_mlm, pooling, activation, zero_special, max_active_dims=max_active_dims)
    ours.query_max_length = ours.doc_model.max_length  # sentence-transformers cuts queries there
    out = _export(ours, tmp_path)
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "SpladePooling"]
    queries, documents = st_vectors(out)
    assert_same_vectors(ours.encode_queries(TEXTS), queries)
    assert_same_vectors(ours.encode_documents(TEXTS), documents)
    special = ours.doc_model.special_ids.numpy()
    if zero_special:  # zeroed by the exported model itself
        assert not documents[:, special].any()
    elif max_active_dims is None:
        assert documents[:, special].any()
    again = load_encoder(out)  # and lsr reads its own export back
    assert_same_vectors(again.encode_documents(TEXTS), documents)


def test_an_inference_free_export_is_a_router_with_our_vectors(tiny_mlm, tmp_path):
    doc = MLMSparseModel.from_pretrained(tiny_mlm, activation="l0", device="cpu")
    weights = np.random.default_rng(3).random(doc.vocab_size).astype(np.float32)
    ours = InferenceFreeEncoder(
        doc, query_weights=weights, query_prompt="what is ", document_prompt="the "
    )
    out = _export(ours, tmp_path)
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Router"]
    prompts = json.loads((out / "config_sentence_transformers.json").read_text())["prompts"]
    assert (prompts["query"], prompts["document"]) == ("what is ", "the ")
    router = json.loads((out / "router_config.json").read_text())
    (query,) = router["structure"]["query"]
    assert router["types"][query].endswith("SparseStaticEmbedding")
    queries, documents = st_vectors(out)
    assert_same_vectors(ours.encode_queries(TEXTS), queries)
    assert_same_vectors(ours.encode_documents(TEXTS), documents)
    again = load_encoder(out)
    assert isinstance(again, InferenceFreeEncoder)
    assert_same_vectors(again.encode_queries(TEXTS), queries)


def test_a_splade_with_its_own_query_model_exports_as_a_router(tmp_path):
    doc_folder = make_tiny_mlm(tmp_path / "doc", seed=1)
    query_folder = make_tiny_mlm(tmp_path / "query", seed=2)
    doc = MLMSparseModel.from_pretrained(doc_folder, device="cpu")
    query = MLMSparseModel.from_pretrained(query_folder, device="cpu")
    ours = SpladeEncoder(doc, query, query_max_length=doc.max_length)
    out = _export(ours, tmp_path)
    queries, documents = st_vectors(out)
    assert_same_vectors(ours.encode_queries(TEXTS), queries)
    assert_same_vectors(ours.encode_documents(TEXTS), documents)
    assert not np.allclose(queries, documents)  # two models: the routes differ


def test_the_opensearch_layout_reads_back_with_our_vectors(tiny_mlm, tmp_path):
    doc = MLMSparseModel.from_pretrained(tiny_mlm, device="cpu")
    weights = np.random.default_rng(4).random(doc.vocab_size).astype(np.float32)
    weights[::7] = 0
    ours = InferenceFreeEncoder(doc, query_weights=weights)
    out = _export(ours, tmp_path, "opensearch")
    assert {p.name for p in out.iterdir()} >= {
        "config.json", "model.safetensors", "tokenizer.json", "idf.json",
        "query_token_weights.txt",
    }  # fmt: skip
    idf = json.loads((out / "idf.json").read_text())
    lines = (out / "query_token_weights.txt").read_text().splitlines()
    assert len(lines) == len(idf) and all(line.count("\t") == 1 for line in lines)
    assert {t: float(w) for t, w in (line.split("\t") for line in lines)} == idf
    assert not set(idf) & {doc.vocab[i] for i in doc.special_ids.tolist()}
    again = load_encoder(out)
    assert isinstance(again, InferenceFreeEncoder)
    assert_same_vectors(again.encode_queries(TEXTS), ours.encode_queries(TEXTS).toarray())
    assert_same_vectors(again.encode_documents(TEXTS), ours.encode_documents(TEXTS).toarray())
    (out / "idf.json").unlink()  # the text table alone, as some OpenSearch repositories ship
    alone = load_encoder(out)
    assert isinstance(alone, InferenceFreeEncoder)
    assert_same_vectors(alone.encode_queries(TEXTS), ours.encode_queries(TEXTS).toarray())
    (out / "query_token_weights.txt").write_text("good\t1.5\nno-tab-here\n")
    with pytest.raises(EncoderError, match="line 2: expected a token, a tab and a weight"):
        load_encoder(out)


def test_splade_tiny_exported_for_sentence_transformers_gives_our_vectors(tmp_path):
    model = shared_path("models", "splade-tiny")
    queries = [
        json.loads(line)["text"]
        for line in shared_path("data", "scifact", "queries.jsonl").read_text().splitlines()[:100]
    ]
    documents = [
        json.loads(line)["text"]
        for line in shared_path("data", "scifact", "corpus.jsonl").read_text().splitlines()[:30]
    ]
    # fmt: skip
    out = tmp_path / "st"
    assert main(["export-model", str(model), "--format", "sentence-transformers", "--out",
                 str(out)]) == 0  # fmt: skip
    from sentence_transformers import SparseEncoder

    theirs = SparseEncoder(str(out), device="cpu")
    ours = load_encoder(model)
    ours.query_max_length = ours.doc_model.max_length
    q = theirs.encode_query(queries, convert_to_tensor=True).to_dense().numpy()
    d = theirs.encode_document(documents, convert_to_tensor=True).to_dense().numpy()
    assert_same_vectors(ours.encode_queries(queries), q)
    assert_same_vectors(ours.encode_documents(documents), d)


def test_what_cannot_be_exported_is_refused_clearly(tiny_mlm, tmp_path, capsys):
    cases = [
        (["bm25"], "sentence-transformers", "has no model to export"),
    ]
    thresholded = _splade(tiny_mlm, threshold=0.5)
    thresholded.save_pretrained(tmp_path / "thresholded")
    cases.append(([str(tmp_path / "thresholded")], "opensearch", "drops weights at or below"))
    two = SpladeEncoder(
        MLMSparseModel.from_pretrained(tiny_mlm, device="cpu"),
        MLMSparseModel.from_pretrained(tiny_mlm, device="cpu"),
    )
    two.save_pretrained(tmp_path / "two")
    cases.append(([str(tmp_path / "two")], "opensearch", "separate query model"))
    for model, fmt, message in cases:
        out = tmp_path / "out"
        assert main(["export-model", *model, "--format", fmt, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
        assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert main(["export-model", str(tiny_mlm), "--format", "opensearch", "--out",
                 str(tmp_path / "full")]) == 2  # fmt: skip
    assert "not an empty folder" in capsys.readouterr().err
