"""Several worker processes serving one collection: ``lsr serve --workers N``.

One Python process answers a few thousand searches a second on one core; more processes
use more cores. The command's own process becomes a small supervisor (it never loads the
collection) and starts N workers that accept connections on the one listening socket it
bound (the kernel hands each new connection to one of them):

- worker 0 is the **writer**: it holds the collection's writer lock and its write-ahead
  log, as a single-process server does, and also listens on a Unix socket in the server's
  private runtime folder (mode 0700) for the requests the readers relay to it;
- workers 1 to N-1 are **readers**: they open the collection read-only (memory-mapping the
  same segment files, so the collection is in memory once), answer searches themselves and
  pick up the writer's new commit points and log records every ``--refresh-seconds``
  (near-real-time search, like OpenSearch's refresh interval); writes, reads by id and
  ``/metrics`` they relay to the writer (:mod:`lsr.service.forward`).

With ``--read-only`` there is no writer: every worker is a reader of a collection another
process writes. Rate limits are shared by all workers (:meth:`KeyRing.share`), the
workers' request metrics are added up (:mod:`lsr.service.metrics`, multiprocess mode), and
a model's threads (``OMP_NUM_THREADS``, unless set) are the cores shared out among them.

The supervisor prints the startup line once every worker is ready, starts a worker that
exits unexpectedly again (a reader at once; the writer reopens the collection and replays
its log, so no acknowledged write is lost, while readers answer writes 503 with
``Retry-After``), and gives up when one keeps dying. On SIGTERM or Ctrl-C it stops the
readers first (each drains its requests), then the writer (which drains, stops a merge at
a safe point, checkpoints its log and releases the lock). Each worker asks the kernel to
stop it if the supervisor dies (``PR_SET_PDEATHSIG``), so no worker outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lsr.errors import ConfigError, LSRError
from lsr.service.auth import KeyRing
from lsr.service.forward import WorkerPlace

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 600.0  # loading a large collection or a model takes a while
RESTARTS_PER_MINUTE = 5  # a worker that dies more often than this is given up on
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass
class Launch:
    """What every worker needs, passed to it when it starts (picklable)."""

    sock: socket.socket
    app_options: dict  # keyword arguments of ``create_app`` (``keys`` and ``worker`` aside)
    run_options: dict  # keyword arguments of ``server.run``
    keys: KeyRing
    access_log: str
    metrics_dir: str


@dataclass
class _Worker:
    place: WorkerPlace
    process: multiprocessing.process.BaseProcess | None = None
    conn: multiprocessing.connection.Connection | None = None
    deaths: list[float] = field(default_factory=list)


class Supervisor:
    """Starts, watches and stops the worker processes of one ``lsr serve``."""

    def __init__(self, launch_options: dict, keys: KeyRing, count: int, read_only: bool) -> None:
        if count < 2:
            raise ConfigError(f"--workers must be 2 or more for a supervisor, got {count}.")
        self.runtime = Path(tempfile.mkdtemp(prefix="lsr-serve-"))  # mode 0700
        (self.runtime / "metrics").mkdir()
        self.context = multiprocessing.get_context("spawn")
        keys.share(self.context)
        self.launch = Launch(keys=keys, metrics_dir=str(self.runtime / "metrics"),
                             **launch_options)  # fmt: skip
        token = secrets.token_hex(16)
        writer_socket = None if read_only else str(self.runtime / "writer.sock")
        tls = bool(self.launch.run_options.get("ssl_certfile"))
        self.workers = [
            _Worker(WorkerPlace(
                index=i, role="reader" if read_only or i else "writer", count=count,
                token=token, writer_socket=writer_socket,
                workers_file=str(self.runtime / "workers.json"), tls=tls,
            ))
            for i in range(count)
        ]  # fmt: skip
        self._stopping = False

    @property
    def description(self) -> str:
        """How the work is shared, for the startup line."""
        readers = sum(w.place.role == "reader" for w in self.workers)
        writer = "1 writer, " if readers < len(self.workers) else ""
        return f"{len(self.workers)} workers ({writer}{readers} reader{'s' * (readers != 1)})"

    def start(self) -> dict:
        """Start every worker (the writer first) and wait until all are ready; the facts of
        the first for the startup line. Raises ``ConfigError`` when one cannot start."""
        try:
            first, *others = self.workers
            facts = self._start_and_wait([first])
            self._start_and_wait(others)
        except BaseException:
            self.stop()
            raise
        return facts

    def watch(self) -> int:
        """Serve until SIGTERM or SIGINT (then stop, 0), or a worker keeps dying (1)."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not self._stopping:
                sentinels = {w.process.sentinel: w for w in self.workers}
                for sentinel in multiprocessing.connection.wait(list(sentinels), timeout=0.5):
                    if self._stopping:
                        break
                    if not self._replace(sentinels[sentinel]):
                        return 1
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()

    def stop(self) -> None:
        """Stop the readers (each drains), then the writer; remove the runtime folder."""
        graceful = float(self.launch.run_options.get("graceful_timeout", 30.0))
        for role in ("reader", "writer"):
            group = [w for w in self.workers if w.place.role == role and w.process is not None]
            for worker in group:
                if worker.process.is_alive():
                    os.kill(worker.process.pid, signal.SIGTERM)
            for worker in group:
                worker.process.join(graceful + 60.0)
                if worker.process.is_alive():
                    logger.warning("worker %d did not stop in time; killing it", worker.place.index)
                    worker.process.kill()
                    worker.process.join()
                self._forget(worker)
        shutil.rmtree(self.runtime, ignore_errors=True)

    # ---- inside -------------------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        self._stopping = True

    def _spawn(self, worker: _Worker) -> None:
        receive, send = self.context.Pipe(duplex=False)
        worker.process = self.context.Process(
            target=_worker_main, args=(worker.place, self.launch, send),
            name=f"lsr-serve-{worker.place.role}-{worker.place.index}", daemon=False,
        )  # fmt: skip
        # the child inherits the variable from its start: it must be set before anything
        # there imports prometheus_client (unpickling the launch options may)
        previous = os.environ.get(MULTIPROC_ENV)
        os.environ[MULTIPROC_ENV] = self.launch.metrics_dir
        try:
            worker.process.start()
        finally:
            if previous is None:
                del os.environ[MULTIPROC_ENV]
            else:
                os.environ[MULTIPROC_ENV] = previous
        send.close()
        worker.conn = receive

    def _start_and_wait(self, workers: list[_Worker]) -> dict:
        for worker in workers:
            self._spawn(worker)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        facts = [self._wait_ready(worker, deadline) for worker in workers]
        self._write_workers_file()
        return facts[0] if facts else {}

    def _wait_ready(self, worker: _Worker, deadline: float) -> dict:
        """The worker's facts once it says it is ready; ``ConfigError`` when it fails."""
        while not worker.conn.poll(0.2):
            if not worker.process.is_alive():
                worker.process.join()
                raise ConfigError(
                    f"worker {worker.place.index} ({worker.place.role}) exited with status "
                    f"{worker.process.exitcode} while starting."
                )
            if self._stopping or time.monotonic() > deadline:
                raise ConfigError(f"worker {worker.place.index} did not start in time.")
        try:
            kind, detail = worker.conn.recv()
        except EOFError:
            worker.process.join()
            raise ConfigError(
                f"worker {worker.place.index} exited with status {worker.process.exitcode} "
                "while starting."
            ) from None
        if kind != "ready":
            raise ConfigError(detail)
        return detail

    def _replace(self, worker: _Worker) -> bool:
        """Start another worker in place of one that exited; False when it keeps dying."""
        worker.process.join()
        code = worker.process.exitcode
        self._forget(worker)
        now = time.monotonic()
        worker.deaths = [t for t in worker.deaths if now - t < 60.0] + [now]
        what = f"worker {worker.place.index} ({worker.place.role})"
        if len(worker.deaths) > RESTARTS_PER_MINUTE:
            print(f"lsr serve: {what} exited {len(worker.deaths)} times within a minute "
                  f"(status {code}); stopping the server", file=sys.stderr, flush=True)  # fmt: skip
            return False
        print(f"lsr serve: {what} exited with status {code}; starting another",
              file=sys.stderr, flush=True)  # fmt: skip
        try:
            self._start_and_wait([worker])
        except ConfigError as e:
            print(f"lsr serve: {e}", file=sys.stderr, flush=True)
            return self._stopping or self._replace(worker)
        return True

    def _forget(self, worker: _Worker) -> None:
        """After a worker's process ended: drop its live gauges and its pipe."""
        from prometheus_client import multiprocess

        if worker.process is not None and worker.process.pid is not None:
            multiprocess.mark_process_dead(worker.process.pid, self.launch.metrics_dir)
        if worker.conn is not None:
            worker.conn.close()
            worker.conn = None

    def _write_workers_file(self) -> None:
        """The workers' pids, read by the memory metrics (written whole, then renamed)."""
        entries = [
            {"worker": w.place.index, "role": w.place.role, "pid": w.process.pid}
            for w in self.workers
            if w.process is not None and w.process.is_alive()
        ]
        path = Path(self.workers[0].place.workers_file)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(entries))
        os.replace(temporary, path)


def _worker_main(place: WorkerPlace, launch: Launch, conn) -> None:
    """A worker process: build the app for its place, say it is ready, serve."""
    parent = os.getppid()
    _stop_with_parent()
    if os.getppid() != parent:  # the supervisor died before the request above
        return
    os.setpgrp()  # Ctrl-C reaches the supervisor alone, which stops the workers in order
    # a model's threads: the cores shared out among the workers, unless the user chose
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // place.count)))
    from lsr.service import server
    from lsr.service.app import create_app

    try:
        app = create_app(keys=launch.keys, worker=place, **launch.app_options)
        sockets = [launch.sock]
        if place.role == "writer" and place.writer_socket:
            sockets.append(server.bind_unix(place.writer_socket))
    except LSRError as e:
        conn.send(("failed", str(e)))
        sys.exit(2)
    except BaseException as e:
        with contextlib.suppress(OSError):
            conn.send(("failed", f"worker {place.index} failed to start: {e!r}"))
        raise
    server.configure_access_log(launch.access_log)
    conn.send(("ready", server.server_facts(app)))
    conn.close()
    server.run(app, sockets, **launch.run_options)


def _stop_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (elsewhere: nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
