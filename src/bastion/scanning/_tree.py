"""Scanning a folder that is not on disk: a hub's stored files, read in place.

The hub keeps each file of a model version as an encrypted blob. Rather than decrypt
them all into a staging folder, it hands :func:`scan_tree` a :class:`Tree` whose
``open`` returns a seekable decrypting stream per file. Every file is scanned as
:func:`bastion.scanning.scan` scans a folder on disk, with the same findings and the
same names; only what cannot exist in a tree differs. A tree has no links, special
files or empty folders, and its ``.git/`` is scanned like anything else: what a hub
stores is what it serves, so nothing in it is left out as mere metadata.

The folder-level checks (ONNX external data, tensor-bundle shards) ask the tree's
file list instead of the disk: each file sits at the virtual path ``"/" + name``,
which no reader opens and no finding shows.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from collections.abc import Mapping
from typing import BinaryIO, Protocol

from bastion.errors import IntegrityError, ModelTreeError
from bastion.scanning._context import ScanContext
from bastion.scanning._limits import Limits
from bastion.scanning._report import ScanReport
from bastion.scanning._scan import claim_raw_files, scan_file

__all__ = ["Tree", "scan_tree"]

logger = logging.getLogger(__name__)

_ROOT = "/"
_FILE_MODE = stat.S_IFREG | 0o444
_FOLDER_MODE = stat.S_IFDIR | 0o555


class Tree(Protocol):
    """A read-only folder of regular files that is not on disk as such."""

    def files(self) -> Mapping[str, int]:
        """Every file: its ``/``-separated name relative to the tree -> its size in bytes."""
        ...

    def open(self, name: str) -> BinaryIO:
        """A new seekable stream over the file ``name``, at offset 0.

        May raise ``OSError`` or :class:`~bastion.errors.IntegrityError` (a blob that
        fails its check): that file is then reported as not scanned, and the scan goes on.
        """
        ...


def scan_tree(tree: Tree, *, limits: Limits = Limits()) -> ScanReport:  # noqa: B008
    """Statically scan every file of ``tree`` (in name order); nothing in it is executed.

    The report is what :func:`bastion.scanning.scan` gives for the same files in a
    folder on disk, with names relative to the tree and ``root`` ``"."``, except that a
    top-level ``.git/`` is scanned too. Raises :class:`ModelTreeError` (before scanning
    anything) if a name is not a clean relative path, or names both a file and a folder.
    """
    files = _checked(tree.files())
    neighbours = _TreeNeighbours(files)
    report = ScanReport(root=".")
    on_disk: dict[str, str] = {}
    raw_files: dict[str, str] = {}
    for name in sorted(files):
        fs_path = _ROOT + name
        on_disk[name] = fs_path
        opener = functools.partial(_open_in_tree, tree, name)
        raw_files.update(
            scan_file(report, name, opener, fs_path=fs_path, neighbours=neighbours, limits=limits)
        )
    if raw_files:
        claim_raw_files(report, on_disk, raw_files, neighbours)
    return report


def _open_in_tree(tree: Tree, name: str, ctx: ScanContext) -> BinaryIO | None:
    try:
        return tree.open(name)
    except IntegrityError as exc:
        # The reason stays in the log: a report may reach whoever uploaded the file.
        logger.warning("stored file %r failed its integrity check: %s", name, exc)
        reason = "integrity check failed"
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    ctx.incomplete(f"cannot open ({reason}); not scanned", format="unknown", member=None)
    return None


def _checked(files: Mapping[str, int]) -> dict[str, int]:
    """``files`` as a dict, once every name and size is one a folder on disk could hold."""
    checked: dict[str, int] = {}
    for name, size in files.items():
        if not isinstance(name, str):
            raise ModelTreeError(f"tree file name {name!r} is not a string")
        why = _unclean(name)
        if why is not None:
            raise ModelTreeError(
                f"tree file name {name[:200]!r} {why}; use a relative path of "
                "'/'-separated names without '.' or '..'"
            )
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ModelTreeError(f"tree file {name[:200]!r} has size {size!r}, not a byte count")
        checked[name] = size
    for name in checked:
        folder, _, _ = name.rpartition("/")
        while folder:
            if folder in checked:
                raise ModelTreeError(
                    f"tree names {folder[:200]!r} both as a file and as the folder of "
                    f"{name[:200]!r}; a folder cannot hold both"
                )
            folder, _, _ = folder.rpartition("/")
    return checked


def _unclean(name: str) -> str | None:
    """Why ``name`` is not a clean relative path, or ``None`` if it is."""
    if "\\" in name or "\x00" in name:
        return "holds a backslash or a NUL"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate)"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "is empty, absolute, or has an empty, '.' or '..' part"
    return None


class _TreeNeighbours:
    """The tree's files as a folder at ``/``: each name a regular file with one link,
    each proper prefix of a name a folder, nothing else (no links, so a real path is
    just the normalised path)."""

    def __init__(self, files: Mapping[str, int]) -> None:
        self._files = files
        self._folders = {""}
        for name in files:
            parts = name.split("/")
            self._folders.update("/".join(parts[:i]) for i in range(1, len(parts)))

    def lstat(self, path: str) -> os.stat_result:
        at: list[str] = []
        for index, part in enumerate(path.split("/")):
            if index and "/".join(at) not in self._folders:  # a "/" after a non-folder
                raise self._missing(at, path)
            if part == "..":
                at = at[:-1]
            elif part not in ("", "."):
                at.append(part)
        name = "/".join(at)
        if name in self._folders:
            return os.stat_result((_FOLDER_MODE, 0, 0, 2, 0, 0, 0, 0, 0, 0))
        if name in self._files:
            return os.stat_result((_FILE_MODE, 0, 0, 1, 0, 0, self._files[name], 0, 0, 0))
        raise self._missing(at, path)

    def realpath(self, path: str) -> str:
        at: list[str] = []
        for part in path.split("/"):
            if part == "..":
                at = at[:-1]
            elif part not in ("", "."):
                at.append(part)
        return _ROOT + "/".join(at)

    def _missing(self, at: list[str], path: str) -> OSError:
        """What ``os.lstat`` raises when ``at`` (reached on the way to ``path``) is not
        a folder: a file there makes the rest of the path ``ENOTDIR``."""
        if "/".join(at) in self._files:
            return NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
