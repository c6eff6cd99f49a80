"""Reading the small files users name (keys, certificates, bundles, policies), safely.

One reader for all of them: a missing file is ``PathNotFoundError``; anything
but a regular file (a FIFO, ``/dev/zero``) and anything over the caller's size
limit is refused before it is read, so no input can exhaust memory or hang.
"""

from __future__ import annotations

import os
import stat

from bastion.errors import InputError, PathNotFoundError

__all__ = ["read_input"]


def read_input(path: str | os.PathLike[str], what: str, *, limit: int) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``limit`` bytes."""
    shown = repr(os.fspath(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise PathNotFoundError(f"{what} {shown} does not exist") from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "the path is not valid"
        raise InputError(f"cannot read {what} {shown}: {reason}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{what} {shown} is not a regular file")
        if st.st_size > limit:
            raise InputError(f"{what} {shown} is too large ({st.st_size} bytes; at most {limit})")
        chunks = []
        remaining = limit + 1
        while remaining > 0 and (chunk := os.read(fd, min(remaining, 1 << 20))):
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as exc:
        raise InputError(f"cannot read {what} {shown}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise InputError(f"{what} {shown} is too large (at most {limit} bytes)")
    return data
