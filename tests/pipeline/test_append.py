"""``lsr index --append``: a corpus added to an existing collection through its writer."""

import json
import subprocess
import sys

import pytest

from lsr.errors import CorpusError
from lsr.index import LiveIndex
from lsr.pipeline.appending import append_corpus
from lsr.service.cli import main


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _doc(i, text):
    return {"_id": f"d{i}", "title": f"T{i}", "text": text, "metadata": {"n": i}}


@pytest.fixture
def collection(tmp_path):
    first = _jsonl(tmp_path / "a.jsonl", [_doc(i, f"bees honey flower {i}") for i in range(20)])
    assert main(["index", str(first), "--out", str(tmp_path / "idx")]) == 0
    return tmp_path / "idx"


def test_append_adds_replaces_and_stores(collection, tmp_path, capsys):
    more = [_doc(i, "lava volcano honey") for i in range(15, 30)] + [{"_id": "e", "text": "  "}]
    path = _jsonl(tmp_path / "b.jsonl", more)
    assert main(["index", str(path), "--out", str(collection), "--append", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["added"], summary["replaced"], summary["skipped_empty"]) == (10, 5, 1)
    assert summary["n_docs"] == 30
    assert summary["with_unknown_words"] == 15  # BM25's vocabulary was fitted on the first
    with LiveIndex(collection, read_only=True) as live:
        assert live.stats()["log_records"] == 0  # merged into the base
        assert live.document("d17") == _doc(17, "lava volcano honey")
        assert live.document("e") is None
    assert main(["search", str(collection), "honey", "-k", "40", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)[0]["hits"]
    assert {h["id"] for h in hits} == {f"d{i}" for i in range(30)}


def test_append_is_refused_while_another_process_writes(collection, tmp_path, capsys):
    """A second process holding the collection as its writer (as lsr serve does)."""
    path = _jsonl(tmp_path / "b.jsonl", [_doc(99, "honey")])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(collection)], stdout=subprocess.PIPE, stdin=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline().strip() == b"ready"
        assert main(["index", str(path), "--out", str(collection), "--append"]) == 2
        assert "is open for writing by another process" in capsys.readouterr().err
    finally:
        holder.communicate(b"stop\n", timeout=60)
    assert main(["index", str(path), "--out", str(collection), "--append"]) == 0


HOLD = """
import sys
from lsr.index import LiveIndex
with LiveIndex(sys.argv[1]):
    print("ready", flush=True)
    sys.stdin.readline()
"""


def test_duplicate_ids_and_a_missing_collection(collection, tmp_path):
    path = _jsonl(tmp_path / "b.jsonl", [_doc(1, "honey"), _doc(1, "bees")])
    with pytest.raises(CorpusError, match="'d1' appears twice"):
        append_corpus(path, collection)
    assert main(["index", str(path), "--out", str(tmp_path / "nowhere"), "--append"]) == 2
