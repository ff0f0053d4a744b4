"""The trainer on a synthetic task with a tiny random BERT: loss and FLOPS go down, resume works."""

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lsr import BM25Encoder, CorpusError, EncoderError, load_encoder, read_corpus
from lsr.inference_free import InferenceFreeEncoder
from lsr.pipeline.training import beir_examples, training_examples
from lsr.service.cli import main
from lsr.training import TrainConfig, Trainer
from lsr.training_data import read_triples
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


def test_ema_saves_the_moving_average_of_the_weights(tiny_mlm, tmp_path):
    """With ema_decay the saved model holds the exponential moving average of the weights
    over the steps, from the starting weights; a checkpoint holds the live weights (a resumed
    run goes on exactly) and the average in its trainer state."""
    decay = 0.6
    cfg = base_config(tiny_mlm, tmp_path, steps=4, save_every=2, log_every=1, ema_decay=decay)
    trainer = Trainer(TrainConfig.from_dict(cfg))
    average = [p.detach().clone() for p in trainer._parameters()]
    live, averages = [], []
    update = trainer._update_average

    def recording():
        live.append([p.detach().clone() for p in trainer._parameters()])
        update()
        averages.append([a.clone() for a in trainer.ema])

    trainer._update_average = recording
    out = trainer.train(progress=False)
    for weights in live:
        average = [decay * a + (1 - decay) * w for a, w in zip(average, weights, strict=True)]
    saved = [p for p in load_encoder(out).doc_model.model.parameters()]
    assert len(saved) == len(average)
    assert all(torch.allclose(s, a, atol=1e-6) for s, a in zip(saved, average, strict=True))
    assert not all(torch.equal(s, w) for s, w in zip(saved, live[-1], strict=True))
    after = list(trainer._parameters())  # training's own weights are the live ones
    assert all(torch.equal(p, w) for p, w in zip(after, live[-1], strict=True))
    step2 = out / "checkpoints" / "step-2"
    kept = list(load_encoder(step2).doc_model.model.parameters())
    assert all(torch.allclose(k, w) for k, w in zip(kept, live[1], strict=True))
    state = torch.load(step2 / "trainer_state.pt", weights_only=False)
    assert all(torch.equal(s, a) for s, a in zip(state["ema"], averages[1], strict=True))


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


def test_freeze_embeddings_trains_all_but_the_token_embeddings(tiny_mlm, tmp_path):
    frozen = Trainer(
        TrainConfig.from_dict(base_config(tiny_mlm, tmp_path, steps=5, freeze_embeddings=True))
    )
    model = frozen.doc_model.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    frozen.train(progress=False)
    after = dict(frozen.doc_model.model.named_parameters())
    embeddings = frozen.doc_model.model.get_input_embeddings().weight
    assert embeddings.data_ptr() == frozen.doc_model.model.get_output_embeddings().weight.data_ptr()
    changed = {name for name, p in after.items() if not torch.equal(p, before[name])}
    unchanged = set(after) - changed
    assert unchanged == {n for n, p in after.items() if p is embeddings}  # the tied table alone
    assert any("bias" in n for n in changed) and len(changed) > 10


def test_cli_train_from_yaml(tiny_mlm, tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(base_config(tiny_mlm, tmp_path, steps=4, log_every=2)))
    assert main(["train", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == 4 and "nnz_d" in report["last"]
    import matplotlib.image

    image = matplotlib.image.imread(report["curves"])  # the curves, drawn from train_log.jsonl
    assert report["curves"] == str(tmp_path / "out" / "train_curves.png")
    assert image.shape[0] > 200 and image.shape[1] > 800 and image.std() > 0.05


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"loss": "hinge"}, "loss must be one of"),
        ({"kind": "dense"}, "kind must be one of"),
        ({"bogus": 1}, "Unknown training settings: bogus"),
        ({"freeze_embeddings": "yes"}, "freeze_embeddings must be true or false"),
        ({"positives_first": True}, "positives_first corrects teacher scores"),
        ({"beir": "x"}, "exactly one training data source"),
        ({"steps": 0}, "steps must be a positive integer"),
        ({"documents": {"type": "flops", "lamda": 1}}, "Unknown documents regularizer settings"),
        ({"loss": "kl"}, "needs teacher 'scores'"),
        ({"teacher_scale": "big"}, "teacher_scale must be a positive number, got 'big'"),
        ({"learning_rate": 0}, "learning_rate must be a positive number"),
        ({"negative_pool": 0}, "negative_pool must be a positive integer"),
        ({"negatives": 3, "negative_pool": 2}, r"negative_pool \(2\) must hold at least the 3"),
        ({"negative_depth": -1}, "negative_depth must be a positive integer"),
        ({"ema_decay": 1.0}, "ema_decay must lie strictly between 0 and 1, got 1.0"),
        ({"ema_decay": True}, "ema_decay must lie strictly between 0 and 1"),
        ({"mine_with": ""}, "mine_with must be bm25 or an encoder spec"),
        ({"pseudo_queries": -2}, "pseudo_queries must be a positive integer, got -2"),
        ({"pseudo_queries": 10}, "pseudo_queries are drawn from a beir: split's documents"),
        ({"query_factors": True}, "query_factors are learned for an inference-free model"),
        ({"query_factors": {"epochs": 0}}, "query_factors.epochs must be a positive integer"),
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


