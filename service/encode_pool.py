"""Document encoding for writes in worker processes at a lower CPU priority.

Encoding documents is the bulk of a write's work (BM25's analysis is Python; a model's forward
pass is heavy), and in the server's own process it holds the interpreter lock and the cores
that searches need: while documents are ingested, searches queue behind them. An
:class:`EncodePool` runs the writer's document encoding in separate processes (``spawn``ed,
so no state of the server is shared), each with the same encoder loaded from the same spec
and ``os.nice`` raised, so the operating system gives the searches of the server process the
cores first. Measured on 2 cores with ``lsr bench ingest`` (20,000 SciFact documents in
batches of 100, one client searching meanwhile): search p99 during the ingest 140 ms in
process, 18 ms with one worker (idle: about 5 ms). Queries are still encoded in the server
(one short text, latency first).

A worker that dies (killed, out of memory) is replaced and the request tried once more; an
error the encoder raises reaches the caller as it is.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import scipy.sparse as sp

from lsr.checks import positive_int

logger = logging.getLogger(__name__)
_ENCODER = None  # the worker process's encoder


def _start_worker(spec: str, nice: int) -> None:
    global _ENCODER
    from lsr.encoders import load_encoder

    os.nice(nice)
    _ENCODER = load_encoder(spec)


def _encode(texts: list[str]) -> tuple[sp.csr_array, list[list[str]]]:
    from lsr.encoding import encode_with_unknown

    return encode_with_unknown(_ENCODER, texts)


class EncodePool:
    """``workers`` processes that encode documents with the encoder ``spec`` names (a path
    or an encoder spec, as ``lsr.load_encoder`` takes), ``nice`` steps below the server."""

    def __init__(self, spec: str, workers: int = 1, nice: int = 10) -> None:
        self.spec, self.workers, self.nice = str(spec), positive_int(workers, "workers"), nice
        self._pool = self._start()
        self.encode(["warm up"])  # load the encoder now: a failure shows at start, not later

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self.spec, self.nice),
        )

    def encode(self, texts: Sequence[str]) -> tuple[sp.csr_array, list[list[str]]]:
        """Document vectors and the words each text's encoder vocabulary lacks (see
        :func:`lsr.encoding.encode_with_unknown`), from a worker."""
        try:
            return self._pool.submit(_encode, list(texts)).result()
        except BrokenProcessPool:
            logger.error("an encoding worker died; starting new ones and trying again")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start()
            return self._pool.submit(_encode, list(texts)).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
