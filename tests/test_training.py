"""The trainer on a synthetic task with a tiny random BERT: loss and FLOPS go down, resume works."""

import json
import random

import numpy as np
import pytest
import yaml

from lsr import CorpusError, EncoderError, load_encoder
from lsr.inference_free import InferenceFreeEncoder
from lsr.training import TrainConfig, Trainer
from lsr.training_data import beir_examples, read_triples
from service.cli import main
from tests.conftest import TINY_WORDS, shared_path

CONTENT = [w for w in TINY_WORDS if len(w) > 3]


def write_synthetic_triples(path, n=64, seed=0, with_scores=False):
    """Query = one word; positive contains it, negatives do not."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            word = rng.choice(CONTENT)
            others = [w for w in CONTENT if w != word]
            pos = " ".join(rng.sample(others, 3) + [word])
            negs = [" ".join(rng.sample(others, 4)) for _ in range(2)]
            rec = {"query": word, "positive": pos, "negatives": negs}
            if with_scores:
                rec["scores"] = [10.0, 2.0, 1.0]
            f.write(json.dumps(rec) + "\n")
    return path


def base_config(tiny_mlm, tmp_path, **over):
    cfg = {
        "model": str(tiny_mlm),
        "output": str(tmp_path / "out"),
        "triples": str(write_synthetic_triples(tmp_path / "triples.jsonl")),
        "negatives": 2,
        "steps": 50,
        "batch_size": 8,
        "learning_rate": 3e-3,
        "warmup_ratio": 0.0,
        "log_every": 10,
        "max_length": 32,
        "query_max_length": 8,
        "documents": {"type": "flops", "weight": 0.05, "warmup_steps": 20},
        "queries": {"type": "flops", "weight": 0.05, "warmup_steps": 20},
    }
    cfg.update(over)
    return cfg


def test_splade_training_lowers_loss_and_flops(tiny_mlm, tmp_path):
    trainer = Trainer(TrainConfig.from_dict(base_config(tiny_mlm, tmp_path)))
    out = trainer.train(progress=False)
    first, last = trainer.history[0], trainer.history[-1]
    assert last["rank_loss"] < first["rank_loss"]
    assert last["flops_d"] < first["flops_d"]
    assert len(trainer.history) == 5
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [10, 20, 30, 40, 50]
    enc = load_encoder(out)
    docs = enc.encode_documents(["the cat sat", "volcano lava"])
    assert docs.shape == (2, len(enc.vocab)) and docs.nnz > 0


def test_resume_continues_from_the_last_checkpoint(tiny_mlm, tmp_path):
    cfg = base_config(tiny_mlm, tmp_path, steps=12, save_every=5, log_every=1)
    first = Trainer(TrainConfig.from_dict({**cfg, "steps": 10}))
    first.train(progress=False)
    assert (tmp_path / "out" / "checkpoints" / "step-5" / "trainer_state.pt").is_file()
    resumed = Trainer(TrainConfig.from_dict({**cfg, "resume": True}))
    resumed.train(progress=False)
    assert resumed.history[0]["step"] == 6 and resumed.step == 12


@pytest.mark.parametrize(
    ("loss", "reg"), [("margin_mse", "idf_flops"), ("kl", "l0_flops"), ("infonce", "l1")]
)
def test_inference_free_training_paths(tiny_mlm, tmp_path, loss, reg):
    triples = write_synthetic_triples(tmp_path / "t.jsonl", with_scores=True)
    cfg = base_config(
        tiny_mlm,
        tmp_path,
        kind="inference-free",
        activation="l0",
        loss=loss,
        triples=str(triples),
        steps=6,
        log_every=3,
        learn_query_weights=True,
        documents={"type": reg, "weight": 0.01, "tau": 2},
        queries={"type": "l1", "weight": 0.001},
    )
    trainer = Trainer(TrainConfig.from_dict(cfg))
    before = trainer.encoder.query_weights.copy()
    out = trainer.train(progress=False)
    enc = load_encoder(out)
    assert isinstance(enc, InferenceFreeEncoder) and enc.doc_model.activation == "l0"
    assert (out / "idf.json").is_file()
    assert not np.allclose(enc.query_weights, before)  # the query table was learned
    assert all(np.isfinite(v) for h in trainer.history for v in h.values())


def test_cli_train_from_yaml(tiny_mlm, tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(base_config(tiny_mlm, tmp_path, steps=4, log_every=2)))
    assert main(["train", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == 4 and "nnz_d" in report["last"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"loss": "hinge"}, "loss must be one of"),
        ({"kind": "dense"}, "kind must be one of"),
        ({"bogus": 1}, "Unknown training settings: bogus"),
        ({"beir": "x"}, "exactly one training data source"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"documents": {"type": "flops", "lamda": 1}}, "Unknown documents regularizer settings"),
        ({"loss": "kl"}, "needs teacher 'scores'"),
    ],
)
def test_config_errors(tiny_mlm, tmp_path, change, message):
    with pytest.raises(EncoderError, match=message):
        Trainer(TrainConfig.from_dict({**base_config(tiny_mlm, tmp_path), **change}))


def test_bad_triples(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "a", "positive": "b"}\n{"query": "a"}\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: needs string fields"):
        read_triples(path)
    path.write_text('{"query": "a", "positive": "b", "negatives": ["c"], "scores": [1]}\n')
    with pytest.raises(CorpusError, match="one number per positive and negative"):
        read_triples(path)


def test_beir_examples_mine_bm25_negatives():
    folder = shared_path("data", "scifact")
    examples = beir_examples(folder, "train", n_negatives=3, depth=20)
    assert len(examples) == 919
    ex = examples[0]
    assert len(ex.negatives) == 3 and ex.positive not in ex.negatives
    assert len(ex.scores) == 4