@pytest.mark.slow
def test_beir_examples_mine_bm25_negatives(tmp_path):
    """A config mines its negative_pool per example (its negatives when no pool is set)."""
    folder = shared_path("data", "scifact")
    cfg = {"model": "m", "output": str(tmp_path), "beir": str(folder), "negative_depth": 20}
    for over, mined in (({"negatives": 3}, 3), ({"negatives": 2, "negative_pool": 6}, 6)):
        examples = training_examples(TrainConfig.from_dict({**cfg, **over}))
        assert len(examples) == 919
        for ex in examples[:50]:
            assert len(ex.negatives) == mined and ex.positive not in ex.negatives
            assert len(set(ex.negatives)) == mined and len(ex.scores) == 1 + mined


def test_teachers_from_the_config_are_combined_with_their_weights(tiny_mlm, tmp_path):
    triples = tmp_path / "teachers.jsonl"
    rows = [json.loads(line) for line in write_synthetic_triples(tmp_path / "t.jsonl").open()]
    with open(triples, "w") as f:
        for rec in rows:
            rec["scores"] = {"ce": [9.0, 1.0, 0.0], "bm25": [30.0, 25.0, 10.0]}
            f.write(json.dumps(rec) + "\n")
    cfg = base_config(
        tiny_mlm, tmp_path, triples=str(triples), loss="margin_mse", steps=2, log_every=1
    )
    with pytest.raises(EncoderError, match="name the ones to use"):
        Trainer(TrainConfig.from_dict(cfg))
    with pytest.raises(EncoderError, match="lacks x"):
        Trainer(TrainConfig.from_dict({**cfg, "teachers": {"ce": 1.0, "x": 1.0}}))
    with pytest.raises(EncoderError, match="distillation loss"):
        TrainConfig.from_dict({**cfg, "loss": "infonce", "teachers": {"ce": 1.0}})
    with pytest.raises(EncoderError, match="weight > 0"):
        TrainConfig.from_dict({**cfg, "teachers": {"ce": 0}})
    trainer = Trainer(TrainConfig.from_dict({**cfg, "teachers": {"ce": 0.75, "bm25": 0.25}}))
    batch = trainer._batch(0, 0)
    teacher = trainer._teacher_scores(batch, [[0, 1]] * len(batch), torch.zeros(1))
    # min-max per teacher: ce [1, 1/9, 0], bm25 [1, 0.75, 0]; weighted 0.75 / 0.25
    expected = torch.tensor([1.0, 0.75 / 9 + 0.25 * 0.75, 0.0])
    assert torch.allclose(teacher, expected.expand(len(batch), 3))
    trainer.train(progress=False)
    assert all(np.isfinite(h["loss"]) for h in trainer.history)
    # the judgements correct the teachers: bm25 alone ranks the negative first here
    for rec in rows:
        rec["scores"] = {"bm25": [20.0, 25.0, 10.0]}
    triples.write_text("".join(json.dumps(rec) + "\n" for rec in rows))
    over = {"teachers": {"bm25": 1.0}, "teacher_scale": 10.0}
    for first, expect in ((False, [2 / 3, 1.0, 0.0]), (True, [1.0, 1.0, 0.0])):
        trainer = Trainer(TrainConfig.from_dict({**cfg, **over, "positives_first": first}))
        batch = trainer._batch(0, 0)
        teacher = trainer._teacher_scores(batch, [[0, 1]] * len(batch), torch.zeros(1))
        assert torch.allclose(teacher, 10 * torch.tensor(expect).expand(len(batch), 3))


