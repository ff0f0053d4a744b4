"""A collection on disk (format 4, laid out as :mod:`lsr.index.commit` describes): creating
one, its vocabulary file, turning an index directory of formats 1 to 3 into one, and removing
the files that no commit point names any more.

Formats 1 to 3 were a single index directory (``manifest.json`` and the Arrow files at the
top) with its write-ahead log beside them. Readers open such a directory as a collection of
one segment; the first writer converts it: the files are hard-linked (copied where links are
impossible) into ``segments/s00000000/``, and the first commit point is written last, so a
crash during the conversion leaves the old layout whole. Its log stays as it is: the
collection takes the old base id as its own, which the log's header names.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa

from lsr.errors import InputError
from lsr.index import wal
from lsr.index.commit import SEGMENTS_DIR, VOCAB_FILE, new_commit, read_commit, write_commit
from lsr.index.dense import check_vectors
from lsr.index.errors import IndexFormatError
from lsr.index.inverted import Index
from lsr.index.representations import (
    DENSE,
    SPARSE,
    NewExtra,
    Representation,
    check_name,
    extras_of,
    vocab_file,
    write_extras,
)
from lsr.index.segment import segment_name
from lsr.index.storage import (
    FILES,
    MANIFEST,
    file_sha256,
    fsync_dir,
    read_manifest,
    update_manifest,
    vocab_hash,
    write_directory,
)
from lsr.index.store import STORE_FILE, StoreSpec

logger = logging.getLogger(__name__)
WAL_NAME = "wal.log"
LEGACY_WAL_NAME = "wal.jsonl"  # JSON lines, written by lsr 0.1
_LEGACY_FILES = (*FILES, STORE_FILE, MANIFEST, LEGACY_WAL_NAME)


def write_vocab(root: Path, vocab: Sequence[str], file: str = VOCAB_FILE) -> dict:
    """Write a vocabulary file of the collection at ``root`` (fsynced; ``file``: the main
    one, or an extra sparse representation's); its commit entry."""
    path = Path(root) / file
    data = json.dumps(list(vocab), ensure_ascii=False).encode("utf-8")
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {
        "file": file,
        "size": len(vocab),
        "hash": vocab_hash(list(vocab)),
        "bytes": len(data),
        "sha256": file_sha256(path),
    }


def read_vocab(root: Path, entry: dict) -> tuple[list[str], str]:
    """The vocabulary a commit entry names, and its hash, after checking both."""
    path = Path(root) / str(entry.get("file", VOCAB_FILE))
    if not path.is_file():
        raise IndexFormatError(f"{path} is missing; restore the collection or rebuild it.")
    data = path.read_bytes()
    if len(data) != entry.get("bytes") or file_sha256(path) != entry.get("sha256"):
        raise IndexFormatError(f"{path} fails its checksum: the file is corrupt or truncated.")
    vocab = json.loads(data.decode("utf-8"))
    if not isinstance(vocab, list) or len(vocab) != entry.get("size"):
        raise IndexFormatError(f"{path} does not hold the vocabulary its commit point names.")
    return vocab, entry["hash"]


def create_collection(
    path: Path,
    index: Index,
    documents: Sequence[dict] | pa.Table | None,
    store: StoreSpec,
    metadata: dict,
    overwrite: bool = False,
    extra: Callable[[Path], None] | None = None,
    representations: list[NewExtra] | None = None,
    main: str | None = None,
) -> Path:
    """Write a new collection holding ``index`` (and its stored ``documents``) as one segment,
    atomically (a hidden directory renamed into place); ``extra(tmp)`` adds files beside it
    (the encoders). ``representations``: extra ones (:mod:`lsr.index.representations`), with
    rows in the index's document order; ``main`` names the main one."""
    path = Path(path)
    representations = list(representations or [])

    def fill(tmp: Path) -> None:
        commit = new_commit(
            generation=1,
            collection_id=uuid.uuid4().hex,
            vocab=write_vocab(tmp, index.vocab),
            quantization={"dtype": index.quantization, "scale": index.scale},
            store=store.to_dict(),
            metadata=metadata,
        )
        if representations or main is not None:
            commit["representations"] = declare(tmp, representations, main)
        reps = extras_of(commit)
        ids = index.doc_ids.to_pylist() if reps else []
        rows = {e.name: e.rows for e in representations}
        vocabs = {e.name: e.vocab for e in representations if e.vocab is not None}

        def write_reps(folder: Path) -> None:
            write_extras(folder, reps, rows, ids, vocabs)

        if index.n_docs:
            name = segment_name(0)
            index.save(tmp / SEGMENTS_DIR / name, documents=documents,
                       extra=write_reps if reps else None)  # fmt: skip
            commit["segments"] = [{"name": name, "n_docs": index.n_docs, "deletes": None}]
            commit["next_segment"] = 1
        else:
            (tmp / SEGMENTS_DIR).mkdir()
        if extra is not None:
            extra(tmp)
        write_commit(tmp, commit)

    write_directory(path, fill, overwrite)
    return path


def declare(root: Path, extras: list[NewExtra], main: str | None) -> dict:
    """Write the vocabulary files of ``extras`` into the collection folder ``root`` being
    created; the commit point's ``representations`` entry."""
    names = [check_name(e.name) for e in extras]
    if main is not None:
        names.append(check_name(main))
    if len(set(names)) != len(names):
        raise InputError(f"representation names must differ, got {', '.join(sorted(names))}.")
    entries = []
    for extra in extras:
        if extra.kind == SPARSE:
            vocab = write_vocab(root, extra.vocab, vocab_file(extra.name))
            quantization = {"dtype": extra.quantization, "scale": None}
            entries.append(Representation(extra.name, SPARSE, vocab, quantization).to_dict())
        else:
            rows = check_vectors(extra.rows, None, f"The {extra.name!r} vectors")
            entries.append(Representation(extra.name, DENSE, dim=rows.shape[1],
                                          index=extra.index).to_dict())  # fmt: skip
    return {"main": main, "extras": entries}


# ---- formats 1 to 3 ---------------------------------------------------------------------


def legacy_log(root: Path, manifest: dict, writer: bool) -> list[dict]:
    """The logged operations to replay over an index directory of formats 1 to 3 (the records
    after its ``applied_seq``). A ``writer`` also gives a manifest without one a base id and
    turns a JSON-lines log of lsr 0.1 into a framed ``wal.log`` (or removes one that the
    framed log already holds)."""
    log, legacy = root / WAL_NAME, root / LEGACY_WAL_NAME
    base_id = manifest.get("base_id")
    start = int(manifest.get("metadata", {}).get("applied_seq", 0)) + 1
    state = wal.inspect(log, base_id, start, manifest.get("wal") or {})
    if state.kind not in (wal.OK, wal.ABSENT):
        raise wal.LogDamagedError(state.problem)
    if state.scan is not None:
        scan = state.scan
        if legacy.is_file() and writer:
            newest = max((r.get("seq", 0) for r in wal.read_legacy_jsonl(legacy)), default=0)
            if newest > scan.last_seq:
                raise IndexFormatError(
                    f"{root} has both {WAL_NAME} and {LEGACY_WAL_NAME}, and the legacy log "
                    f"holds sequence number {newest}, beyond the new log's {scan.last_seq}; "
                    "move one away."
                )
            legacy.unlink()
            fsync_dir(root)
        return [
            wal.decode(r.payload, f"{log} record {r.seq}") for r in scan.records if r.seq >= start
        ]
    ops = []
    if legacy.is_file():
        ops = [r for r in wal.read_legacy_jsonl(legacy) if r.get("seq", 0) >= start]
        if [r["seq"] for r in ops] != list(range(start, start + len(ops))):
            raise IndexFormatError(f"{legacy}: sequence numbers have gaps; restore it.")
    if writer:
        if base_id is None:  # a manifest written before base ids existed
            update_manifest(root, {"base_id": uuid.uuid4().hex})
            base_id = read_manifest(root)["base_id"]
        wal.create(log, base_id, start, [wal.encode(op) for op in ops])
        if legacy.is_file():
            legacy.unlink()
            fsync_dir(root)
            logger.warning("%s: migrated %d records of %s", root, len(ops), legacy.name)
    return ops


def convert_legacy(root: Path) -> None:
    """Turn the index directory of formats 1 to 3 at ``root`` into a collection of one
    segment (see the module docstring); only the writer (holding the lock) calls this."""
    root = Path(root)
    manifest = read_manifest(root)
    base = Index.load(root, verify=True)
    ops = legacy_log(root, manifest, writer=True)
    manifest = read_manifest(root)  # a base id may have been added
    segments = root / SEGMENTS_DIR
    if segments.exists():  # left by a conversion that crashed before its commit point
        shutil.rmtree(segments)
    name = segment_name(0)
    target = segments / name
    target.mkdir(parents=True)
    for file in (*manifest.get("files", {}), MANIFEST):
        _link_or_copy(root / file, target / file)
    fsync_dir(target)
    fsync_dir(segments)
    acknowledged = max(int((manifest.get("wal") or {}).get("seq", 0)),
                       int(base.metadata.get("applied_seq", 0)) + len(ops))  # fmt: skip
    commit = legacy_commit(base, manifest, name, acknowledged)
    commit["vocab"] = write_vocab(root, base.vocab)
    write_commit(root, commit)
    remove_legacy_files(root)
    logger.info("%s: converted an index of format %s into a collection (format 4)",
                   root, manifest.get("format_version"))  # fmt: skip


def legacy_commit(base: Index, manifest: dict, segment: str, acknowledged: int) -> dict:
    """The commit point an index directory of formats 1 to 3 stands for: its documents as
    one segment named ``segment``, its ``applied_seq``, store setting and metadata, and the
    log acknowledged up to ``acknowledged``."""
    stored = base.metadata.get("store")
    commit = new_commit(
        generation=1,
        collection_id=manifest.get("base_id") or "",
        vocab={"size": len(base.vocab), "hash": base.vocab_hash},
        quantization={"dtype": base.quantization, "scale": base.scale},
        store=stored or StoreSpec("all" if base.store is not None else "none").to_dict(),
        metadata={k: v for k, v in base.metadata.items() if k not in ("applied_seq", "store")},
    )
    commit.update(
        applied_seq=int(base.metadata.get("applied_seq", 0)),
        next_segment=1,
        segments=[{"name": segment, "n_docs": base.n_docs, "deletes": None}] if base.n_docs else [],
        wal={"seq": acknowledged},
    )
    return commit


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
        with open(dst, "rb") as f:
            os.fsync(f.fileno())


def remove_legacy_files(root: Path) -> None:
    """Remove what an index directory of formats 1 to 3 kept at the top of a collection."""
    removed = False
    for name in _LEGACY_FILES:
        with contextlib.suppress(FileNotFoundError):
            (root / name).unlink()
            removed = True
    if removed:
        fsync_dir(root)


# ---- garbage ----------------------------------------------------------------------------


def collect_garbage(
    root: Path, current: dict, held: Sequence[int], building: set[str], startup: bool = False
) -> list[str]:
    """Remove the segments and deletion files that neither the ``current`` commit point nor
    the ``held`` ones (readers' leases) name, except segments being ``building`` now; at
    ``startup`` also half-written temporaries and the files of formats 1 to 3. Returns the
    paths removed."""
    root = Path(root)
    commits = [current]
    for generation in held:
        try:
            commits.append(read_commit(root, generation))
        except (OSError, IndexFormatError):  # removed meanwhile, or unreadable: keep all
            return []
    names = {s["name"] for c in commits for s in c["segments"]}
    files = {(s["name"], s["deletes"]["file"]) for c in commits for s in c["segments"]
             if s.get("deletes")}  # fmt: skip
    removed = []
    segments = root / SEGMENTS_DIR
    for child in sorted(segments.iterdir()) if segments.is_dir() else []:
        if child.name.startswith("."):  # a segment being written (temp dir + rename)
            owner = child.name[1:].split(".tmp-")[0]
            if startup or owner not in building:
                shutil.rmtree(child, ignore_errors=True)
                removed.append(str(child))
        elif child.name in names:
            for bits in child.glob("deletes-*.bits"):
                if (child.name, bits.name) not in files:
                    bits.unlink(missing_ok=True)
                    removed.append(str(bits))
        elif child.name not in building:
            shutil.rmtree(child, ignore_errors=True)
            removed.append(str(child))
    if startup:
        for tmp in root.glob(".*.tmp-*"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed.append(str(tmp))
        remove_legacy_files(root)
    return removed
