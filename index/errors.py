"""Errors the index raises at its entry points; each message says what was wrong and what to do."""


class IndexFormatError(ValueError):
    """An index directory is missing, corrupt, truncated or of an unknown format version."""


class VocabularyMismatchError(ValueError):
    """Query vectors were encoded with a vocabulary other than the index's."""
