"""Reading the small files users name (keys, certificates, bundles, policies), safely.

One reader for all of them: a missing file is ``PathNotFoundError``; anything
but a regular file (a FIFO, ``/dev/zero``) and anything over the caller's size
limit is refused before it is read, so no input can exhaust memory or hang. Files
that hold secrets (keyrings, private keys) must also be closed to group and others.
"""

from __future__ import annotations

import os
import stat

from bastion.errors import BastionError, InputError, PathNotFoundError

__all__ = ["others_may_read", "read_input"]


def others_may_read(path: str | os.PathLike[str], what: str, mode: int) -> str | None:
    """What is wrong with a file holding a secret whose ``mode`` lets group or others in;
    None when it does not."""
    if not mode & 0o077:
        return None
    return (
        f"{what} {os.fspath(path)!r} is accessible to group or others (mode "
        f"{stat.S_IMODE(mode):04o}); run `chmod 600 {os.fspath(path)}` and check who read it"
    )


def read_input(
    path: str | os.PathLike[str],
    what: str,
    *,
    limit: int,
    private: bool = False,
    error: type[BastionError] = InputError,
) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``limit`` bytes.

    With ``private``, the file holds a secret: group and others must have no access
    (mode 0600 or stricter). Failures raise ``error`` (a missing file is
    :class:`PathNotFoundError` when ``error`` is the default :class:`InputError`).
    """
    shown = repr(os.fspath(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        missing = PathNotFoundError if error is InputError else error
        raise missing(f"{what} {shown} does not exist") from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "the path is not valid"
        raise error(f"cannot read {what} {shown}: {reason}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {shown} is not a regular file; point to the file itself")
        if private and (problem := others_may_read(path, what, st.st_mode)):
            raise error(problem)
        if st.st_size > limit:
            raise error(f"{what} {shown} is too large ({st.st_size} bytes; at most {limit})")
        chunks = []
        remaining = limit + 1
        while remaining > 0 and (chunk := os.read(fd, min(remaining, 1 << 20))):
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as exc:
        raise error(f"cannot read {what} {shown}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise error(f"{what} {shown} is too large (at most {limit} bytes)")
    return data
