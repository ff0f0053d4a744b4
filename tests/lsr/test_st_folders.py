"""sentence-transformers SPLADE folders, saved by sentence-transformers itself, load in lsr
with every option they carry (pooling strategy, activation, max_active_dims, special tokens)
and give sentence-transformers' own vectors; what lsr cannot run is refused by name."""

import json
import shutil

import numpy as np
import pytest

from lsr import EncoderError, load_encoder
from lsr.inference_free import InferenceFreeEncoder
from lsr.splade import SpladeEncoder

TEXTS = [
    "the cat sat on the mat",
    "paris is the capital city of france",
    "coffee",
    "whales and fish swim in the ocean while the sun and moon orbit",
    " ".join(["the sun and moon orbit while whales swim in the ocean"] * 14),  # past 128 tokens
]
V5_TYPES = (
    "sentence_transformers.sparse_encoder.models.MLMTransformer",
    "sentence_transformers.sparse_encoder.models.SpladePooling",
)


def save_sparse_encoder(mlm, folder, pooling="max", activation="relu", max_active_dims=None):
    """A SPLADE SparseEncoder over the tiny masked LM ``mlm``, saved by sentence-transformers
    (v6 layout: a fill-mask ``Transformer``, then ``SpladePooling``)."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    modules = [
        Transformer(str(mlm), transformer_task="fill-mask"),
        SpladePooling(pooling_strategy=pooling, activation_function=activation),
    ]
    SparseEncoder(modules=modules, max_active_dims=max_active_dims, device="cpu").save(str(folder))
    return folder


def as_v5(folder):
    """The folder as sentence-transformers 5 wrote it: ``MLMTransformer`` and
    ``SpladePooling`` under ``sparse_encoder.models``, ``max_seq_length`` and
    ``do_lower_case`` in ``sentence_bert_config.json``, ``word_embedding_dimension``."""
    modules = json.loads((folder / "modules.json").read_text())
    for module, kind in zip(modules, V5_TYPES, strict=True):
        module["type"] = kind
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 128, "do_lower_case": False})
    )
    pooling_file = folder / "1_SpladePooling" / "config.json"
    pooling = json.loads(pooling_file.read_text())
    pooling["word_embedding_dimension"] = pooling.pop("embedding_dimension", None)
    pooling_file.write_text(json.dumps(pooling))
    return folder


def st_vectors(folder):
    from sentence_transformers import SparseEncoder

    model = SparseEncoder(str(folder), device="cpu")
    queries = model.encode_query(TEXTS, convert_to_tensor=True).to_dense().numpy()
    documents = model.encode_document(TEXTS, convert_to_tensor=True).to_dense().numpy()
    return queries, documents


def assert_same_vectors(ours, theirs):
    ours = ours.toarray()
    assert ours.shape == theirs.shape
    assert np.array_equal(ours != 0, theirs != 0)  # the same non-zero terms
    assert np.abs(ours - theirs).max() <= 1e-5


@pytest.mark.parametrize("layout", ["v6", "v5"])
@pytest.mark.parametrize(
    "pooling, activation, max_active_dims",
    [
        ("max", "relu", None),
        ("sum", "relu", None),
        ("sum", "log1p_relu", 7),
        ("max", "log1p_relu", 5),
    ],
)
def test_a_sentence_transformers_folder_gives_its_own_vectors(
    tiny_mlm, tmp_path, layout, pooling, activation, max_active_dims
):
    folder = save_sparse_encoder(tiny_mlm, tmp_path / "st", pooling, activation, max_active_dims)
    if layout == "v5":
        as_v5(folder)
    queries, documents = st_vectors(folder)
    enc = load_encoder(folder)
    assert isinstance(enc, SpladeEncoder)
    assert enc.doc_model.pooling == pooling and enc.max_active_dims == max_active_dims
    assert_same_vectors(enc.encode_queries(TEXTS), queries)
    assert_same_vectors(enc.encode_documents(TEXTS), documents)
    if max_active_dims is None:  # sentence-transformers keeps [CLS] and [SEP]; so does lsr
        assert (documents[:, enc.doc_model.special_ids.numpy()] != 0).any()
    # saved by lsr, the encoder keeps those settings
    enc.save_pretrained(tmp_path / "saved")
    again = load_encoder(tmp_path / "saved")
    assert_same_vectors(again.encode_documents(TEXTS), documents)
    # the whole head (no int8 screening) gives them too
    enc.doc_model._screen = None
    assert_same_vectors(enc.encode_documents(TEXTS), documents)


def test_a_user_option_overrides_the_folders(tiny_mlm, tmp_path):
    folder = save_sparse_encoder(tiny_mlm, tmp_path / "st", max_active_dims=7)
    vectors = load_encoder(folder, max_active_dims=3).encode_documents(TEXTS)
    assert np.diff(vectors.indptr).max() == 3


def _edit(folder, name, change):
    path = folder / name
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


ROUTER = "sentence_transformers.base.modules.router.Router"
POOLING = "1_SpladePooling/config.json"
ST_CONFIG = "config_sentence_transformers.json"
REFUSED = [
    ("modules.json", lambda m: m.insert(0, {"path": "", "type": ROUTER}), f"module '{ROUTER}'"),
    ("modules.json", lambda m: m[0].update(path="0_Transformer"), "in '0_Transformer'"),
    ("modules.json", lambda m: m.pop(), r"modules \['Transformer'\] are not a SPLADE"),
    (POOLING, lambda c: c.update(pooling_strategy="mean"), "pooling_strategy 'mean'"),
    (POOLING, lambda c: c.update(activation_function="gelu"), "activation_function 'gelu'"),
    (POOLING, lambda c: c.update(embedding_dimension=12), "says 12 dimensions"),
    (
        "sentence_bert_config.json",
        lambda c: c.update(transformer_task="feature-extraction"),
        "transformer_task 'feature-extraction'",
    ),
    (ST_CONFIG, lambda c: c.update(max_active_dims=0), "max_active_dims must be a positive"),
    (POOLING, lambda c: c.update(embedding_dimension="wide"), "embedding_dimension must be a"),
    (
        "sentence_bert_config.json",
        lambda c: c.update(max_seq_length="long"),
        "max_seq_length must be a positive",
    ),
    ("modules.json", lambda m: m.__setitem__(slice(None), [1]), "must be a list of modules"),
    (ST_CONFIG, lambda c: c.update(default_prompt_name="web"), "default_prompt_name 'web'"),
    (ST_CONFIG, lambda c: c["prompts"].update(query=3), "prompts must map names to texts"),
]


@pytest.mark.parametrize("name, change, message", REFUSED)
def test_what_lsr_cannot_run_is_refused_by_name(tiny_mlm, tmp_path, name, change, message):
    folder = save_sparse_encoder(tiny_mlm, tmp_path / "st")
    _edit(folder, name, change)
    with pytest.raises(EncoderError, match=message):
        load_encoder(folder)


def test_an_inference_free_encoder_keeps_the_folders_document_model_settings(tiny_mlm, tmp_path):
    folder = save_sparse_encoder(tiny_mlm, tmp_path / "st", "sum", "log1p_relu")
    _, documents = st_vectors(folder)
    enc = load_encoder(f"inference-free:{folder}")
    assert enc.doc_model.pooling == "sum" and enc.doc_model.activation == "l0"
    assert_same_vectors(enc.encode_documents(TEXTS), documents)


def save_router(mlm, folder, pooling="max", activation="relu", seed=0):
    """An inference-free SparseEncoder saved by sentence-transformers: a Router whose query
    route is a SparseStaticEmbedding (random weights) and whose document route is SPLADE."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Router, Transformer
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding, SpladePooling
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(mlm))
    weights = torch.rand(len(tokenizer.get_vocab()), generator=torch.Generator().manual_seed(seed))
    query = SparseStaticEmbedding(tokenizer=tokenizer, weight=weights, frozen=True)
    document = [
        Transformer(str(mlm), transformer_task="fill-mask"),
        SpladePooling(pooling_strategy=pooling, activation_function=activation),
    ]
    router = Router.for_query_document(query_modules=[query], document_modules=document)
    SparseEncoder(modules=[router], device="cpu").save(str(folder))
    return folder


