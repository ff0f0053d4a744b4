"""Corpus readers: BEIR folders, JSONL and TSV, with clear errors on malformed input."""

import gzip
import json

import pytest

from lsr import CorpusError, count_documents, read_corpus, sample_dataset


def test_bundled_sample_is_a_beir_folder():
    docs = list(read_corpus(sample_dataset()))
    assert len(docs) >= 200
    assert len({d.id for d in docs}) == len(docs)
    assert all(d.contents for d in docs)
    assert count_documents(sample_dataset()) == len(docs)


def test_jsonl_title_and_text(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"_id": "1", "title": "T", "text": "body"}\n\n{"_id": 2, "text": "only"}\n')
    docs = list(read_corpus(path))
    assert [(d.id, d.contents) for d in docs] == [("1", "T body"), ("2", "only")]


def test_gzipped_jsonl(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"_id": "a", "text": "x"}) + "\n")
    assert [d.id for d in read_corpus(path)] == ["a"]


def test_tsv_with_and_without_title(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("id\ttext\nd1\thello world\nd2\tTitle\tbody text\n")
    docs = list(read_corpus(path))
    assert [(d.id, d.title, d.text) for d in docs] == [
        ("d1", "", "hello world"),
        ("d2", "Title", "body text"),
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"_id": "1", "text": "a"}\n{oops\n', r"bad.jsonl:2: not valid JSON"),
        ("noid.jsonl", '{"text": "a"}\n', "has no _id"),
        ("list.jsonl", "[1, 2]\n", "expected a JSON object"),
        ("types.jsonl", '{"_id": "1", "text": 5}\n', "must be strings"),
        ("bad.tsv", "a\tb\tc\td\n", "expected 'id<TAB>text'"),
        ("corpus.csv", "x", "expected a .jsonl"),
    ],
)
def test_malformed_corpora(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(CorpusError, match=message):
        list(read_corpus(path))


def test_missing_corpus_and_folder_without_corpus(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        list(read_corpus(tmp_path / "nope.jsonl"))
    with pytest.raises(CorpusError, match="without corpus.jsonl"):
        list(read_corpus(tmp_path))
