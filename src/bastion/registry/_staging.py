"""The staging folder: the only place the hub writes plaintext, for the admission scan.

At commit, each stored blob of the upload is decrypted into
``staging/<upload id>/`` (mode 0700) and the folder is scanned. Names are checked
again, folders are created one part at a time and never followed through a link,
and files are created exclusively (mode 0600). The folder is removed when the
commit ends, whatever happened, and when an upload is aborted or expires or the
hub restarts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bastion.errors import InputError
from bastion.registry._names import check_file_path

__all__ = ["create_staged_file", "remove_staging", "staging_root"]


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


def remove_staging(staging: Path, upload_id: str) -> None:
    shutil.rmtree(staging_root(staging, upload_id), ignore_errors=True)
