"""Reading and atomically writing files that hold secrets (keyrings, TLS private keys).

A secret file must be a regular file that neither group nor others may access
(mode 0600 or stricter); anything else is refused before it is read, with a
message that says to ``chmod 600``. Writing goes through a temporary file created
with ``O_CREAT | O_EXCL`` and the final mode, written, fsynced, then moved into
place (``rename``; or a hard link when an existing file must not be replaced),
and the directory is fsynced: a crash leaves the old file or the new one, never
half of one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

from bastion._files import read_input
from bastion.errors import BastionError

__all__ = ["read_private_file", "write_file_atomically"]

_OPEN_TEMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW


def read_private_file(path: Path, what: str, *, limit: int, error: type[BastionError]) -> bytes:
    """The bytes of ``path``: a regular file of at most ``limit`` bytes, mode 0600 or stricter."""
    return read_input(path, what, limit=limit, private=True, error=error)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_no_replace(temp: Path, path: Path) -> None:
    try:
        os.link(temp, path)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # A file system without hard links: check, then rename (not atomic against a racer).
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from exc
        os.replace(temp, path)


def write_file_atomically(
    path: Path,
    data: bytes,
    *,
    mode: int,
    replace: bool,
    what: str,
    error: type[BastionError],
) -> None:
    """Write ``data`` to ``path`` with ``mode``, all at once; ``replace=False`` refuses an
    existing file."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(temp, _OPEN_TEMP, mode)
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(temp, path)
        else:
            _link_no_replace(temp, path)
        _fsync_directory(path.parent)
    except FileExistsError:
        raise error(f"{what} {str(path)!r} exists already; refusing to overwrite it") from None
    except OSError as exc:
        raise error(f"cannot write {what} {str(path)!r}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(OSError):
            temp.unlink()
