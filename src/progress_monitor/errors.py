"""The two kinds of pipeline failure: raise to be redelivered, or dead-letter with a reason."""

from __future__ import annotations


class TransientError(RuntimeError):
    """Worth retrying: the event is redelivered with backoff (raise it out of the function)."""


class PermanentError(ValueError):
    """Retrying cannot help (bad message, bad configuration): log, dead-letter, acknowledge."""
