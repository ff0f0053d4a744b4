"""Query-token factors: learned from judgements over frozen documents, saved with the model,
kept over another corpus's IDF, and trained end to end by ``lsr train``."""

import json

import numpy as np
import pytest
import scipy.sparse as sp
import yaml

from lsr import EncoderError, load_encoder, read_corpus
from lsr.inference_free import InferenceFreeEncoder
from lsr.query_factors import QueryFactorConfig, learn_query_factors
from lsr.service.cli import main
from tests.lsr.test_training import base_config, write_sentence_beir

N_QUERIES = 12
VOCAB = N_QUERIES + 2  # 0: a misleading token, 1-12: one topic per query, 13: in no query
UNUSED = VOCAB - 1


def _decoys(n_queries=N_QUERIES, seed=0):
    """Each query has its own topic token and the misleading token 0. Its judged document
    matches the topic; two others match token 0 strongly and the topic weakly, so with
    equal query weights they outrank it."""
    rng = np.random.default_rng(seed)
    docs, queries, positives = [], [], []
    for q in range(n_queries):
        topic = 1 + q
        queries.append({0: 1.0, topic: 1.0})
        positives.append([len(docs)])
        docs.append({topic: 1.0 + rng.random() * 0.1, UNUSED: 1.0})
        for _ in range(2):
            docs.append({0: 2.0 + rng.random(), topic: 0.2})
    return _matrix(queries), _matrix(docs), positives


def _matrix(rows):
    dense = np.zeros((len(rows), VOCAB), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, w in row.items():
            dense[i, j] = w
    return sp.csr_array(dense)


def _first_is_judged(queries, docs, positives, factors):
    scores = (queries @ sp.diags_array(factors) @ docs.T).toarray()
    return np.mean([int(np.argmax(s)) in p for s, p in zip(scores, positives, strict=True)])


def test_factors_lower_the_misleading_token_and_rank_the_judged_documents_first():
    queries, docs, positives = _decoys()
    assert _first_is_judged(queries, docs, positives, np.ones(VOCAB)) == 0
    config = QueryFactorConfig(epochs=30, learning_rate=0.05, l2=1e-4, depth=2, batch_size=8)
    factors, history = learn_query_factors(queries, docs, positives, config, seed=3)
    assert factors.dtype == np.float32 and factors.shape == (VOCAB,)
    assert factors[0] < 0.5 and (factors[1:UNUSED] > 1).all()
    assert factors[UNUSED] == 1.0  # a token no query has is left exactly as it was
    assert _first_is_judged(queries, docs, positives, factors) == 1
    assert len(history) == 30 and history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["tokens_moved"] == UNUSED
    again, _ = learn_query_factors(queries, docs, positives, config, seed=3)
    assert np.array_equal(factors, again)  # the same run, the same factors


def test_a_strong_l2_keeps_the_factors_near_one():
    queries, docs, positives = _decoys()
    moved = {}
    for l2 in (1e-4, 10.0):
        config = QueryFactorConfig(epochs=10, learning_rate=0.05, l2=l2, depth=2)
        factors, _ = learn_query_factors(queries, docs, positives, config)
        moved[l2] = np.abs(np.log(factors)).max()
    assert moved[10.0] < 0.2 < 0.4 < moved[1e-4]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"epochs": 0}, "query_factors.epochs must be a positive integer"),
        ({"depth": 2.5}, "query_factors.depth must be a positive integer"),
        ({"learning_rate": 0}, "query_factors.learning_rate must be a positive number"),
        ({"l2": -1}, r"query_factors.l2 must be a number >= 0"),
        ({"l2": "none"}, r"query_factors.l2 must be a number >= 0"),
        ({"l2": float("nan")}, r"query_factors.l2 must be a number >= 0"),
        ({"learning_rate": True}, "query_factors.learning_rate must be a positive number"),
        ({"rate": 1}, "Unknown query_factors settings: rate"),
        ("yes", "query_factors must be true or a mapping"),
    ],
)
def test_bad_settings_are_named(raw, message):
    with pytest.raises(EncoderError, match=message):
        QueryFactorConfig.from_dict(raw)


