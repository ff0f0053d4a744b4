"""Every encoder option of the command line takes effect or is refused: model options on
``lsr index`` / ``lsr encode``, BM25 options on ``lsr eval`` / ``lsr bench``, ``--threads``, and
help that shows each option's default."""

import argparse
import json
import os
import shutil
from pathlib import Path

import numba
import numpy as np
import pytest
import scipy.sparse as sp

from lsr import load_encoder, sample_dataset
from lsr.corpus import read_corpus
from lsr.eval import load_dataset
from lsr.eval.cache import EncodingCache
from lsr.eval.runner import encode_cached
from lsr.inference_free import idf_from_corpus
from lsr.service.cli import _threads, build_parser, main
from lsr.vector_files import VectorFile
from tests.conftest import TINY_WORDS, make_tiny_mlm


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_mlm(tmp_path_factory.mktemp("options") / "mlm")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Documents of 40 words (the model's vocabulary), long enough for windows to matter."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    words = TINY_WORDS[8:]
    with open(path, "w") as f:
        for i in range(12):
            text = " ".join(words[(i * 7 + j) % len(words)] for j in range(40))
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    return path


def nnz(rows) -> np.ndarray:
    return np.diff(rows.indptr)


def encode(tmp_path, corpus, model, name, *options):
    out = tmp_path / f"{name}.parquet"
    argv = ["encode", str(corpus), "--encoder", str(model), "--out", str(out), *options]
    assert main(argv) == 0
    return sp.vstack([rows for rows, _ in VectorFile(out).batches()]).tocsr()


def test_model_options_change_the_vectors(tmp_path, corpus, model, capsys):
    plain = encode(tmp_path, corpus, model, "plain")
    capped = encode(tmp_path, corpus, model, "capped", "--max-active-dims", "5")
    assert nnz(plain).min() > 5 and nnz(capped).max() <= 5
    short = encode(tmp_path, corpus, model, "short", "--max-length", "6")
    assert (short != plain).nnz > 0 and nnz(short).sum() < nnz(plain).sum()
    windows = encode(tmp_path, corpus, model, "windows", "--max-length", "6", "--max-chunks", "4")
    assert nnz(windows).sum() > nnz(short).sum()  # later windows count
    on_cpu = encode(tmp_path, corpus, model, "cpu", "--device", "cpu")
    assert (on_cpu != plain).nnz == 0
    capsys.readouterr()


def test_index_keeps_the_options_in_its_encoder(tmp_path, corpus, model, capsys):
    out = tmp_path / "idx"
    argv = ["index", str(corpus), "--encoder", str(model), "--out", str(out)]
    assert main([*argv, "--max-active-dims", "5", "--max-length", "16", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_postings"] <= 12 * 5
    saved = json.loads((out / "encoder" / "encoder.json").read_text())
    assert saved["max_active_dims"] == 5 and saved["max_length"] == 16


def test_fit_idf_replaces_the_shipped_table_with_the_corpus_idf(tmp_path, corpus, model, capsys):
    """A model shipping an idf.json keeps it unless --fit-idf: then lsr index and lsr eval fit
    the query table on the corpus at hand, as for a model with no table, also when lsr eval
    reuses a cached encoding of the documents."""
    shipped = tmp_path / "shipped"
    shutil.copytree(model, shipped)
    (shipped / "idf.json").write_text(json.dumps({w: 7.0 for w in TINY_WORDS[8:]}))
    spec = "inference-free:" + str(shipped)
    loaded = load_encoder(spec)
    doc_model, vocab = loaded.doc_model, loaded.vocab
    fitted = idf_from_corpus(doc_model, [d.contents for d in read_corpus(corpus)])
    for flags, name in (([], "kept"), (["--fit-idf"], "fitted")):
        out = tmp_path / name
        assert main(["index", str(corpus), "--encoder", spec, "--out", str(out), *flags]) == 0
        table = json.loads((out / "encoder" / "idf.json").read_text())
        if flags:
            expect = {vocab[i]: float(w) for i, w in enumerate(fitted) if w > 0}
            assert table == pytest.approx(expect, rel=1e-6) and set(table.values()) != {7.0}
        else:
            assert set(table.values()) == {7.0}
    dataset = load_dataset(str(sample_dataset()))
    cache = EncodingCache(tmp_path / "cache")
    texts = [d.contents for d in dataset.documents()]
    for options in ({}, {"fit_idf": True}, {}, {"fit_idf": True}):  # then from the cache
        encoder, *_ = encode_cached(spec, dataset, cache, encoder_options=options)
        weights = encoder.query_weights
        expect = idf_from_corpus(doc_model, texts) if options else np.where(weights > 0, 7.0, 0)
        assert np.allclose(weights, expect) and expect.max() > 0
    argv = ["eval", str(sample_dataset()), "--encoder", spec, "--out", str(tmp_path / "r")]
    assert main([*argv, "--cache-dir", str(tmp_path / "cache"), "--fit-idf"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["index", "{corpus}", "--out", "{tmp}/a", "--max-length", "8"], "--max-length: options"),
        (
            [
                "encode",
                "{corpus}",
                "--encoder",
                "bm25",
                "--out",
                "{tmp}/a.parquet",
                "--device",
                "cpu",
            ],
            "--device: options of model encoders",
        ),  # fmt: skip
        (
            ["index", "{corpus}", "--encoder", "{model}", "--out", "{tmp}/a", "--b", "0.5"],
            "--b: BM25 options",
        ),  # fmt: skip
        (
            ["index", "{corpus}", "--encoder", "{model}", "--out", "{tmp}/a", "--device", "tpu9"],
            "device",
        ),  # fmt: skip
        (
            ["eval", "{sample}", "--encoder", "{model}", "--out", "{tmp}/r", "--k1", "2"],
            "--k1: BM25 options",
        ),  # fmt: skip
        (
            ["index", "{corpus}", "--encoder", "{model}", "--out", "{tmp}/a", "--fit-idf"],
            "--fit-idf: an option of inference-free encoders",
        ),  # fmt: skip
        (["bench", "{tmp}", "--k1", "2"], "apply to a dataset target"),
        (["index", "{corpus}", "--out", "{tmp}", "--append", "--k1", "2"], "--append adds"),
    ],
)
def test_options_that_cannot_apply_are_refused(tmp_path, corpus, model, capsys, argv, message):
    fill = {"corpus": corpus, "sample": sample_dataset(), "model": model, "tmp": tmp_path}
    if argv[0] == "bench":
        assert main(["index", str(sample_dataset()), "--out", str(tmp_path / "i")]) == 0
        fill["tmp"] = tmp_path / "i"
    capsys.readouterr()
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a").exists()


def test_eval_sweeps_bm25_parameters(tmp_path, capsys):
    runs = {}
    for k1 in ("0.9", "2.0"):
        out = tmp_path / k1
        argv = ["eval", str(sample_dataset()), "--encoder", "bm25", "--out", str(out)]
        assert main([*argv, "--k1", k1, "--b", "0.75", "--json", "--cache-dir", str(tmp_path)]) == 0
        [result] = json.loads(capsys.readouterr().out)
        runs[k1] = Path(result["run_file"]).read_text()
    assert runs["0.9"] != runs["2.0"]


def test_threads_apply_for_the_command_and_are_restored(monkeypatch):
    before = numba.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with _threads(1):
        assert numba.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    assert numba.get_num_threads() == before and "OMP_NUM_THREADS" not in os.environ


def test_every_option_has_help_and_shows_its_default():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        formatter = command._get_formatter()
        command.format_help()  # every help text expands (no stray % signs)
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (name, action.option_strings or action.dest)
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                shown = formatter._get_help_string(action) % {"default": action.default}
                assert "default" in shown.lower(), (name, action.option_strings)


def test_bench_encodes_a_dataset_with_bm25_options(tmp_path, capsys):
    argv = ["bench", str(sample_dataset()), "--k1", "2.0", "--tokenizer", "regex", "--no-peers"]
    argv += ["--no-clustered", "--no-approximate", "--json", "--cache-dir", str(tmp_path)]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["n_queries"] == 40
    [saved] = [json.loads(p.read_text()) for p in tmp_path.glob("*/encoder/encoder.json")]
    assert saved["k1"] == 2.0 and saved["tokenizer"]["analyzer"] == "regex"