def test_teacher_targets_are_normalized_over_the_whole_pool(tiny_mlm, tmp_path):
    """A step draws some of an example's negatives; each one's target is its score min-max
    normalized over all the example's candidates, whichever others the step drew."""
    triples = tmp_path / "pool.jsonl"
    rows = [json.loads(line) for line in write_synthetic_triples(tmp_path / "t.jsonl").open()]
    triples.write_text(
        "".join(json.dumps({**r, "scores": {"ce": [9.0, 1.0, 0.0]}}) + "\n" for r in rows)
    )
    cfg = base_config(tiny_mlm, tmp_path, triples=str(triples), loss="margin_mse", negatives=1)
    trainer = Trainer(TrainConfig.from_dict({**cfg, "teachers": {"ce": 1.0}}))
    batch = trainer._batch(0, 0)
    for pick, expect in ((0, [1.0, 1 / 9]), (1, [1.0, 0.0])):
        teacher = trainer._teacher_scores(batch, [[pick]] * len(batch), torch.zeros(1))
        assert torch.allclose(teacher, torch.tensor(expect).expand(len(batch), 2))


@pytest.mark.slow
def test_beir_negatives_are_the_brute_force_top_hits():
    """Mined through the index, the negatives and their scores are those of the full
    query x document BM25 score matrix (on a slice of SciFact's train queries)."""
    folder = shared_path("data", "scifact")
    examples = beir_examples(folder, "train", n_negatives=3, depth=10)
    docs = {d.id: d.contents for d in read_corpus(folder)}
    bm25 = BM25Encoder().fit(docs.values())
    ids = list(docs)
    matrix = bm25.encode_documents([docs[i] for i in ids])
    by_text = {t: i for i, t in enumerate(docs[i] for i in ids)}
    for ex in examples[:40]:
        scores = (bm25.encode_queries([ex.query]) @ matrix.T).toarray()[0]
        assert ex.scores[0] == pytest.approx(scores[by_text[ex.positive]], rel=1e-5)
        top = set(np.argsort(-scores, kind="stable")[:20].tolist())
        for neg, s in zip(ex.negatives, ex.scores[1:], strict=True):
            assert by_text[neg] in top and s == pytest.approx(scores[by_text[neg]], rel=1e-5)


def test_training_reads_texts_after_the_encoders_prompts(tiny_mlm, tmp_path):
    """An encoder with prompts (e.g. from a sentence-transformers folder) is trained on the
    texts it will encode: queries and documents after their prompts."""
    from lsr.mlm import MLMSparseModel
    from lsr.splade import SpladeEncoder

    doc = MLMSparseModel.from_pretrained(tiny_mlm, device="cpu")
    SpladeEncoder(doc, query_prompt="what is ", document_prompt="the ").save_pretrained(
        tmp_path / "prompted"
    )
    cfg = base_config(tiny_mlm, tmp_path, model=str(tmp_path / "prompted"), steps=2)
    trainer = Trainer(TrainConfig.from_dict(cfg))
    seen = []
    forward = trainer.doc_model.forward

    def recording(texts, max_length=None):
        seen.extend(texts)
        return forward(texts, max_length)

    trainer.doc_model.forward = recording
    trainer.train(progress=False)
    queries = {e.query for e in trainer.examples}
    assert seen and all(t.startswith(("what is ", "the ")) for t in seen)
    assert {t[len("what is ") :] for t in seen if t.startswith("what is ")} <= queries
    assert any(t.startswith("the ") and t[4:] not in queries for t in seen)
    assert load_encoder(tmp_path / "out").document_prompt == "the "


