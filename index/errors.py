"""Errors the index raises at its entry points; each message says what was wrong and what to do.

They are kinds of :mod:`lsr.errors`' project errors (input, format), so front ends catch them
with everything else lsr raises on purpose.
"""

from __future__ import annotations

import errno

from lsr.errors import FormatError, InputError, LSRError


class IndexFormatError(FormatError):
    """An index directory is missing, corrupt, truncated or of an unknown format version."""


class VocabularyMismatchError(InputError):
    """Query vectors were encoded with a vocabulary other than the index's."""


class InvalidDocumentIdError(InputError):
    """A document id is empty, too long, not valid UTF-8 or contains control characters."""


class EmptyDocumentError(InputError):
    """A document to add has an empty vector: no term of it is indexable, so no query could
    ever find it (the REST API answers 422 and names the unknown words)."""


class CollectionLockedError(LSRError, OSError):
    """Another writer (a process or an open ``LiveIndex``) holds the collection's lock."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EAGAIN, message)

    def __str__(self) -> str:
        return self.strerror


class ReadOnlyError(LSRError, PermissionError):
    """A write was attempted on a collection opened read-only."""


class WriteUnavailableError(LSRError, OSError):
    """The collection cannot take writes for now (disk full, I/O error); nothing was written.

    ``retry_after`` is the number of seconds after which a retry may succeed; the previous
    state (base index and write-ahead log) is intact and reads keep working.
    """

    def __init__(self, code: int, message: str, retry_after: float) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.strerror


class ShardsUnavailableError(LSRError, OSError):
    """Shards of a cluster did not answer (dead, restarting or too slow); ``missing`` names
    them. A search may ask for the other shards' hits instead (``allow_partial``)."""

    def __init__(self, missing: list[str], reasons: dict | None = None) -> None:
        self.missing = list(missing)
        self.reasons = dict(reasons or {})
        self.retry_after = 1.0
        detail = "; ".join(str(r) for r in self.reasons.values() if r)
        several = len(missing) != 1
        super().__init__(
            f"shard{'s' * several} {', '.join(missing)} of the cluster "
            f"{'are' if several else 'is'} unavailable{f' ({detail})' if detail else ''}; "
            "retry shortly, or search with allow_partial=true for the other shards' hits"
        )

    def __reduce__(self):
        return (type(self), (self.missing, self.reasons))
