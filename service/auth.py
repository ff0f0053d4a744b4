"""API keys with scopes and per-key rate limits.

A key has a name (what logs and metrics show; the secret itself is never logged), the secret
(or only its sha256, so a key file need not hold secrets), scopes and an optional rate limit.
Scopes: ``read`` (search, encode, documents by id, stats, metrics), ``write`` (add, replace,
delete documents) and ``admin`` (refresh). Several keys may be valid at once, so a key is
rotated by adding the new one, moving clients over, then removing the old one.

Keys come from a file (``lsr serve --api-keys FILE``, JSON or YAML) or the environment
(``LSR_API_KEYS``, the same JSON text), and the single ``--api-key`` / ``LSR_API_KEY`` of
earlier releases is a key named ``default`` with every scope::

    keys:
      - {name: frontend, key_sha256: 9f86d0..., scopes: [read], rate_per_second: 200}
      - {name: indexer, key: s3cret, scopes: [read, write], rate_per_second: 50, burst: 100}
      - {name: ops, key: t0ps3cret, scopes: [read, write, admin]}

Reads need no key unless the server protects them (``--protect-reads``); when they do, and
for writes and admin always, a request without a valid key is answered 401, with a key that
lacks the scope 403, and a key over its rate 429 with ``Retry-After``. Requests without a key
(where none is needed) share the anonymous rate limit, if one is set.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lsr.errors import ConfigError

SCOPES = ("read", "write", "admin")
ANONYMOUS = "anonymous"
HEADER = "x-api-key"


class AuthError(Exception):
    """A request refused by the key ring: ``status`` 401, 403 or 429 (with ``retry_after``)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class RateLimiter:
    """A token bucket: ``rate`` requests per second on average, ``burst`` at once.

    Its two figures (tokens, time of the last take) live in this process, or, after
    :meth:`share`, in memory shared by the server's worker processes (under a lock they
    share), so a limit holds for the server as a whole, whichever process a request
    reaches."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._cells = [self.burst, time.monotonic()]
        self._at = 0  # where this bucket's two figures start in ``_cells``
        self._lock = threading.Lock()

    def share(self, cells, at: int, lock) -> None:
        """Keep the bucket in ``cells[at:at + 2]`` (a ``multiprocessing.Array`` of doubles),
        guarded by ``lock`` (a ``multiprocessing.Lock``)."""
        cells[at], cells[at + 1] = self._cells[self._at], self._cells[self._at + 1]
        self._cells, self._at, self._lock = cells, at, lock

    def take(self) -> float:
        """0 when a request may go now (a token is taken), else the seconds until it may."""
        cells, at = self._cells, self._at
        with self._lock:
            now = time.monotonic()  # CLOCK_MONOTONIC: one clock for all processes
            tokens = min(self.burst, cells[at] + (now - cells[at + 1]) * self.rate)
            cells[at + 1] = now
            if tokens >= 1:
                cells[at] = tokens - 1
                return 0.0
            cells[at] = tokens
            return (1 - tokens) / self.rate


@dataclass
class ApiKey:
    name: str
    digest: bytes  # sha256 of the secret
    scopes: frozenset[str]
    limiter: RateLimiter | None = field(default=None, compare=False)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class KeyRing:
    """The server's keys; :meth:`authorize` decides each request."""

    def __init__(
        self,
        keys: list[ApiKey] | None = None,
        protect_reads: bool = False,
        anonymous_rate: float | None = None,
    ) -> None:
        self.keys = list(keys or [])
        names = [k.name for k in self.keys]
        if len(set(names)) != len(names):
            raise ConfigError(f"API key names must be unique, got {names}.")
        digests = [k.digest for k in self.keys]
        if len(set(digests)) != len(digests):
            raise ConfigError("Two API keys have the same secret; give each its own.")
        self.protect_reads = protect_reads
        self.anonymous = RateLimiter(anonymous_rate) if anonymous_rate else None

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def share(self, context) -> None:
        """Move every rate limit into memory the worker processes started from
        ``context`` (a ``multiprocessing`` context) share; the ring is then passed to them."""
        limiters = [k.limiter for k in self.keys if k.limiter is not None]
        if self.anonymous is not None:
            limiters.append(self.anonymous)
        if not limiters:
            return
        cells = context.Array("d", 2 * len(limiters), lock=False)
        lock = context.Lock()
        for i, limiter in enumerate(limiters):
            limiter.share(cells, 2 * i, lock)

    def describe(self) -> str:
        """For the startup line: whether keys are required, and for what."""
        if not self.keys:
            return "auth off"
        reads = "reads and writes" if self.protect_reads else "writes"
        return f"auth on ({len(self.keys)} key{'s' * (len(self.keys) != 1)}, for {reads})"

    def needs_key(self, scope: str) -> bool:
        """Whether a request of ``scope`` must carry a key (none is needed with no keys)."""
        return self.enabled and (scope != "read" or self.protect_reads)

    def authorize(self, headers: Mapping[bytes, bytes] | None, scope: str) -> str:
        """The name of the key that may make a request of ``scope`` (``anonymous`` when none
        is needed and none was given); raises :class:`AuthError` otherwise."""
        given = (headers or {}).get(HEADER.encode())
        key = None
        if given is not None and self.enabled:
            digest = hashlib.sha256(given).digest()
            for candidate in self.keys:  # compare with every key: no early exit to time
                if hmac.compare_digest(candidate.digest, digest):
                    key = candidate
        if key is None:
            if self.needs_key(scope):
                raise AuthError(401, "missing or wrong X-API-Key header")
            limiter, name = self.anonymous, ANONYMOUS
        else:
            if scope not in key.scopes:
                raise AuthError(403, f"the API key {key.name!r} lacks the {scope!r} scope")
            limiter, name = key.limiter, key.name
        if limiter is not None:
            wait = limiter.take()
            if wait:
                raise AuthError(429, f"rate limit of {name!r} exceeded", retry_after=wait)
        return name


