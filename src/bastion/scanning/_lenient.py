"""Reading escapes as the loaders read them, whatever the host's warning filters say.

Python's own decoders only *warn* about an invalid escape such as ``\\C`` in a
quoted string (``unicode_escape``, ``codecs.escape_decode``, ``ast.literal_eval``),
and the loaders that use them (``pickle``, ``numpy.load``) go on. A scanner that let
that warning become an exception, as ``python -W error`` or a test suite does,
would judge the same file differently from one host to the next; it reads such
input as the loader does instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["as_loaders_read"]


@contextmanager
def as_loaders_read() -> Iterator[None]:
    """Silence the invalid-escape warnings of Python's decoders inside the block."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", SyntaxWarning)
        yield