def as_legacy_idf(folder):
    """The query module as the legacy ``IDF`` module in ``query_0_IDF``."""
    config = json.loads((folder / "router_config.json").read_text())
    (old,) = config["structure"]["query"]
    shutil.move(folder / old, folder / "query_0_IDF")
    del config["types"][old]
    config["types"]["query_0_IDF"] = "sentence_transformers.sparse_encoder.models.IDF"
    config["structure"]["query"] = ["query_0_IDF"]
    (folder / "router_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("pooling, activation", [("max", "relu"), ("sum", "log1p_relu")])
def test_a_router_inference_free_folder_gives_its_own_vectors(
    tiny_mlm, tmp_path, pooling, activation
):
    folder = save_router(tiny_mlm, tmp_path / "st", pooling, activation)
    queries, documents = st_vectors(folder)
    enc = load_encoder(folder)
    assert isinstance(enc, InferenceFreeEncoder) and enc.doc_model.pooling == pooling
    assert_same_vectors(enc.encode_queries(TEXTS), queries)
    assert_same_vectors(enc.encode_documents(TEXTS), documents)
    enc.save_pretrained(tmp_path / "saved")  # as lsr saves it: idf.json + encoder.json
    again = load_encoder(tmp_path / "saved")
    assert_same_vectors(again.encode_queries(TEXTS), queries)
    assert_same_vectors(again.encode_documents(TEXTS), documents)
    legacy = load_encoder(as_legacy_idf(folder))  # the same weights in the legacy layout
    assert_same_vectors(legacy.encode_queries(TEXTS), queries)


def test_a_router_lsr_cannot_run_is_refused_by_name(tiny_mlm, tmp_path):
    folder = save_router(tiny_mlm, tmp_path / "st")
    config = json.loads((folder / "router_config.json").read_text())
    config["structure"]["query"] = config["structure"]["document"]  # a model on both sides
    (folder / "router_config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderError, match="query route .* is not one SparseStaticEmbedding"):
        load_encoder(folder)


@pytest.mark.parametrize(
    "prompts, default, expected",
    [
        ({"query": "query: ", "document": "passage: "}, None, ("query: ", "passage: ")),
        # sentence-transformers 6 gives every model "query" and "document" prompts (empty
        # unless saved): other names and the default prompt do not reach either method
        ({"query": "q: ", "corpus": "c: ", "passage": "p: "}, None, ("q: ", "")),
        ({"retrieval": "find: ", "document": "d: "}, "retrieval", ("", "d: ")),
    ],
)
def test_prompts_are_put_before_texts_as_sentence_transformers_does(
    tiny_mlm, tmp_path, prompts, default, expected
):
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    modules = [Transformer(str(tiny_mlm), transformer_task="fill-mask"), SpladePooling("max")]
    folder = tmp_path / "st"
    SparseEncoder(modules=modules, prompts=prompts, default_prompt_name=default, device="cpu").save(
        str(folder)
    )
    queries, documents = st_vectors(folder)
    enc = load_encoder(folder)
    assert (enc.query_prompt, enc.document_prompt) == expected
    assert_same_vectors(enc.encode_queries(TEXTS), queries)
    assert_same_vectors(enc.encode_documents(TEXTS), documents)
    enc.save_pretrained(tmp_path / "saved")  # kept by lsr's own save
    again = load_encoder(tmp_path / "saved")
    assert (again.query_prompt, again.document_prompt) == expected
    assert_same_vectors(again.encode_queries(TEXTS), queries)


def test_a_router_with_a_query_prompt_gives_its_own_vectors(tiny_mlm, tmp_path):
    folder = save_router(tiny_mlm, tmp_path / "st")
    _edit(folder, "config_sentence_transformers.json",
          lambda c: c.update(prompts={"query": "what is "}))  # fmt: skip
    queries, documents = st_vectors(folder)
    enc = load_encoder(folder)
    assert enc.query_prompt == "what is "
    assert_same_vectors(enc.encode_queries(TEXTS), queries)
    assert_same_vectors(enc.encode_documents(TEXTS), documents)


def test_a_routers_max_active_dims_prunes_its_queries_too(tiny_mlm, tmp_path):
    folder = save_router(tiny_mlm, tmp_path / "st")
    _edit(folder, "config_sentence_transformers.json", lambda c: c.update(max_active_dims=3))
    queries, documents = st_vectors(folder)
    enc = load_encoder(folder)
    assert enc.query_max_active_dims == 3
    ours = enc.encode_queries(TEXTS)
    assert np.diff(ours.indptr).max() == 3  # the long texts have more than 3 distinct tokens
    assert_same_vectors(ours, queries)
    assert_same_vectors(enc.encode_documents(TEXTS), documents)
    enc.save_pretrained(tmp_path / "saved")
    assert load_encoder(tmp_path / "saved").query_max_active_dims == 3


def _hub_cache(cache, repo: str, folder) -> None:
    """``folder`` as the Hugging Face cache keeps a downloaded model: a snapshot named by a
    commit under ``models--OWNER--NAME``, and ``refs/main`` naming that commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)


def test_a_router_by_hub_id_loads_from_the_cache_offline(tiny_mlm, tmp_path, monkeypatch):
    """A Hub id's Router is fetched whole (here, offline, from the local Hugging Face cache,
    as after a download): the same vectors as the folder."""
    import huggingface_hub.constants as hub

    folder = save_router(tiny_mlm, tmp_path / "st")
    queries, documents = st_vectors(folder)
    _hub_cache(tmp_path / "hub", "lsr-test/tiny-router", folder)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    enc = load_encoder("lsr-test/tiny-router")
    assert isinstance(enc, InferenceFreeEncoder)
    assert_same_vectors(enc.encode_queries(TEXTS), queries)
    assert_same_vectors(enc.encode_documents(TEXTS), documents)
    with pytest.raises(EncoderError, match="cannot fetch this Router model's files"):
        from lsr.st_folder import _local_folder

        _local_folder("lsr-test/not-cached")


def test_a_router_with_damaged_query_weights_is_refused_by_file(tiny_mlm, tmp_path):
    folder = save_router(tiny_mlm, tmp_path / "st")
    (weights,) = folder.glob("query_0_*/model.safetensors")
    weights.write_bytes(b"\x00" * 16)  # a truncated download
    with pytest.raises(EncoderError, match="Cannot read the weights in .*model.safetensors"):
        load_encoder(folder)
