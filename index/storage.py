"""On-disk format: Arrow IPC files (memory mapped on load) and a JSON manifest, written atomically.

Layout of an index directory::

    manifest.json    format version, counts, vocab hash, quantization, file sizes + sha256,
                     a base id, the write-ahead log's checkpoint (``wal``) and a sha256 of
                     all of its own fields (``manifest_sha256``)
    terms.arrow      term (string), start (int64), df (int64), max_impact (float32),
                     block_start (int64)
    postings.arrow   doc (uint32), impact (uint8 | float32), term-major, one record batch
    docs.arrow       doc_id (large_string), n_terms (uint32)
    blocks.arrow     max (float32), last (uint32): per block of ``block_size`` postings
    store.arrow      optional: the stored documents (``lsr.index.store``), zstd batches

A save writes into a hidden sibling directory, fsyncs it and renames it into place, so a
crash or an error never leaves a half-written index under the final name. The manifest is
checksummed over its own content, so a changed scale, count or sequence number is detected
on open like a changed Arrow file; manifests of format 1 and 2 (written before the checksum
existed) are read without it, and sealed (made format 3) when a writer updates them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from lsr.index.errors import IndexFormatError

FORMAT_NAME = "lsr-index"
COMPRESSED_FORMAT_NAME = "lsr-compressed-index"  # lsr.index.compressed
FORMAT_VERSION = 3  # 3: checksummed manifest with a base id; 2: packed postings words
READABLE_VERSIONS = (1, 2, 3)  # 1 stored every index with separate doc and impact columns
CHECKSUM_SINCE = 3  # manifests of this version and later must carry their checksum
MANIFEST = "manifest.json"
MANIFEST_CHECKSUM = "manifest_sha256"
FILES = ("terms.arrow", "postings.arrow", "docs.arrow", "blocks.arrow")
OPTIONAL_FILES = ("store.arrow",)  # written by ``write_index``'s ``optional`` writers


def vocab_hash(vocab: list[str]) -> str:
    """A stable fingerprint of a vocabulary (order matters: term ids are positions)."""
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_table(path: Path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(table.num_rows, 1))
    _fsync(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Make a written file's bytes durable."""
    _fsync(Path(path))


def fsync_dir(path: Path) -> None:
    """Make a rename, creation or removal inside directory ``path`` durable."""
    _fsync(Path(path))


def json_checksum(fields: dict, key: str) -> str:
    """sha256 of a JSON object's fields (all but ``key``, where its checksum is kept), in a
    canonical form (sorted keys, no spaces)."""
    body = {k: v for k, v in fields.items() if k != key}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_sealed(
    data: bytes, where: Path, format_name: str, version: int, key: str, kind: str, advice: str
) -> dict:
    """The JSON object in ``data`` (the bytes of file ``where``) after checking that it is of
    ``format_name``, of ``version`` and whole (its checksum under ``key``): a commit point,
    a cluster manifest. ``kind`` names it in errors, ``advice`` says what to do."""
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFormatError(f"{where} is corrupt (not valid JSON: {e}); {advice}") from e
    if not isinstance(body, dict) or body.get("format") != format_name:
        raise IndexFormatError(f"{where} is not an lsr {kind}; {advice}")
    if body.get("format_version") != version:
        raise IndexFormatError(
            f"{where} has {kind} format {body.get('format_version')}, this version of lsr "
            f"reads {version}; open it with the lsr version that wrote it."
        )
    if body.get(key) != json_checksum(body, key):
        raise IndexFormatError(
            f"{where} fails its checksum: a field was changed or the file is corrupt; {advice}"
        )
    return body


