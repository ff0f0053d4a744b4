"""``lsr index --shards``: one corpus encoded once and written as N collections plus a cluster
manifest (:mod:`lsr.index.cluster`).

The encoder is fitted on the whole corpus (BM25's document frequencies and average length
are global) and every shard is quantized with the step of the largest weight of all shards,
so each document's vector, and each query's score, equals what one index over all documents
holds. Documents go to shards by the hash of their id, or each given corpus file is a shard.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lsr.encoding import EncodingStats, encode_corpus
from lsr.errors import InputError
from lsr.index import IndexBuilder
from lsr.index.cluster import (
    ClusterManifest,
    Positions,
    positions_path,
    shard_name,
    shard_of,
    split_rows,
    write_manifest,
)
from lsr.index.collection import create_collection
from lsr.index.storage import vocab_hash, write_directory
from lsr.index.store import StoreSpec
from lsr.kernels import dequantize_scale
from lsr.pipeline.indexing import (
    ENCODER_DIR,
    IndexingSummary,
    open_vectors_of,
    read_documents,
    summarize,
)
from lsr.vector_files import is_vectors

logger = logging.getLogger(__name__)


def check_shards(shards: int | str, n_corpora: int) -> int | None:
    """The number of hash shards, or None for one shard per corpus file (``"files"``)."""
    if shards == "files":
        if n_corpora < 2:
            raise InputError(
                "--shards files makes one shard of each corpus given; give two or more."
            )
        return None
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise InputError(f"shards must be a positive number or 'files', got {shards!r}.")
    if n_corpora > 1:
        raise InputError(
            f"{n_corpora} corpora given: several corpora are the shards themselves "
            "(--shards files), or give one corpus to shard by id."
        )
    return shards


def index_sharded(
    corpora: Sequence,
    encoder,
    out: str | Path,
    shards: int | str,
    quantization: str = "uint8",
    batch_size: int = 256,
    overwrite: bool = False,
    progress: bool = False,
    store: StoreSpec | str | None = "all",
) -> IndexingSummary:
    """Encode ``corpora`` once and write a cluster of collections to ``out`` (atomically):
    ``shards`` hash shards of the one corpus given, or ``"files"``: each corpus a shard.
    Corpora are what :func:`~lsr.pipeline.index_corpus` reads, ``.parquet`` vector files of
    ``lsr encode`` included (then no documents are stored)."""
    corpora = list(corpora)
    n_hash = check_shards(shards, len(corpora))
    spec = StoreSpec.parse(store)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it.")
    t0 = time.perf_counter()
    stats = EncodingStats()
    vectors_given = [is_vectors(c) for c in corpora]
    if any(vectors_given) and not all(vectors_given):
        raise InputError("Give corpora of one kind: all .parquet vector files, or all texts.")
    if all(vectors_given):
        spec = StoreSpec("none")
        sources, docs = _vector_sources(corpora, encoder, batch_size), None
    else:
        per_file = [read_documents(c, progress) for c in corpora]
        docs = [d for part in per_file for d in part]
        file_of = np.repeat(np.arange(len(per_file)), [len(p) for p in per_file])
        batches = encode_corpus(encoder, docs, batch_size, progress, stats)
        sources = ((v, ids, file_of[lo : lo + len(ids)]) for v, ids, lo in _numbered(batches))
    n_shards = n_hash or len(corpora)
    builders = [IndexBuilder(encoder.vocab, quantization=quantization) for _ in range(n_shards)]
    members: list[list[int]] = [[] for _ in range(n_shards)]  # global positions per shard
    top, position = 0.0, 0
    for vectors, ids, files in sources:
        owner = shard_of(ids, n_hash) if n_hash else files
        if vectors.nnz:
            top = max(top, float(vectors.data.max()))
        for number, rows in enumerate(split_rows(owner, n_shards)):
            if len(rows):
                builders[number].add(vectors[rows], [ids[i] for i in rows])
                members[number] += (position + rows).tolist()
        position += len(ids)
    if position == 0:
        raise InputError(f"{corpora[0]} has no documents.")
    scale = dequantize_scale(top) if quantization == "uint8" else None
    n_postings = 0

    def fill(tmp: Path) -> None:
        nonlocal n_postings
        entries = []
        for number, builder in enumerate(builders):
            builder.scale = scale
            index = builder.finish()
            name = shard_name(number)
            records = None
            if spec.stores:
                records = [spec.select(docs[i].record()) for i in members[number]]
            meta = {"encoder": getattr(encoder, "name", type(encoder).__name__),
                    "corpus": ", ".join(map(str, corpora)), "cluster_shard": number}  # fmt: skip
            create_collection(
                tmp / name, index, records, spec, meta,
                extra=lambda folder: encoder.save_pretrained(folder / ENCODER_DIR),
            )  # fmt: skip
            Positions.build(index.doc_ids.to_pylist(), np.asarray(members[number])).save(
                positions_path(tmp, name)
            )
            entries.append({"name": name, "n_docs": index.n_docs, "postings": index.n_postings})
            n_postings += index.n_postings
            builders[number] = None  # free the shard's postings before the next
        write_manifest(tmp, _manifest(entries, n_hash, encoder, quantization, scale, position))

    write_directory(out, fill, overwrite)
    return summarize(out, position, n_postings, len(encoder.vocab), stats, t0, n_shards)


def _numbered(batches):
    """``(vectors, ids, first position)`` of each batch."""
    lo = 0
    for vectors, ids in batches:
        yield vectors, ids, lo
        lo += len(ids)


def _vector_sources(paths: Sequence, encoder, batch_size: int):
    """``(vectors, ids, file number per row)`` batches of Parquet vector files."""
    files = [open_vectors_of(p, encoder) for p in paths]  # every one checked before reading
    for number, vf in enumerate(files):
        for vectors, ids in vf.batches(batch_size):
            yield vectors, ids, np.full(len(ids), number, dtype=np.int64)


def _manifest(entries, n_hash, encoder, quantization, scale, n_docs) -> ClusterManifest:
    statistics = {"n_docs": n_docs, "n_postings": sum(e["postings"] for e in entries)}
    fitted = {k: getattr(encoder, k) for k in ("n_docs", "avgdl") if hasattr(encoder, k)}
    if fitted:  # BM25: the corpus statistics every shard's vectors were weighted with
        statistics["encoder"] = {
            "name": encoder.name,
            "n_docs": int(fitted.get("n_docs", 0)),
            "avgdl": float(fitted.get("avgdl", 0.0)),
        }
    return ClusterManifest(
        cluster_id=uuid.uuid4().hex,
        shards=[{"name": e["name"], "n_docs": e["n_docs"]} for e in entries],
        routing="hash" if n_hash else "files",
        vocab_size=len(encoder.vocab),
        vocab_hash=vocab_hash(list(encoder.vocab)),
        quantization={"dtype": quantization, "scale": scale},
        statistics=statistics,
    )