def write_tiny_beir(folder: Path) -> tuple[Path, list[tuple[str, str]]]:
    """A BEIR folder of 24 five-word documents and 3 queries, each with 6 judged documents
    (its train split); the (query, document) judgements in the qrels' order."""
    (folder / "qrels").mkdir(parents=True)
    words = CONTENT[:24]
    with open(folder / "corpus.jsonl", "w") as f:
        for i in range(24):
            text = " ".join(words[(i + j) % 24] for j in range(5))
            f.write(json.dumps({"_id": f"doc{i}", "title": "", "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for q in range(3):
            f.write(json.dumps({"_id": f"q{q}", "text": f"{words[q]} {words[q + 5]}"}) + "\n")
    judged = [(f"q{q}", f"doc{(q * 7 + k * 3) % 24}") for q in range(3) for k in range(6)]
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in judged)
    )
    return folder, judged


def test_negatives_mined_with_a_model_are_its_top_hits(tiny_mlm, tmp_path):
    """mine_with: the negatives are among the named encoder's brute-force top hits (judged
    documents left out), and the examples still carry BM25's scores of their candidates."""
    folder, judged = write_tiny_beir(tmp_path / "beir")
    docs = list(read_corpus(folder))
    ids, texts = [d.id for d in docs], [d.contents for d in docs]
    examples = beir_examples(folder, "train", 3, 6, mine_with=str(tiny_mlm))
    model, bm25 = load_encoder(tiny_mlm), BM25Encoder().fit(texts)
    model_scores = (
        model.encode_queries([e.query for e in examples]) @ model.encode_documents(texts).T
    ).toarray()
    bm25_scores = (
        bm25.encode_queries([e.query for e in examples]) @ bm25.encode_documents(texts).T
    ).toarray()
    queries = {q["_id"]: q["text"] for q in map(json.loads, (folder / "queries.jsonl").open())}
    for row, (e, (qid, _)) in enumerate(zip(examples, judged, strict=True)):
        assert e.query == queries[qid] and len(e.negatives) == 3
        mine = {d for q, d in judged if q == qid}
        free = [i for i in np.argsort(-model_scores[row], kind="stable") if ids[i] not in mine]
        cut = model_scores[row][free[5]]  # the 6th best unjudged score: ties at it count
        for neg in e.negatives:
            assert model_scores[row][texts.index(neg)] >= cut - 1e-5
        candidates = [texts.index(t) for t in (e.positive, *e.negatives)]
        assert e.scores == pytest.approx(bm25_scores[row][candidates].tolist(), rel=1e-5)
    with pytest.raises(CorpusError, match="mine_with needs a sparse encoder"):
        beir_examples(folder, "train", 3, 6, mine_with="dense:wordllama")


def write_sentence_beir(folder: Path) -> Path:
    """A BEIR folder whose documents have four sentences: 12 share words with the 3 train
    queries, 4 share none (no query reaches them) and 2 have one sentence (none to spare)."""
    (folder / "qrels").mkdir(parents=True)
    rng = random.Random(5)
    near, far = CONTENT[:20], CONTENT[20:40]

    def text(words, n):
        return " ".join(" ".join(rng.sample(words, 7)).capitalize() + "." for _ in range(n))

    docs = [(f"near{i}", text(near, 4)) for i in range(12)]
    docs += [(f"far{i}", text(far, 4)) for i in range(4)]
    docs += [(f"short{i}", text(near, 1)) for i in range(2)]
    with open(folder / "corpus.jsonl", "w") as f:
        for i, t in docs:
            f.write(json.dumps({"_id": i, "title": f"title {i}", "text": t}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for q in range(3):
            f.write(json.dumps({"_id": f"q{q}", "text": " ".join(near[q * 3 : q * 3 + 3])}) + "\n")
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{q}\tnear{q}\t1\n" for q in range(3))
    )
    return folder


def test_pseudo_queries_are_sentences_taken_out_of_reached_documents(tmp_path):
    """pseudo_queries: each added example's query is one sentence of a document the split's
    queries reached, its positive the rest of that document, its negatives BM25's top hits
    for the sentence (the document left out), and its scores BM25's, as brute force gives."""
    folder = write_sentence_beir(tmp_path / "beir")
    docs = {d.id: d for d in read_corpus(folder)}
    bm25 = BM25Encoder().fit(d.contents for d in docs.values())
    ids = list(docs)
    matrix = bm25.encode_documents([docs[i].contents for i in ids])
    queries = {q["_id"]: q["text"] for q in map(json.loads, (folder / "queries.jsonl").open())}
    reached = {f"near{q}" for q in range(3)}  # the judged documents, and each query's top 6
    for q in range(3):
        scores = (bm25.encode_queries([queries[f"q{q}"]]) @ matrix.T).toarray()[0]
        hits = [ids[i] for i in np.argsort(-scores, kind="stable") if scores[i] > 0]
        reached.update([d for d in hits if d != f"near{q}"][:6])
    eligible = {d for d in reached if not d.startswith("short")}  # a sentence to spare
    assert 4 < len(eligible) < len(reached) + 1 and not any(d.startswith("far") for d in reached)
    labelled = beir_examples(folder, "train", 2, 6)
    examples = beir_examples(folder, "train", 2, 6, pseudo_queries=100)
    assert examples[: len(labelled)] == labelled and len(labelled) == 3
    pseudo = examples[len(labelled) :]
    sources = []
    for e in pseudo:
        (source,) = [i for i in ids if e.query in docs[i].text]
        sources.append(source)
        assert e.query not in e.positive
        kept = docs[source].text.replace(e.query, " ").split()
        assert e.positive.split() == [*docs[source].title.split(), *kept]
        q = bm25.encode_queries([e.query])
        assert e.scores[0] == pytest.approx(
            float((bm25.encode_documents([e.positive]) @ q.T).sum()), rel=1e-5
        )
        scores = (q @ matrix.T).toarray()[0]
        free = [i for i in np.argsort(-scores, kind="stable") if ids[i] != source]
        cut = scores[free[5]]  # the 6th best score of another document: ties at it count
        assert len(e.negatives) == 2
        for neg, s in zip(e.negatives, e.scores[1:], strict=True):
            (row,) = [i for i, d in enumerate(ids) if docs[d].contents == neg]
            assert ids[row] != source and s == pytest.approx(scores[row], rel=1e-5)
            assert s >= cut - 1e-5
    assert sorted(sources) == sorted(eligible)  # every one once, none from elsewhere
    assert len(beir_examples(folder, "train", 2, 6, pseudo_queries=2)) == 3 + 2
    again = beir_examples(folder, "train", 2, 6, pseudo_queries=100)
    assert [(e.query, e.positive, e.negatives) for e in again] == [
        (e.query, e.positive, e.negatives) for e in examples
    ]


def test_beir_examples_are_the_same_in_every_process(tmp_path):
    """A query with several positives yields them in the qrels' order, whatever the process's
    string hashing (PYTHONHASHSEED): a training run is reproducible from its config."""
    import subprocess
    import sys

    folder, judged = write_tiny_beir(tmp_path / "beir")
    code = (
        "import json, sys; from lsr.pipeline.training import beir_examples; "
        "print(json.dumps([[e.query, e.positive, e.negatives, e.scores] "
        "for e in beir_examples(sys.argv[1], 'train', 2, 10)]))"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code, str(folder)], capture_output=True, text=True,
            check=True, env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "3")
    ]  # fmt: skip
    assert runs[0] == runs[1] == runs[2]
    texts = {d.id: d.contents for d in read_corpus(folder)}
    assert [e[1] for e in json.loads(runs[0])] == [texts[d] for _, d in judged]


