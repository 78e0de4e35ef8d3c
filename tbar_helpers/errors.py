"""Expected failures. Each message names the problem and the fix; the ``tbar`` CLI prints them as one line
and exits with code 2. Anything else that escapes is a bug and keeps its traceback."""
from __future__ import annotations


class TbarError(Exception):
    """A failure the user can fix: bad input, a damaged file, a missing artefact."""


class InputError(TbarError, ValueError):
    """An argument, file or folder the user gave is unusable."""


class UnsafeFileError(InputError):
    """A model file holds pickled Python objects; loading it could run code from it."""


class CacheCorruptedError(TbarError, RuntimeError):
    """A file does not match its recorded hash or cannot be read."""


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (library messages sometimes span several)."""
    return " ".join(str(exc).split()) or exc.__class__.__name__
