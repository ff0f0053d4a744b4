"""``lsr encode --ray``: a corpus encoded by a pool of Ray actors into Parquet vector parts.

The driver reads the corpus, fits the encoder if it needs corpus statistics (BM25) and saves
it under ``OUT/encoder``; the corpus becomes a Ray Dataset of *parts* (``chunk`` documents
each, a multiple of the batch size), which ``map_batches`` hands to an actor pool of
``concurrency`` actors, each holding one copy of the model (one GPU each when the cluster has
GPUs). An actor encodes its part in the batches single-process ``lsr encode`` uses and writes
``OUT/part-NNNNN.parquet`` atomically, so the parts, read in order, hold bit for bit the
vectors of ``lsr encode`` on the same corpus.

``OUT/manifest.json`` names the plan (the corpus's fingerprint, the encoder, the batch and
part sizes) and, once every part is written, the parts. Run again after a crash, a killed
worker or a stopped cluster, the same command finds the parts already written (each file is
whole or absent) and encodes only the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp
from tqdm.auto import tqdm

from lsr.checks import positive_int
from lsr.encoders import load_encoder
from lsr.encoding import prepare
from lsr.errors import CorpusError, InputError
from lsr.index.storage import vocab_hash, write_file_atomically
from lsr.pipeline.cluster import init_ray
from lsr.pipeline.indexing import ENCODER_DIR, read_documents
from lsr.vector_files import FORMAT_NAME, MANIFEST, part_name, write_vectors

logger = logging.getLogger(__name__)
WORKERS_DIR = ".workers"  # each actor leaves its pid here (to watch or stop it)


def _fingerprint(ids: Sequence[str], texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for doc_id, text in zip(ids, texts, strict=True):
        digest.update(doc_id.encode("utf-8") + b"\0" + text.encode("utf-8") + b"\0")
    return digest.hexdigest()


class PartEncoder:
    """One actor of the pool: loads the saved encoder once, then encodes whole parts."""

    def __init__(self, encoder_dir: str, out: str, batch_size: int, label: str) -> None:
        self.encoder = load_encoder(encoder_dir)
        self.out = Path(out)
        self.batch_size = batch_size
        self.label = label
        workers = self.out / WORKERS_DIR
        workers.mkdir(exist_ok=True)
        (workers / str(os.getpid())).touch()

    def __call__(self, batch: dict) -> dict:
        done, rows, seconds = [], [], []
        for number, ids, texts in zip(batch["part"], batch["ids"], batch["texts"], strict=True):
            started = time.perf_counter()
            ids, texts = list(ids), list(texts)
            written = write_vectors(
                self.out / part_name(int(number)), self._batches(ids, texts),
                self.encoder.vocab, encoder=self.label,
            )  # fmt: skip
            done.append(int(number))
            rows.append(written)
            seconds.append(time.perf_counter() - started)
        return {"part": np.asarray(done), "rows": np.asarray(rows), "seconds": np.asarray(seconds)}

    def _batches(self, ids: list[str], texts: list[str]) -> Iterator[tuple[sp.csr_array, list]]:
        for lo in range(0, len(ids), self.batch_size):
            chunk = texts[lo : lo + self.batch_size]
            yield self.encoder.encode_documents(chunk), ids[lo : lo + self.batch_size]


def encode_on_ray(
    corpus,
    encoder,
    out: str | Path,
    address: str | None = "auto",
    concurrency: int = 2,
    batch_size: int = 32,
    chunk: int = 8192,
    label: str = "",
    progress: bool = False,
    overwrite: bool = False,
) -> dict:
    """Encode ``corpus`` with ``encoder`` on the Ray cluster at ``address`` into the folder
    ``out`` (Parquet parts and a manifest); resumes a run of the same plan that stopped.
    Returns the summary (documents, parts encoded now and found done, seconds)."""
    concurrency = positive_int(concurrency, "concurrency")
    batch_size = positive_int(batch_size, "batch_size")
    chunk = positive_int(chunk, "chunk")
    chunk = -(-chunk // batch_size) * batch_size  # whole batches: the batches of lsr encode
    out = Path(out)
    t0 = time.perf_counter()
    docs = read_documents(corpus, progress)
    ids, texts = [d.id for d in docs], [d.contents for d in docs]
    fit_seconds = prepare(encoder, docs, progress)
    plan = {
        "format": FORMAT_NAME,
        "documents": len(docs),
        "corpus_sha256": _fingerprint(ids, texts),
        "encoder": label,
        "vocab_size": len(encoder.vocab),
        "vocab_hash": vocab_hash(list(encoder.vocab)),
        "batch_size": batch_size,
        "chunk": chunk,
        "parts": [part_name(i) for i in range(-(-len(docs) // chunk))],
    }
    _prepare_folder(out, plan, overwrite)
    done = [i for i, name in enumerate(plan["parts"]) if _part_ok(out / name, i, plan)]
    pending = [i for i in range(len(plan["parts"])) if i not in set(done)]
    encoder.save_pretrained(out / ENCODER_DIR)
    ray = init_ray(address)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts documents
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    logger.info("%d parts to encode, %d found done", len(pending), len(done))
    started = time.perf_counter()
    if pending:
        items = [
            {"part": i, "ids": ids[i * chunk : (i + 1) * chunk],
             "texts": texts[i * chunk : (i + 1) * chunk]}
            for i in pending
        ]  # fmt: skip
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            PartEncoder,
            fn_constructor_kwargs={
                "encoder_dir": str((out / ENCODER_DIR).resolve()),
                "out": str(out.resolve()),
                "batch_size": batch_size,
                "label": label,
            },  # fmt: skip
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_cpus=1,
            num_gpus=gpus,
        )
        with tqdm(total=len(docs), initial=sum(_rows(i, plan) for i in done), desc="encode",
                  unit="doc", disable=not progress) as bar:  # fmt: skip
            for row in dataset.iter_rows():
                bar.update(int(row["rows"]))
    seconds = time.perf_counter() - started
    bad = [name for i, name in enumerate(plan["parts"]) if not _part_ok(out / name, i, plan)]
    if bad:
        raise CorpusError(f"{out}: parts {', '.join(bad[:5])} were not written; run again.")
    write_file_atomically(out / MANIFEST, json.dumps({**plan, "complete": True}, indent=1).encode())
    shutil.rmtree(out / WORKERS_DIR, ignore_errors=True)
    encoded = sum(_rows(i, plan) for i in pending)
    return {
        "path": str(out),
        "n_docs": len(docs),
        "parts": len(plan["parts"]),
        "parts_encoded": len(pending),
        "parts_resumed": len(done),
        "concurrency": concurrency,
        "fit_seconds": fit_seconds,
        "encode_seconds": seconds,
        "encode_docs_per_second": encoded / seconds if seconds > 0 and encoded else 0.0,
        "seconds": time.perf_counter() - t0,
        "bytes": sum(p.stat().st_size for p in out.rglob("*.parquet")),
    }


def _prepare_folder(out: Path, plan: dict, overwrite: bool) -> None:
    """Create ``out``, or check that it holds an unfinished run of the same plan (then it
    resumes); ``overwrite`` replaces an encoding of another plan or a finished one."""
    manifest = out / MANIFEST
    if out.exists() and not manifest.is_file() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not an lsr encoding; choose another --out.")
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            old = {}
        same = {k: v for k, v in old.items() if k != "complete"} == plan
        if (not same or old.get("complete")) and not overwrite:
            raise FileExistsError(
                f"{out} holds "
                + (
                    "this encoding, finished"
                    if same
                    else "an encoding of another corpus or encoder"
                )
                + "; pass --overwrite to encode again, or choose another --out."
            )
        if not same or old.get("complete"):
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".part-*.tmp-*"):  # a part a killed worker was writing
        stale.unlink()
    write_file_atomically(manifest, json.dumps({**plan, "complete": False}, indent=1).encode())


def _part_ok(path: Path, number: int, plan: dict) -> bool:
    """Whether part ``number`` is written whole with the rows the plan gives it."""
    if not path.is_file():
        return False
    try:
        return pq.ParquetFile(str(path)).metadata.num_rows == _rows(number, plan)
    except Exception:  # a file that is not Parquet: encode the part again
        return False


def _rows(number: int, plan: dict) -> int:
    """The documents of part ``number`` (every part has ``chunk``, the last the rest)."""
    return min(plan["chunk"], plan["documents"] - number * plan["chunk"])


def check_out(out: str | Path) -> None:
    if str(out).endswith(".parquet"):
        raise InputError("With --ray, --out is a folder of Parquet parts, not a .parquet file.")
