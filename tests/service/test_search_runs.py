"""``lsr search --queries FILE --output RUN``: topics in, run files out, as Pyserini users
expect (TREC or JSON lines, run tag, --topics/--hits/--index aliases), and the BM25 options
of ``lsr index``."""

import json
import os
import subprocess
import sys

import pytest

from lsr import read_queries, sample_dataset
from lsr.pipeline import Searcher
from lsr.service.cli import main
from tests.conftest import shared_path

QUERIES = sample_dataset() / "queries.jsonl"


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "idx"
    assert main(["index", str(sample_dataset()), "--out", str(out)]) == 0
    return out


def read_trec(path):
    run = {}
    for line in path.read_text().splitlines():
        qid, q0, doc, rank, score, tag = line.split()
        assert q0 == "Q0"
        run.setdefault(qid, []).append((doc, int(rank), float(score), tag))
    return run


def test_trec_run_holds_every_query_ranked(index, tmp_path, capsys):
    out = tmp_path / "run.trec"
    argv = ["search", str(index), "--queries", str(QUERIES), "--output", str(out), "-k", "5"]
    assert main([*argv, "--run-tag", "bm25-sample", "--batch-size", "7"]) == 0
    assert f"-> {out} (trec)" in capsys.readouterr().out
    run = read_trec(out)
    queries = read_queries(QUERIES)
    assert set(run) <= set(queries) and len(run) >= len(queries) - 1  # a query may match nothing
    with Searcher.open(index) as searcher:
        expected = searcher.search([queries[q] for q in run], k=5)
    for hits, want in zip(run.values(), expected, strict=True):
        assert [h[1] for h in hits] == list(range(1, len(hits) + 1))
        assert {h[3] for h in hits} == {"bm25-sample"}
        assert [h[0] for h in hits] == list(want.ids)
        assert [h[2] for h in hits] == pytest.approx(list(want.scores), abs=1e-6)
    assert not list(tmp_path.glob("*.partial"))


def test_pyserini_flags_and_jsonl(index, tmp_path, capsys):
    out = tmp_path / "run.jsonl"
    argv = ["search", "--index", str(index), "--topics", str(QUERIES), "--output", str(out)]
    assert main([*argv, "--hits", "3", "--threads", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["format"] == "jsonl" and summary["queries"] == len(lines) > 10
    assert all(len(r["hits"]) <= 3 for r in lines)
    assert [h["rank"] for h in lines[0]["hits"]] == [1, 2, 3]
    assert main(["search", "--index", str(index), "honey bees", "--json", "--hits", "2"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["hits"]) == 2


def test_run_to_stdout_in_a_given_format(index, capsys):
    argv = ["search", str(index), "--queries", str(QUERIES), "-o", "-", "--format", "trec"]
    assert main([*argv, "-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(len(line.split()) == 6 for line in lines)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--queries", "{q}"], "--output"),
        (["honey", "--queries", "{q}", "-o", "{tmp}/r"], "not both"),
        (["honey", "--output", "{tmp}/r"], "--output is for run files"),
        (["--queries", "{tmp}/missing.tsv", "-o", "{tmp}/r"], "not found"),
        (["--queries", "{q}", "-o", "{tmp}/r", "--run-tag", "a b"], "one word"),
        (["--queries", "{q}", "-o", "{tmp}/r", "--fields", "title"], "--fields is for"),
        ([], "Give query text"),
    ],
)
def test_bad_run_requests(index, tmp_path, capsys, extra, message):
    argv = [a.format(q=QUERIES, tmp=tmp_path) for a in extra]
    assert main(["search", str(index), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_queries_from_an_ir_datasets_id(index, tmp_path):
    """``--queries cranfield`` reads the topics through ir_datasets (offline, from
    ../shared's archive); a new process, since ir_datasets reads IR_DATASETS_HOME on import."""
    archive = shared_path("data", "irds-home") / "cranfield" / "cran.tar.gz"
    home = tmp_path / "irds"
    (home / "cranfield").mkdir(parents=True)
    (home / "cranfield" / "cran.tar.gz").symlink_to(archive)
    out = tmp_path / "cran.trec"
    argv = [sys.executable, "-m", "lsr.service.cli", "search", str(index), "--queries"]
    argv += ["cranfield", "--output", str(out), "--hits", "2", "--json"]
    env = {**os.environ, "IR_DATASETS_HOME": str(home)}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["queries"] == 225


def test_bm25_options_take_effect_or_are_refused(tmp_path, capsys):
    corpus = str(sample_dataset())
    out = tmp_path / "regex"
    argv = ["index", corpus, "--out", str(out), "--tokenizer", "regex", "--k1", "1.2"]
    assert main([*argv, "--b", "0.75", "--doc-length", "lucene"]) == 0
    saved = json.loads((out / "encoder" / "encoder.json").read_text())
    assert saved["tokenizer"]["analyzer"] == "regex"
    assert (saved["k1"], saved["b"], saved["doc_length"]) == (1.2, 0.75, "lucene")
    default = tmp_path / "default"
    assert main(["index", corpus, "--out", str(default)]) == 0
    saved = json.loads((default / "encoder" / "encoder.json").read_text())
    assert saved["tokenizer"]["analyzer"] == "lucene"
    assert (saved["k1"], saved["b"], saved["doc_length"]) == (0.9, 0.4, "exact")
    capsys.readouterr()
    model = tmp_path / "model"
    from tests.conftest import make_tiny_mlm

    make_tiny_mlm(model)
    for flag, value in (("--k1", "1.2"), ("--tokenizer", "regex"), ("--doc-length", "lucene")):
        argv = ["index", corpus, "--out", str(tmp_path / "m"), "--encoder", str(model)]
        assert main([*argv, flag, value]) == 2
        assert f"{flag}: BM25 options" in capsys.readouterr().err
