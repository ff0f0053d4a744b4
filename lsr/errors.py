"""The project's error types, shared by every layer (this module imports nothing of ours).

Every error raised on purpose at an entry point is an :class:`LSRError`, of one of three
kinds, so front ends can tell a user's mistake from a bug:

- :class:`InputError`: a value, file or request the caller gave is invalid;
- :class:`ConfigError`: a model folder, encoder spec or training config cannot be used;
- :class:`FormatError`: a file on disk is corrupt, truncated or of an unknown version.

They subclass ``ValueError`` (and the OS errors ``OSError``), so existing ``except ValueError``
code keeps working; the CLI and the REST app catch ``LSRError`` only and let anything else
surface as the bug it is. Each message says what was wrong and what to do.
"""


class LSRError(Exception):
    """Base of every error lsr raises on purpose."""


class InputError(LSRError, ValueError):
    """A value, file or request given by the caller is invalid."""


class ConfigError(LSRError, ValueError):
    """A model folder, encoder spec or training config cannot be used as given."""


class FormatError(LSRError, ValueError):
    """A file on disk is corrupt, truncated or of an unknown format version."""


class CorpusError(InputError):
    """A corpus, query or qrels file is missing or malformed."""


class EncoderError(ConfigError):
    """An encoder cannot be loaded or used as asked (unknown name, not fitted, bad folder)."""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type (a list where sparse vectors are expected, say)."""
