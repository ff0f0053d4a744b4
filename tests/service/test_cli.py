"""The ``lsr`` command line end to end on the bundled sample and on bad input."""

import json
import subprocess
import sys

import pytest

from lsr import sample_dataset
from lsr.service.cli import main


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "idx"
    assert main(["index", str(sample_dataset()), "--encoder", "bm25", "--out", str(out)]) == 0
    return out


def test_index_prints_summary(tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", str(sample_dataset()), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_docs"] >= 200 and summary["n_postings"] > 0
    assert (out / "commit-000000000001.json").is_file()
    assert (out / "encoder" / "encoder.json").is_file()


def test_search_table_and_json(sample_index, capsys):
    assert main(["search", str(sample_index), "how do bees make honey", "-k", "3"]) == 0
    table = capsys.readouterr().out
    assert "rank" in table and "how do bees make honey" in table
    assert (
        main(["search", str(sample_index), "honey bees", "volcano eruption", "--json", "-k", "2"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert [r["query"] for r in result] == ["honey bees", "volcano eruption"]
    assert all(len(r["hits"]) == 2 for r in result)
    assert result[0]["hits"][0]["score"] >= result[0]["hits"][1]["score"]


def test_query_without_known_terms(sample_index, capsys):
    assert main(["search", str(sample_index), "zzzqqq", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["hits"] == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "/nonexistent/idx", "q"], "No index at /nonexistent/idx"),
        (["index", "/nonexistent/corpus.jsonl", "--out", "{tmp}/x"], "does not exist"),
        (["search", "{index}", "q", "-k", "0"], "-k/--hits: must be a positive integer"),
        (["index", "{sample}", "--out", "{index}"], "already exists; pass --overwrite"),
        (["index", "{sample}", "--out", "{tmp}/y", "--b", "2"], "--b: must be a number from 0"),
        (["index", "{sample}", "--out", "{tmp}/z", "--encoder", "nope"], "Unknown encoder"),
        (["serve", "/nonexistent/idx"], "No index at /nonexistent/idx"),
        (["loadtest", "http://example.com:80", "--queries", "{sample}"], "only targets loopback"),
    ],
)
def test_bad_input_exits_2_with_one_line(sample_index, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, index=sample_index, sample=sample_dataset()) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_overwrite_replaces_index(sample_index, capsys):
    argv = [
        "index",
        str(sample_dataset()),
        "--out",
        str(sample_index),
        "--overwrite",
        "--k1",
        "1.2",
    ]
    assert main(argv) == 0
    enc = json.loads((sample_index / "encoder" / "encoder.json").read_text())
    assert enc["k1"] == 1.2


def test_console_script_demo_runs_end_to_end():
    proc = subprocess.run(
        [sys.executable, "-m", "lsr.service.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "indexed" in proc.stdout and "nDCG@10" in proc.stdout


def test_verbose_and_debug_are_accepted_after_the_subcommand(sample_index, capsys):
    assert main(["search", str(sample_index), "bees", "-v", "--json"]) == 0
    assert main(["-v", "search", str(sample_index), "bees", "--json"]) == 0
    capsys.readouterr()
    assert main(["search", "/nonexistent/idx", "q", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith(
        "lsr search: error: No index"
    )
    assert main(["search", "/nonexistent/idx", "q"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_bug_surfaces_as_one(sample_index, monkeypatch):
    from lsr.service import commands

    def broken(args):
        raise TypeError("a bug in a command")

    monkeypatch.setattr(commands, "cmd_search", broken)
    with pytest.raises(TypeError, match="a bug in a command"):
        main(["search", str(sample_index), "bees"])


def test_version_and_usage_errors(capsys):
    from lsr import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lsr {__version__}"
    assert main(["search"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lsr search --help" in err


def test_a_closed_stdout_pipe_is_not_an_error(tmp_path):
    """``lsr search ... | head -1``: the reader goes away while lsr still has output (far
    more than a pipe holds); lsr exits 0 without an error line."""
    assert main(["index", str(sample_dataset()), "--out", str(tmp_path / "idx")]) == 0
    queries = [f"bees honey lava {i}" for i in range(20)]
    search = subprocess.Popen(
        [sys.executable, "-m", "lsr.service.cli", "search", str(tmp_path / "idx"), *queries,
         "-k", "300", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    search.stdout.readline()
    search.stdout.close()  # as head does after its lines
    assert search.wait(timeout=300) == 0
    assert search.stderr.read().decode() == ""


def test_encode_queries_writes_the_query_side_vectors(tmp_path, capsys):
    from lsr import BM25Encoder
    from lsr.eval.datasets import load_topics
    from lsr.pipeline import read_documents
    from lsr.vector_files import open_vectors

    out = tmp_path / "q.parquet"
    args = ["encode", str(sample_dataset()), "--queries", "--encoder", "bm25", "--out", str(out)]
    assert main(args + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_queries"] == 40
    vectors = open_vectors(out)
    [(matrix, ids)] = list(vectors.batches(100))
    topics = load_topics(sample_dataset())
    assert list(ids) == list(topics)
    encoder = BM25Encoder()
    encoder.fit(d.contents for d in read_documents(sample_dataset()))
    expected = encoder.encode_queries(list(topics.values()))
    assert vectors.vocab == list(encoder.vocab)
    assert abs(matrix - expected).max() < 1e-6 and matrix.nnz == expected.nnz
    # BM25 needs the corpus: a bare query file cannot fit it; --ray is for documents
    queries_file = str(sample_dataset() / "queries.jsonl")
    bare = [
        "encode",
        queries_file,
        "--queries",
        "--encoder",
        "bm25",
        "--out",
        str(tmp_path / "b.parquet"),
    ]
    assert main(bare) != 0
    assert "corpus statistics" in capsys.readouterr().err
    assert main(args[:-1] + [str(tmp_path / "r.parquet"), "--ray"]) != 0
    assert "drop --ray" in capsys.readouterr().err
