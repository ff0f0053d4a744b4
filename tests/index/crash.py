"""Crash loops: run a script in a subprocess that dies (``os._exit(9)``, like kill -9: no
cleanup, no flush) at its N-th file-system call, for N = 1, 2, ... until it completes, and
check the collection after each crash."""

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# prepended to a crash script: after it, the script's N-th rename/replace/fsync/mkdir/unlink
# (N = sys.argv[2]) ends the process
CRASH_AT = """
import os, sys
crash_at, calls = int(sys.argv[2]), 0

def crashing(real):
    def call(*args, **kwargs):
        global calls
        calls += 1
        if calls == crash_at:
            os._exit(9)  # a crash at this point: no cleanup, no flush
        return real(*args, **kwargs)
    return call

def crash_from_here():
    for name in ("rename", "replace", "fsync", "mkdir", "unlink"):
        setattr(os, name, crashing(getattr(os, name)))
"""


def crash_loop(base: Path, work: Path, script: str, check: Callable) -> list[int]:
    """Run ``CRASH_AT + script`` (``sys.argv[1]``: a copy of ``base``) crashing at every step,
    ``check(collection, completed_process)`` after each; returns the exit codes (9 ... 0)."""
    crash_at, outcomes = 1, []
    while True:
        trial = work / f"crash{crash_at}" / "idx"
        shutil.copytree(base, trial)
        done = subprocess.run(
            [sys.executable, "-c", CRASH_AT + script, str(trial), str(crash_at)],
            capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode in (0, 9), done.stderr
        outcomes.append(done.returncode)
        check(trial, done)
        if done.returncode == 0:
            return outcomes
        crash_at += 1
