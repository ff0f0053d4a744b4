"""Export a collection's documents and sparse vectors to other search engines, as files their
own bulk APIs take:

- **OpenSearch**: a ``rank_features`` field (what ``neural_sparse`` queries search), the
  index's mapping and bulk NDJSON files;
- **Elasticsearch**: a ``sparse_vector`` field (what ``sparse_vector`` queries search), the
  same kinds of files;
- **Qdrant**: a named sparse vector (term ids and weights, dot-product scoring), the
  collection's settings and points as JSON lines, with :func:`upload_qdrant` to send them.

Each export writes ``export.json`` (what was written and how to read it back), a query
example and a ``README.txt`` with the commands that load the files.

Both Lucene-based engines keep 9 significant bits of a feature's value (truncating the
float32's mantissa) and refuse dots in feature names and values that are not positive normal
floats. So by default they get the 8-bit impacts themselves, which 9 bits hold exactly: the
engine's scores are ours divided by the collection's scale and rank alike. With
``values="weights"`` they get the weights rounded to 9 bits (what the engine would store,
within 0.2%). A token with a dot gets ``DOT_STANDIN`` in its place (listed in
``export.json``); a weight the engine cannot take (below the smallest normal float) is left
out and counted. Qdrant stores float32: it gets the weights as they are.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lsr import __version__
from lsr.checks import new_folder
from lsr.errors import InputError
from lsr.index.ciff import impacts_of
from lsr.index.inverted import Index
from lsr.index.storage import fsync_dir, fsync_file
from lsr.index.store import ID_FIELD

FORMATS = ("opensearch", "elasticsearch", "qdrant")
VALUES = ("impacts", "weights")
DOT_STANDIN = "\u2024"  # ONE DOT LEADER: looks like a dot, is not a path separator
MIN_NORMAL = float(np.finfo(np.float32).tiny)
LUCENE_MAX_TERM_BYTES = 32766
POINT_NAMESPACE = uuid.UUID("6c7e1f3a-25a4-5b0e-9d8c-4c5352000001")
DOCS_PER_FILE = 10_000  # a bulk file stays far below the engines' 100 MB request limit
EXPORT_FILE = "export.json"


@dataclass
class EngineExport:
    """What :func:`export_documents` wrote."""

    format: str
    path: Path
    n_docs: int
    n_postings: int
    files: list[str]
    field: str
    values: str
    scale: float
    renamed_tokens: dict[str, str] = field(default_factory=dict)
    dropped_postings: int = 0

    def to_json(self) -> dict:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


def point_id(doc_id: str) -> str:
    """The Qdrant point id of document ``doc_id``: a UUID derived from it (Qdrant ids are
    integers or UUIDs), the same in every export; the id itself is the payload's ``_id``."""
    return str(uuid.uuid5(POINT_NAMESPACE, doc_id))


def feature_name(token: str) -> str:
    """The name a Lucene-based engine gets for ``token``: the token, with ``DOT_STANDIN`` for
    each dot (a dot there would name a sub-field). Apply it to query tokens too."""
    return token.replace(".", DOT_STANDIN)


