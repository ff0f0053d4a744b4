"""Exponential back-off after failures of one kind of operation (appends, flushes, merges)."""

from __future__ import annotations

import time


class Backoff:
    """Consecutive failures of one kind of operation and when to try it again (exponential
    back-off from ``first`` seconds, doubling up to ``cap``)."""

    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap = first, cap
        self.failures = 0
        self.last_error: str | None = None
        self._until = 0.0

    def fail(self, error: BaseException) -> float:
        self.failures += 1
        delay = min(self.cap, self.first * 2 ** (self.failures - 1))
        self._until = time.monotonic() + delay
        self.last_error = str(error) or type(error).__name__
        return delay

    def succeed(self) -> None:
        self.failures, self.last_error, self._until = 0, None, 0.0

    def remaining(self) -> float:
        return max(0.0, self._until - time.monotonic())

    def to_dict(self) -> dict:
        return {
            "failures": self.failures,
            "last_error": self.last_error,
            "retry_in_s": round(self.remaining(), 3),
        }
