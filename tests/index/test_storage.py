"""Save/load round trip, atomic writes, and detection of corrupt or truncated index files."""

import json

import numpy as np
import pytest

from lsr.index import Index, IndexFormatError
from lsr.index.storage import seal_manifest
from tests.conftest import random_csr


@pytest.fixture
def built(rng):
    docs = random_csr(rng, 400, 120, 0.05)
    idx = Index.build(docs, [f"d{i}" for i in range(400)], [f"t{i}" for i in range(120)])
    queries = random_csr(rng, 25, 120, 0.05)
    return idx, queries


@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip_gives_identical_results(tmp_path, built, mmap):
    idx, queries = built
    idx.save(tmp_path / "idx")
    loaded = Index.load(tmp_path / "idx", mmap=mmap)
    assert loaded.vocab == idx.vocab and loaded.n_docs == idx.n_docs
    assert loaded.scale == idx.scale and loaded.quantization == "uint8"
    assert np.array_equal(loaded.docs, idx.docs) and np.array_equal(loaded.impacts, idx.impacts)
    a, b = idx.search(queries, 10), loaded.search(queries, 10)
    assert list(a) == list(b)
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["n_postings"] == idx.n_postings and manifest["format_version"] == 3


def test_memory_mapped_arrays_are_not_copies(tmp_path, built):
    idx, _ = built
    idx.save(tmp_path / "idx")
    loaded = Index.load(tmp_path / "idx", mmap=True)
    assert not loaded.docs.flags.writeable  # a view on the mapped Arrow buffer


def test_refuses_to_overwrite_without_flag(tmp_path, built):
    idx, _ = built
    idx.save(tmp_path / "idx")
    with pytest.raises(FileExistsError, match="already exists"):
        idx.save(tmp_path / "idx")
    idx.save(tmp_path / "idx", overwrite=True)
    (tmp_path / "notanindex").mkdir()
    with pytest.raises(FileExistsError, match="not an index"):
        idx.save(tmp_path / "notanindex", overwrite=True)


def test_failed_write_keeps_the_old_index_and_leaves_no_temp_dirs(tmp_path, built):
    idx, queries = built
    idx.save(tmp_path / "idx")
    before = list(idx.search(queries, 5))

    def crash(tmp):
        raise RuntimeError("disk full")

    other = Index.build(
        random_csr(np.random.default_rng(9), 10, 120, 0.1), [f"x{i}" for i in range(10)], idx.vocab
    )
    with pytest.raises(RuntimeError, match="disk full"):
        other.save(tmp_path / "idx", overwrite=True, extra=crash)
    assert list(Index.load(tmp_path / "idx").search(queries, 5)) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def _flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["postings.arrow", "terms.arrow", "docs.arrow"])
def test_corrupt_file_is_detected(tmp_path, built, name):
    idx, _ = built
    idx.save(tmp_path / "idx")
    path = tmp_path / "idx" / name
    _flip_byte(path, path.stat().st_size // 2)
    with pytest.raises(IndexFormatError, match="checksum"):
        Index.load(tmp_path / "idx")


def test_truncated_file_is_detected(tmp_path, built):
    idx, _ = built
    idx.save(tmp_path / "idx")
    path = tmp_path / "idx" / "postings.arrow"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IndexFormatError, match="truncated"):
        Index.load(tmp_path / "idx", verify=False)


def test_unreadable_arrow_is_detected_even_without_checksums(tmp_path, built):
    idx, _ = built
    idx.save(tmp_path / "idx")
    path = tmp_path / "idx" / "terms.arrow"
    path.write_bytes(b"\0" * path.stat().st_size)
    with pytest.raises(IndexFormatError, match="not a readable Arrow file"):
        Index.load(tmp_path / "idx", verify=False)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: (d / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "manifest.json").unlink(), "manifest.json is missing"),
        (lambda d: (d / "docs.arrow").unlink(), "docs.arrow is missing"),
        (lambda d: _edit_manifest(d, format_version=99), "format version 99"),
        (lambda d: _edit_manifest(d, n_docs=3), "disagree with the manifest"),
        (lambda d: _edit_manifest(d, format="other"), "not an lsr index"),
    ],
)
def test_broken_directories_give_clear_errors(tmp_path, built, mutate, message):
    idx, _ = built
    idx.save(tmp_path / "idx")
    mutate(tmp_path / "idx")
    with pytest.raises(IndexFormatError, match=message):
        Index.load(tmp_path / "idx")


def _edit_manifest(folder, **changes):
    """Change manifest fields and re-seal its checksum, to reach the checks behind it."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(seal_manifest(manifest)))


def test_missing_directory(tmp_path):
    with pytest.raises(IndexFormatError, match="does not exist"):
        Index.load(tmp_path / "nope")


def _separate_layout(idx: Index) -> Index:
    """The same index with doc numbers and uint8 impacts in two arrays (format 1's layout)."""
    return Index(
        vocab=idx.vocab,
        doc_ids=idx.doc_ids,
        offsets=idx.offsets,
        docs=idx.doc_numbers(),
        impacts=idx.impact_values(),
        doc_terms=idx.doc_terms,
        scale=idx.scale,
    )


def test_packed_and_separate_layouts_search_identically(built):
    idx, queries = built
    separate = _separate_layout(idx)
    assert idx.packed and not separate.packed
    for algorithm in ("exhaustive", "maxscore", "bmw"):
        a = idx.search(queries, 10, algorithm=algorithm)
        b = separate.search(queries, 10, algorithm=algorithm)
        assert np.array_equal(a.docs, b.docs) and np.array_equal(a.scores, b.scores)
    assert idx.document_vector(7) == separate.document_vector(7)


def test_reads_format_version_1(tmp_path, built):
    idx, queries = built
    _separate_layout(idx).save(tmp_path / "v1")
    path = tmp_path / "v1" / "manifest.json"
    manifest = json.loads(path.read_text())
    assert manifest["postings_layout"] == "separate"
    del manifest["postings_layout"], manifest["manifest_sha256"]  # format 1 had neither
    manifest["format_version"] = 1
    path.write_text(json.dumps(manifest))
    old = Index.load(tmp_path / "v1")
    assert not old.packed and old.quantization == "uint8"
    assert list(old.search(queries, 10)) == list(idx.search(queries, 10))


def test_unknown_postings_layout(tmp_path, built):
    idx, _ = built
    idx.save(tmp_path / "idx")
    _edit_manifest(tmp_path / "idx", postings_layout="zigzag")
    with pytest.raises(IndexFormatError, match="unknown postings layout 'zigzag'"):
        Index.load(tmp_path / "idx")