def parse_keys(text: str, source: str) -> list[ApiKey]:
    """Keys from JSON or YAML text: ``{"keys": [...]}`` or the list itself."""
    import yaml

    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid JSON or YAML ({e}).") from e
    if isinstance(data, dict):
        data = data.get("keys")
    if not isinstance(data, list) or not data:
        raise ConfigError(f'{source}: expected a list of keys, or {{"keys": [...]}}.')
    return [_parse_key(entry, f"{source}, key {i + 1}") for i, entry in enumerate(data)]


def _parse_key(entry: object, where: str) -> ApiKey:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object with name, key and scopes.")
    unknown = set(entry) - {"name", "key", "key_sha256", "scopes", "rate_per_second", "burst"}
    if unknown:
        raise ConfigError(f"{where}: unknown fields {sorted(unknown)}.")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: 'name' must be a non-empty string.")
    where = f"{where} ({name})"
    if ("key" in entry) == ("key_sha256" in entry):
        raise ConfigError(f"{where}: give exactly one of 'key' and 'key_sha256'.")
    if "key" in entry:
        secret = entry["key"]
        if not isinstance(secret, str) or len(secret) < 8:
            raise ConfigError(f"{where}: 'key' must be a string of at least 8 characters.")
        digest = _digest(secret)
    else:
        try:
            digest = bytes.fromhex(str(entry["key_sha256"]))
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise ConfigError(f"{where}: 'key_sha256' must be 64 hexadecimal digits.")
    scopes = entry.get("scopes")
    if not isinstance(scopes, list) or not scopes or any(s not in SCOPES for s in scopes):
        raise ConfigError(f"{where}: 'scopes' must be a non-empty list of {list(SCOPES)}.")
    limiter = None
    rate = entry.get("rate_per_second")
    if rate is not None:
        burst = entry.get("burst")
        for label, value in (("rate_per_second", rate), ("burst", burst)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
            ):
                raise ConfigError(f"{where}: {label!r} must be a number > 0.")
        limiter = RateLimiter(float(rate), None if burst is None else float(burst))
    return ApiKey(name.strip(), digest, frozenset(scopes), limiter)


def load_key_ring(
    api_key: str | None = None,
    keys_file: str | Path | None = None,
    protect_reads: bool = False,
    anonymous_rate: float | None = None,
    environ: Mapping[str, str] = os.environ,
) -> KeyRing:
    """The keys of ``--api-key`` (or ``LSR_API_KEY``), ``--api-keys FILE`` and
    ``LSR_API_KEYS``, together."""
    keys: list[ApiKey] = []
    single = api_key or environ.get("LSR_API_KEY") or None
    if single is not None:
        keys.append(ApiKey("default", _digest(single), frozenset(SCOPES)))
    if keys_file is not None:
        path = Path(keys_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"--api-keys {path}: cannot read it ({e.strerror}).") from e
        keys += parse_keys(text, str(path))
    if environ.get("LSR_API_KEYS"):
        keys += parse_keys(environ["LSR_API_KEYS"], "$LSR_API_KEYS")
    if protect_reads and not keys:
        raise ConfigError("--protect-reads needs an API key (--api-key or --api-keys).")
    return KeyRing(keys, protect_reads, anonymous_rate)