def nine_bits(values: np.ndarray) -> np.ndarray:
    """float32 ``values`` rounded to the nearest float with 9 significant bits: what Lucene's
    feature fields keep (they truncate the lower 15 bits), so what is written is what is
    stored."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.int32)
    rounded = (bits + np.int32(1 << 14)) & np.int32(~((1 << 15) - 1))
    return rounded.view(np.float32)


def _feature_names(vocab: list[str]) -> tuple[list[str], dict[str, str]]:
    names = [feature_name(t) for t in vocab]
    renamed = {t: n for t, n in zip(vocab, names, strict=True) if t != n}
    if len(set(names)) != len(names):
        raise InputError(
            f"Two tokens of the vocabulary become one feature name once dots are replaced by "
            f"{DOT_STANDIN!r}; this vocabulary cannot be exported to a Lucene-based engine."
        )
    long = [t for t in names if len(t.encode("utf-8")) > LUCENE_MAX_TERM_BYTES or not t]
    if long:
        raise InputError(
            f"The token {long[0][:40]!r} cannot be a feature name (empty, or over "
            f"{LUCENE_MAX_TERM_BYTES} bytes in UTF-8)."
        )
    return names, renamed


def _rows(index: Index, values: str, lucene: bool) -> tuple[sp.csr_array, float, int]:
    """The documents' vectors as CSR rows (as ``values``), the scale, and how many postings
    were left out because a Lucene feature field cannot hold them."""
    docs, impacts, scale = impacts_of(index)
    data = impacts.astype(np.float32)
    dropped = 0
    if values == "weights":
        data *= np.float32(scale)
        if lucene:
            data = nine_bits(data)
            keep = data >= MIN_NORMAL
            dropped = int((~keep).sum())
            data = np.where(keep, data, 0).astype(np.float32)
    csc = sp.csc_array((data, docs, index.offsets), shape=(index.n_docs, index.vocab_size))
    csr = csc.tocsr()
    csr.eliminate_zeros()
    csr.sort_indices()
    return csr, scale, dropped


def _check_field(name: str, records: list[dict]) -> None:
    for record in records:
        if name in record:
            raise InputError(
                f"Document {record.get(ID_FIELD)!r} has a stored field {name!r}, the name of "
                f"the vector field: give another with --field."
            )


def _number(value: float) -> float | int:
    """A JSON number: an int when the value is whole (impacts), else the float32's exact
    value (``value`` comes from a float32 array), which reads back as the same float32
    whether the reader parses a float or a double."""
    return int(value) if value.is_integer() else value


def _lucene_lines(index_name, field_name, ids, csr, names, records) -> Iterator[str]:
    for i, doc_id in enumerate(ids):
        lo, hi = csr.indptr[i], csr.indptr[i + 1]
        vector = {
            names[t]: _number(w)
            for t, w in zip(csr.indices[lo:hi].tolist(), csr.data[lo:hi].tolist(), strict=True)
        }
        source = {k: v for k, v in records[i].items() if k != ID_FIELD}
        source[field_name] = vector
        yield json.dumps({"index": {"_index": index_name, "_id": doc_id}}, ensure_ascii=False)
        yield json.dumps(source, ensure_ascii=False)


def _qdrant_lines(field_name, ids, csr, records) -> Iterator[str]:
    for i, doc_id in enumerate(ids):
        lo, hi = csr.indptr[i], csr.indptr[i + 1]
        point = {
            "id": point_id(doc_id),
            "vector": {
                field_name: {
                    "indices": csr.indices[lo:hi].tolist(),
                    "values": [_number(w) for w in csr.data[lo:hi].tolist()],
                }
            },
            "payload": records[i],
        }
        yield json.dumps(point, ensure_ascii=False)


def _mapping(fmt: str, field_name: str, meta: dict) -> dict:
    kind = "rank_features" if fmt == "opensearch" else "sparse_vector"
    return {"mappings": {"_meta": {"lsr": meta}, "properties": {field_name: {"type": kind}}}}


def _query_example(fmt: str, field_name: str, tokens: dict) -> dict:
    if fmt == "qdrant":
        return {
            "query": {"indices": list(tokens), "values": list(tokens.values())},
            "using": field_name,
            "limit": 10,
        }
    named = {feature_name(t): w for t, w in tokens.items()}
    if fmt == "opensearch":
        return {"query": {"neural_sparse": {field_name: {"query_tokens": named}}}}
    return {
        "query": {"sparse_vector": {"field": field_name, "query_vector": named, "prune": False}}
    }


_LUCENE_README = """{engine} export of {source} ({n_docs} documents), by lsr {version}.