def test_inputs_that_do_not_fit_are_refused():
    queries, docs, positives = _decoys(4)
    config = QueryFactorConfig(epochs=1)
    with pytest.raises(EncoderError, match="4 queries but 3 lists of positives"):
        learn_query_factors(queries, docs, positives[:3], config)
    with pytest.raises(EncoderError, match="share one vocabulary"):
        learn_query_factors(queries, docs[:, :UNUSED], positives, config)
    with pytest.raises(EncoderError, match="No training query has a judged document"):
        learn_query_factors(queries, docs, [[] for _ in positives], config)


def test_factors_are_saved_and_multiply_the_idf_of_any_corpus(tiny_mlm, tmp_path):
    enc = load_encoder(f"inference-free:{tiny_mlm}")
    train_corpus = ["cat sat mat", "dog sat", "coffee tea cup", "whale ocean fish"]
    other_corpus = ["cat dog", "cat", "river mountain snow"]
    enc.fit(train_corpus)
    idf = enc.query_weights.copy()
    factors = np.ones(len(enc.vocab), dtype=np.float32)
    cat, dog = enc.vocab.index("cat"), enc.vocab.index("dog")
    factors[cat], factors[dog] = 0.5, 2.0
    enc.set_query_factors(factors)
    assert np.allclose(enc.query_weights, idf * factors)
    enc.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "query_factors.json").read_text())
    assert saved == {"cat": 0.5, "dog": 2.0}  # only the tokens whose factor is not 1
    shipped = load_encoder(tmp_path / "m")
    assert np.allclose(shipped.query_weights, idf * factors)  # idf.json: the product
    assert np.array_equal(shipped.query_factors, factors)
    refit = InferenceFreeEncoder.from_pretrained(tmp_path / "m", fit_idf=True)
    assert refit.query_weights is None and np.array_equal(refit.query_factors, factors)
    refit.fit(other_corpus)
    plain = load_encoder(f"inference-free:{tiny_mlm}").fit(other_corpus)
    assert np.allclose(refit.query_weights, plain.query_weights * factors)
    shipped.set_query_factors(factors)  # a second round composes with the first
    assert np.allclose(shipped.query_factors, factors**2)
    assert np.allclose(shipped.query_weights, idf * factors**2)
    (tmp_path / "m" / "query_factors.json").write_text("{not json")
    with pytest.raises(EncoderError, match="query_factors.json"):
        load_encoder(tmp_path / "m")


def test_lsr_train_learns_the_factors_after_the_model(tiny_mlm, tmp_path, capsys):
    folder = write_sentence_beir(tmp_path / "beir")
    cfg = base_config(
        tiny_mlm,
        tmp_path,
        kind="inference-free",
        triples=None,
        beir=str(folder),
        steps=2,
        log_every=1,
        negative_depth=5,
        query_factors={"epochs": 3, "learning_rate": 0.1, "depth": 5},
        queries={"type": "flops", "weight": 0.0},
    )
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [h["epoch"] for h in report["query_factors"]] == [1, 2, 3]
    out = tmp_path / "out"
    log = [json.loads(line) for line in (out / "query_factors_log.jsonl").open()]
    assert log == report["query_factors"]
    import matplotlib.image

    image = matplotlib.image.imread(report["curves"])  # a fourth panel: the factors' epochs
    assert image.shape[1] > 1700 and image.std() > 0.05
    enc = load_encoder(out)
    moved = json.loads((out / "query_factors.json").read_text())
    queries = [json.loads(line)["text"] for line in (folder / "queries.jsonl").open()]
    query_tokens = {t for q in queries for t in q.split()}
    assert moved and set(moved) <= query_tokens  # only tokens of training queries move
    plain = load_encoder(f"inference-free:{out}", fit_idf=True)
    plain.query_factors = None
    plain.fit([d.contents for d in read_corpus(folder)])
    assert np.allclose(enc.query_weights, plain.query_weights * enc.query_factors, rtol=1e-6)
    assert main(["train", str(path)]) == 0
    assert "query factors: 3 epochs" in capsys.readouterr().out
