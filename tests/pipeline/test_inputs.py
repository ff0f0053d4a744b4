"""``lsr index`` reads what ``eval`` and ``bench`` read (ir_datasets ids included), Pyserini's
pretokenized JsonVectorCollection, and names the file and line of whatever it cannot read."""

import json
import os
import subprocess
import sys

import pytest

from lsr.pipeline import Searcher
from lsr.service.cli import main
from tests.conftest import make_tiny_mlm, shared_path

VECTORS = [
    {"id": "d1", "contents": "honey bees", "vector": {"honey": 12, "bee": 30, "flower": 3}},
    {"id": "d2", "contents": "lava", "vector": {"lava": 40, "volcano": 22}},
    {"id": "d3", "contents": "tea", "vector": {"tea": 5, "drink": 9, "honey": 2.5}},
]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_pretokenized_documents_are_indexed_as_they_are(tmp_path, capsys):
    folder = tmp_path / "vectors"
    folder.mkdir()
    write_jsonl(folder / "part-0.jsonl", VECTORS[:2])
    write_jsonl(folder / "part-1.jsonl", VECTORS[2:])
    out = tmp_path / "idx"
    argv = ["index", str(folder), "--pretokenized", "--out", str(out), "--json"]
    assert main([*argv, "--quantization", "float32"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["n_docs"], summary["n_postings"], summary["vocab_size"]) == (3, 8, 7)
    with Searcher.open(out) as searcher:
        assert searcher.encoder.name == "pretokenized"
        results = searcher.search(["honey bee", "honey honey", "zebra"], k=5, fields=["text"])
        assert dict(results[0].items()) == {"d1": 42.0, "d3": 2.5}  # weights as given
        assert dict(results[1].items()) == {"d1": 24.0, "d3": 5.0}  # a term twice counts twice
        assert len(results[2].ids) == 0
        assert results[0].documents[0]["text"] == "honey bees"


def test_pretokenized_with_a_query_encoder(tmp_path, capsys):
    model = make_tiny_mlm(tmp_path / "mlm")
    unknown = [{"id": "d1", "contents": "", "vector": {"honey": 1, "nectar": 2}}]
    corpus = write_jsonl(tmp_path / "v.jsonl", unknown)
    out = tmp_path / "idx"
    argv = ["index", str(corpus), "--pretokenized", "--encoder", str(model), "--out", str(out)]
    assert main(argv) == 2
    assert "document d1 has the term 'nectar'" in capsys.readouterr().err
    known = [{"id": "a", "contents": "", "vector": {"honey": 3.0, "bees": 2.0}}]
    write_jsonl(corpus, known)
    assert main(argv) == 0
    with Searcher.open(out) as searcher:
        assert searcher.encoder.name == "splade"
        assert list(searcher.search("honey", k=1)[0].ids) == ["a"]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": "a", "contents": "x"}'], ":1: a pretokenized record needs 'vector'"),
        (
            ['{"id": "a", "vector": {"x": 1}}', '{"id": "b", "vector": {"y": -2}}'],
            ":2: term 'y' has weight -2",
        ),  # fmt: skip
        (['{"id": "a", "vector": {"x": "high"}}'], ":1: term 'x' has weight 'high'"),
        (['{"vector": {"x": 1}}'], ":1: the record has no id"),
        (["{not json"], ":1: not valid JSON"),
    ],
)
def test_bad_pretokenized_records_name_file_and_line(tmp_path, capsys, lines, message):
    corpus = tmp_path / "v.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    assert main(["index", str(corpus), "--pretokenized", "--out", str(tmp_path / "i")]) == 2
    err = capsys.readouterr().err
    assert f"{corpus}{message}" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "i").exists()


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (
            b'{"_id": "a", "text": ""}\n{"_id": "b", "text": " "}\n',
            "c.jsonl",
            "has 2 documents, all with empty title and text",
        ),  # fmt: skip
        (
            b'{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y"\n',
            "c.jsonl",
            "c.jsonl:2: not valid JSON",
        ),  # fmt: skip
        (
            b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "caf\xe9"}\n',
            "c.jsonl",
            "c.jsonl:2: not UTF-8 text (byte 0xe9 at column 26)",
        ),  # fmt: skip
        (b"\x7fELF\x02\x01\x01\x00\x00\x00binary", "c.tsv", "c.tsv:1: holds a NUL byte"),
        (b"a\tb\tc\td\n", "c.tsv", "c.tsv:1: expected 'id<TAB>text'"),
    ],
)
def test_unreadable_corpora_name_file_and_line(tmp_path, capsys, content, name, message):
    (tmp_path / name).write_bytes(content)
    assert main(["index", str(tmp_path / name), "--out", str(tmp_path / "i")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "i").exists()


def test_append_cannot_be_pretokenized(tmp_path, capsys):
    corpus = write_jsonl(tmp_path / "v.jsonl", VECTORS)
    argv = ["index", str(corpus), "--pretokenized", "--append", "--out", str(tmp_path / "i")]
    assert main(argv) == 2
    assert "--pretokenized cannot add" in capsys.readouterr().err


def test_index_an_ir_datasets_id(tmp_path):
    """``lsr index cranfield``: the corpus through ir_datasets, offline from ../shared's
    archive (a new process: ir_datasets reads IR_DATASETS_HOME when imported)."""
    archive = shared_path("data", "irds-home") / "cranfield" / "cran.tar.gz"
    home = tmp_path / "irds"
    (home / "cranfield").mkdir(parents=True)
    (home / "cranfield" / "cran.tar.gz").symlink_to(archive)
    out = tmp_path / "cran"
    argv = [sys.executable, "-m", "lsr.service.cli", "index", "cranfield", "--out", str(out)]
    env = {**os.environ, "IR_DATASETS_HOME": str(home)}
    done = subprocess.run([*argv, "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["n_docs"] == 1400
    with Searcher.open(out) as searcher:
        assert len(searcher.search("boundary layer", k=3)[0].ids) == 3
    bad = subprocess.run([*argv[:4], "nosuch/dataset", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert bad.returncode == 2 and "neither a file, a folder nor an ir_datasets id" in bad.stderr
