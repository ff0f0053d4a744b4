"""Errors raised by lsr's entry points; each message says what was wrong and what to do."""


class CorpusError(ValueError):
    """A corpus, query or qrels file is missing or malformed."""


class EncoderError(ValueError):
    """An encoder cannot be loaded or used as asked (unknown name, not fitted, bad folder)."""
