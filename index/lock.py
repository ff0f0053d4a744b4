"""One writer per collection: an exclusive ``flock`` on a lock file beside the directory.

The lock file sits next to the collection (``.NAME.lock`` in its parent), not inside it,
because a merge replaces the whole directory and a lock on a file inside would move away
with the old one. The kernel drops a ``flock`` when its holder dies, so the file left by a
``kill -9`` is stale, not a lock: the next writer takes it over (and logs whose it was).
The file names its holder (pid, host, time), so a refused writer is told who holds it.
Readers take no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from lsr.index.errors import CollectionLockedError

logger = logging.getLogger(__name__)


def lock_path(collection: Path) -> Path:
    collection = Path(collection).absolute()
    return collection.parent / f".{collection.name}.lock"


class WriterLock:
    """An exclusive, non-blocking writer lock on ``collection``; use as a context manager or
    call :meth:`acquire` / :meth:`release`."""

    def __init__(self, collection: str | Path) -> None:
        self.collection = Path(collection)
        self.path = lock_path(self.collection)
        self._fd: int | None = None

    def acquire(self) -> WriterLock:
        if self._fd is not None:
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                if holder.startswith(f"pid {os.getpid()} "):
                    where = f"already in this process ({holder}): close the other LiveIndex"
                else:
                    where = f"by another process ({holder}): stop it"
                raise CollectionLockedError(
                    f"{self.collection} is open for writing {where}, or open the collection "
                    "read-only."
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # the holder we waited for may have removed the file before we locked it
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read_holder(fd)
        if previous != "unknown holder":
            logger.warning("%s: taking over the stale lock of %s", self.collection, previous)
        record = json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file (while still holding it, so no one locks a removed file), then
        unlock."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"null")
        return f"pid {int(info['pid'])} on {info['host']}"
    except (OSError, ValueError, TypeError, KeyError):
        return "unknown holder"