Create the index, then send the bulk files{versions}:

  curl -XPUT "${env}/{index}" -H 'Content-Type: application/json' \\
       --data-binary @mapping.json
  for f in bulk-*.ndjson; do
    curl -XPOST "${env}/_bulk" -H 'Content-Type: application/x-ndjson' --data-binary @"$f"
  done
  curl -XPOST "${env}/{index}/_search" -H 'Content-Type: application/json' \\
       --data-binary @query-example.json

The field {field!r} ({kind}) holds each document's {values}.{note} Query tokens name their
features with feature_name(): a dot becomes {standin!r} (export.json lists the tokens renamed).
"""
_LUCENE = {
    "opensearch": {"engine": "OpenSearch", "env": "OPENSEARCH", "kind": "rank_features",
                   "versions": "", "note": ""},
    "elasticsearch": {
        "engine": "Elasticsearch", "env": "ELASTICSEARCH", "kind": "sparse_vector",
        "versions": " (Elasticsearch 8.15 or later for the sparse_vector query; 8.11-8.14 "
        "take the same vector in a text_expansion query)",
        "note": ' "prune": false keeps the query exact.',
    },
}  # fmt: skip
_QDRANT_README = """Qdrant export of {source} ({n_docs} documents), by lsr {version}.

Each line of points-*.jsonl is a point: a UUID id (the document's _id is in the payload), the
sparse vector {field!r} (term ids of vocab.json and {values}) and the stored fields. Load it
with qdrant-client into a server or its local mode:

  from qdrant_client import QdrantClient
  from lsr.index.engine_export import upload_qdrant
  upload_qdrant("{path}", QdrantClient(url="http://localhost:6333"), "{index}")

(collection.json is the body of PUT /collections/{index}). query-example.json is the body of
POST /collections/{index}/points/query.
"""


def export_documents(
    collection,
    out: str | Path,
    fmt: str,
    *,
    index_name: str = "lsr",
    field_name: str = "lsr",
    values: str | None = None,
    query_example: Callable[[dict | None], dict[str, float] | None] | None = None,
    docs_per_file: int = DOCS_PER_FILE,
    source: str = "",
) -> EngineExport:
    """Write the live documents of ``collection`` (a ``LiveIndex``) to the new folder ``out``
    in ``fmt`` (one of ``FORMATS``): vectors as ``values`` (``impacts`` or ``weights``;
    default impacts for the Lucene-based engines, weights for Qdrant) in the field
    ``field_name``, stored fields beside them. ``query_example``: given the first document's
    stored record (None without documents), the query of the example file (token ->
    weight), or None for no example. The folder appears whole or not at all."""
    if fmt not in FORMATS:
        raise InputError(f"Unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    lucene = fmt != "qdrant"
    values = values or ("impacts" if lucene else "weights")
    if values not in VALUES:
        raise InputError(f"values must be one of {', '.join(VALUES)} (got {values!r}).")
    if not field_name or "." in field_name or field_name == ID_FIELD:
        raise InputError(f"--field {field_name!r}: give a name without dots, other than _id.")
    if not index_name or index_name != index_name.lower() or "/" in index_name:
        raise InputError(f"--name {index_name!r}: give a lowercase name without slashes.")
    out = new_folder(out)
    index, batches = collection.live_documents(docs_per_file)
    vocab = list(index.vocab)
    names, renamed = _feature_names(vocab) if lucene else (vocab, {})
    csr, scale, dropped = _rows(index, values, lucene)
    ids = index.doc_ids.to_pylist()
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        first = next(batches, None)
        tokens = query_example(first[0] if first else None) if query_example else None
        files = []
        start = 0
        for number, records in enumerate(itertools.chain([first] if first else [], batches)):
            stop = start + len(records)
            rows = csr[start:stop]
            if lucene:
                _check_field(field_name, records)
                lines = _lucene_lines(index_name, field_name, ids[start:stop], rows, names,
                                      records)  # fmt: skip
                name = f"bulk-{number:05d}.ndjson"
            else:
                lines = _qdrant_lines(field_name, ids[start:stop], rows, records)
                name = f"points-{number:05d}.jsonl"
            _write_lines(tmp / name, lines)
            files.append(name)
            start = stop
        if start != len(ids):
            raise RuntimeError(f"export: {start} stored records for {len(ids)} documents")
        meta = {
            "version": __version__,
            "vocab_hash": index.vocab_hash,
            "values": values,
            "scale": scale,
            "source": source,
        }
        if lucene:
            _write_json(tmp / "mapping.json", _mapping(fmt, field_name, meta))
        else:
            _write_json(
                tmp / "collection.json", {"sparse_vectors": {field_name: {"modifier": "none"}}}
            )
            _write_json(tmp / "vocab.json", vocab)
        if tokens:
            if not lucene:  # Qdrant's sparse vectors name terms by id
                term_ids = {t: i for i, t in enumerate(vocab)}
                tokens = {term_ids[t]: w for t, w in tokens.items() if t in term_ids}
            _write_json(tmp / "query-example.json", _query_example(fmt, field_name, tokens))
        result = EngineExport(
            format=fmt,
            path=out,
            n_docs=len(ids),
            n_postings=int(csr.nnz),
            files=files,
            field=field_name,
            values=values,
            scale=float(scale),
            renamed_tokens=renamed,
            dropped_postings=dropped,
        )
        _write_json(tmp / EXPORT_FILE, {**result.to_json(), **meta, "index_name": index_name})
        readme = (_LUCENE_README if lucene else _QDRANT_README).format(
            source=source or "a collection", n_docs=len(ids), version=__version__,
            index=index_name, field=field_name, path=out, standin=DOT_STANDIN,
            values="8-bit impacts (weight = impact * scale)" if values == "impacts"
            else "weights", **_LUCENE.get(fmt, {}),
        )  # fmt: skip
        (tmp / "README.txt").write_text(readme, encoding="utf-8")
        for written in tmp.iterdir():  # every file durable before the folder gets its name
            fsync_file(written)
        fsync_dir(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _write_lines(path: Path, lines: Iterator[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line)
            f.write("\n")


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_export(folder: str | Path) -> dict:
    """The ``export.json`` of an export folder, or a clear error."""
    path = Path(folder) / EXPORT_FILE
    if not path.is_file():
        raise InputError(f"{folder} is not an lsr export folder (no {EXPORT_FILE}).")
    return json.loads(path.read_text(encoding="utf-8"))


def upload_qdrant(folder: str | Path, client, collection_name: str, batch_size: int = 256) -> int:
    """Create ``collection_name`` with ``client`` (a ``qdrant_client.QdrantClient``: a server
    or its local mode) from a Qdrant export and upsert its points; returns how many."""
    from qdrant_client import models

    folder = Path(folder)
    info = read_export(folder)
    if info.get("format") != "qdrant":
        raise InputError(f"{folder} is a {info.get('format')} export, not a Qdrant one.")
    settings = json.loads((folder / "collection.json").read_text(encoding="utf-8"))
    client.create_collection(
        collection_name,
        vectors_config={},
        sparse_vectors_config={
            name: models.SparseVectorParams(modifier=models.Modifier(spec.get("modifier", "none")))
            for name, spec in settings["sparse_vectors"].items()
        },
    )
    count = 0
    for name in info["files"]:
        batch = []
        with open(folder / name, encoding="utf-8") as f:
            for line in f:
                point = json.loads(line)
                vectors = {
                    n: models.SparseVector(indices=v["indices"], values=v["values"])
                    for n, v in point["vector"].items()
                }
                batch.append(
                    models.PointStruct(id=point["id"], vector=vectors, payload=point["payload"])
                )
                if len(batch) == batch_size:
                    client.upsert(collection_name, batch)
                    count += len(batch)
                    batch = []
        if batch:
            client.upsert(collection_name, batch)
            count += len(batch)
    return count
