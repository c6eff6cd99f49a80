"""The staging folder: the only place the hub writes plaintext, for the admission scan.

Each upload has ``staging/<upload id>/`` (mode 0700). A file arriving is written
there as well as encrypted into the blob store, from the same bytes, so that the
commit scans exactly what was stored without decrypting it again. Names are
checked again, folders are created one part at a time and never followed through
a link, and files are created exclusively. The folder is removed when the upload
is committed, aborted, expires, or the hub restarts.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from bastion.errors import InputError
from bastion.registry._names import check_file_path

__all__ = ["create_staged_file", "remove_staging", "staged_size", "staging_root"]


def staging_root(staging: Path, upload_id: str) -> Path:
    return staging / upload_id


def create_staged_file(root: Path, path: str) -> int:
    """A new file descriptor for ``root/path`` (mode 0600), replacing an earlier attempt."""
    parts = check_file_path(path).split("/")
    root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder = root
    for part in [None, *parts[:-1]]:
        folder = folder if part is None else folder / part
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            if folder.is_symlink() or not folder.is_dir():
                raise InputError(
                    f"{path!r} collides with another file of this version (a file and a "
                    "folder of the same name)"
                ) from None
    target = folder / parts[-1]
    if target.is_symlink() or target.exists():
        if not target.is_file() or target.is_symlink():
            raise InputError(f"{path!r} collides with a folder of this version")
        target.unlink()  # an earlier, interrupted attempt at the same file
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(target, flags, 0o600)


def staged_size(root: Path, path: str) -> int | None:
    """The size of a completely staged regular file, or None."""
    target = root / check_file_path(path)
    try:
        st = target.lstat()
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def remove_staging(staging: Path, upload_id: str) -> None:
    shutil.rmtree(staging_root(staging, upload_id), ignore_errors=True)