def test_beir_examples_carry_each_teachers_scores(tiny_mlm):
    """With teachers, a BEIR split's examples carry each teacher's scores: BM25's from the
    mining, a model's as the dot product of its own query and document vectors."""
    from lsr.pipeline.training import with_teacher_scores

    folder = shared_path("data", "scifact")
    examples = beir_examples(folder, "train", n_negatives=2, depth=10)[:60]
    taught = with_teacher_scores(examples, ["bm25", str(tiny_mlm)])
    model = load_encoder(tiny_mlm)
    for before, after in zip(examples[:20], taught[:20], strict=True):
        assert after.scores["bm25"] == before.scores
        q = model.encode_queries([after.query])
        d = model.encode_documents([after.positive, *after.negatives])
        expected = (d @ q.T).toarray().ravel()
        assert after.scores[str(tiny_mlm)] == pytest.approx(expected.tolist(), rel=1e-5)
    dense = with_teacher_scores(examples[:5], ["dense:wordllama"])  # a dense teacher
    wordllama = load_encoder("dense:wordllama")
    for e in dense:
        expected = (
            wordllama.encode_documents([e.positive, *e.negatives])
            @ (wordllama.encode_queries([e.query])[0])
        )
        assert e.scores["dense:wordllama"] == pytest.approx(expected.tolist(), rel=1e-5)
    config = TrainConfig.from_dict(
        {"model": str(tiny_mlm), "output": "unused", "beir": str(folder), "negatives": 2,
         "loss": "kl", "teachers": {"bm25": 0.5, str(tiny_mlm): 0.5}}
    )  # fmt: skip
    Trainer(config, taught)  # the trainer finds every teacher's scores


def test_every_example_config_is_a_valid_training_config():
    examples = sorted((Path(__file__).resolve().parents[2] / "examples").glob("train-*.yaml"))
    assert len(examples) >= 3
    for path in examples:
        TrainConfig.from_yaml(path)  # a setting misspelled or out of range is an error