def manifest_checksum(manifest: dict) -> str:
    """sha256 of a manifest's fields (all but the checksum itself), in a canonical JSON form."""
    return json_checksum(manifest, MANIFEST_CHECKSUM)


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes (hex)."""
    return _sha256(Path(path))


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one: a
    temporary file beside it, fsynced, renamed over it, then the directory fsynced."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def seal_manifest(manifest: dict) -> dict:
    """The manifest with its checksum (re)computed."""
    return {**manifest, MANIFEST_CHECKSUM: manifest_checksum(manifest)}


def manifest_bytes(manifest: dict) -> bytes:
    """The manifest, sealed with its checksum, as the bytes of ``manifest.json``."""
    return json.dumps(seal_manifest(manifest), indent=2, ensure_ascii=False).encode("utf-8")


def update_manifest(path: Path, changes: dict) -> None:
    """Replace fields of the manifest of the index at ``path`` atomically (temp file, fsync,
    rename, directory fsync); the Arrow files are untouched (the same in formats 1 to 3, so an
    older manifest becomes format 3 with its checksum)."""
    path = Path(path)
    manifest = {**read_manifest(path), **changes, "format_version": FORMAT_VERSION}
    write_file_atomically(path / MANIFEST, manifest_bytes(manifest))


def write_index(
    path: Path,
    tables: dict[str, pa.Table],
    manifest: dict,
    overwrite: bool,
    extra: Callable[[Path], None] | None = None,
    optional: dict[str, Callable[[Path], None]] | None = None,
) -> None:
    """Write ``tables`` + manifest to ``path`` atomically; ``extra(tmp_dir)`` may add files.

    ``optional[name](file)`` writes one of ``OPTIONAL_FILES``, which the manifest then lists
    with its size and checksum like the tables. The manifest gets a fresh ``base_id`` unless
    ``manifest`` names one (a write-ahead log records the id of the base it applies to)."""

    def fill(tmp: Path) -> None:
        files = {}
        for name in FILES:
            _write_table(tmp / name, tables[name])
            files[name] = {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
        for name, write in (optional or {}).items():
            if name not in OPTIONAL_FILES:
                raise ValueError(f"{name} is not an optional index file")
            write(tmp / name)
            _fsync(tmp / name)
            files[name] = {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
        if extra is not None:
            extra(tmp)
        with open(tmp / MANIFEST, "wb") as f:
            f.write(manifest_bytes({"base_id": uuid.uuid4().hex, **manifest, "files": files}))
            f.flush()
            os.fsync(f.fileno())

    write_directory(path, fill, overwrite)


def write_directory(path: Path, fill: Callable[[Path], None], overwrite: bool) -> None:
    """Create directory ``path`` atomically: ``fill(tmp)`` writes its files into a hidden
    sibling, which is fsynced and renamed into place (an existing index or collection is
    swapped out and removed only afterwards), so ``path`` holds the old or the new, whole."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; pass overwrite=True (--overwrite) to replace it."
        )
    if path.exists() and not is_index_dir(path):
        raise FileExistsError(
            f"{path} exists and is not an index; refusing to replace it. Choose another path."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        fill(tmp)
        fsync_dir(tmp)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_index_dir(path: Path) -> bool:
    """Whether ``path`` holds an index (a manifest), a collection (commit points) or a
    cluster of collections (``cluster.json``)."""
    path = Path(path)
    return (
        (path / MANIFEST).is_file()
        or any(path.glob("commit-*.json"))
        or (path / "cluster.json").is_file()
    )


def _replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``; an existing ``dst`` is swapped out and removed only afterwards."""
    old = None
    if dst.exists():
        old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(dst, old)
    try:
        os.rename(src, dst)
    except BaseException:
        if old is not None:
            os.rename(old, dst)
        raise
    fsync_dir(dst.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover(path: Path) -> list[str]:
    """Clean up after a crash during :func:`write_index` at ``path``; returns what it did.

    A crash between the two renames of a replace leaves no index under the final name but the
    previous one under ``.NAME.old-*``: it is put back (the interrupted write was never
    acknowledged). Leftover ``.NAME.tmp-*`` and ``.NAME.old-*`` directories are removed, and
    the spill files of a compressed build (``.NAME.runs-*``, ``lsr.index.compressed``).
    Only the single writer of an index should call this.
    """
    path = Path(path)
    actions = []
    olds = sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if not path.exists() and olds:
        os.rename(olds[-1], path)
        actions.append(f"restored {olds[-1].name}")
        olds = olds[:-1]
    leftovers = [
        *path.parent.glob(f".{path.name}.tmp-*"),
        *path.parent.glob(f".{path.name}.runs-*"),
    ]
    for leftover in [*olds, *leftovers]:
        shutil.rmtree(leftover, ignore_errors=True)
        actions.append(f"removed {leftover.name}")
    return actions


def read_manifest(path: Path) -> dict:
    """Parse and check the manifest of the index at ``path``."""
    path = Path(path)
    if not path.is_dir():
        raise IndexFormatError(f"No index at {path}: the directory does not exist.")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise IndexFormatError(f"{path} is not an index: {MANIFEST} is missing.")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IndexFormatError(
            f"{mpath} is corrupt (not valid JSON: {e}); rebuild the index."
        ) from e
    if isinstance(manifest, dict) and manifest.get("format") == COMPRESSED_FORMAT_NAME:
        raise IndexFormatError(
            f"{path} is a compressed index: open it with lsr.index.CompressedIndex.load "
            "(lsr bench scale builds and searches them)."
        )
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{mpath} is not an lsr index manifest; rebuild the index.")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise IndexFormatError(
            f"{path} has index format version {version}, this version of lsr reads "
            f"{', '.join(map(str, READABLE_VERSIONS))}; rebuild the index with this version."
        )
    stored = manifest.get(MANIFEST_CHECKSUM)
    if stored is None and version >= CHECKSUM_SINCE:
        raise IndexFormatError(
            f"{mpath} has no {MANIFEST_CHECKSUM} field: the file is corrupt; restore it from a "
            "backup or rebuild the index."
        )
    if stored is not None and stored != manifest_checksum(manifest):
        raise IndexFormatError(
            f"{mpath} fails its checksum: a field was changed or the file is corrupt; restore "
            "it from a backup or rebuild the index."
        )
    return manifest


def read_tables(path: Path, manifest: dict, mmap: bool, verify: bool) -> dict[str, pa.Table]:
    """Open the Arrow files of an index, checking sizes (and checksums when ``verify``)."""
    path = Path(path)
    tables = {}
    for name in FILES:
        fpath = check_file(path, name, manifest, verify)
        try:
            source = pa.memory_map(str(fpath), "r") if mmap else pa.OSFile(str(fpath), "rb")
            reader = pa.ipc.open_file(source)
            tables[name] = reader.read_all()
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
            raise IndexFormatError(
                f"{fpath} is not a readable Arrow file ({e}); rebuild the index."
            ) from e
    return tables


def check_file(path: Path, name: str, manifest: dict, verify: bool) -> Path:
    """The path of file ``name`` of the index at ``path``, after checking it against the
    manifest: present, listed, of the listed size and (with ``verify``) checksum."""
    fpath = Path(path) / name
    expected = manifest.get("files", {}).get(name)
    if expected is None:
        raise IndexFormatError(f"{Path(path) / MANIFEST} lists no {name}; rebuild the index.")
    if not fpath.is_file():
        raise IndexFormatError(f"{fpath} is missing; the index is incomplete, rebuild it.")
    size = fpath.stat().st_size
    if size != expected["bytes"]:
        raise IndexFormatError(
            f"{fpath} is {size} bytes, the manifest says {expected['bytes']}: the file is "
            "truncated or was modified; rebuild the index."
        )
    if verify and _sha256(fpath) != expected["sha256"]:
        raise IndexFormatError(
            f"{fpath} fails its checksum: the file is corrupt; rebuild the index."
        )
    return fpath


def column(
    table: pa.Table, name: str, dtype: pa.DataType | tuple[pa.DataType, ...], source: str
) -> np.ndarray:
    """A numeric column (of ``dtype``, or one of several) as a numpy array, zero-copy when
    stored in a single chunk."""
    if name not in table.column_names:
        raise IndexFormatError(f"{source} has no column {name!r}; rebuild the index.")
    col = table.column(name)
    allowed = dtype if isinstance(dtype, tuple) else (dtype,)
    if col.type not in allowed:
        expected = " or ".join(str(t) for t in allowed)
        raise IndexFormatError(f"{source} column {name!r} is {col.type}, expected {expected}.")
    if col.num_chunks == 1:
        return col.chunk(0).to_numpy(zero_copy_only=True)
    return col.to_numpy()
