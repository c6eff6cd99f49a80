"""The files beside the one being scanned, as the folder-level checks see them.

An ONNX model names its external data files and a tensor-bundle index its data shards;
both are checked in the folder the model sits in, without opening or following
anything. That folder is the disk for :func:`bastion.scanning.scan`, and a virtual
folder for :func:`bastion.scanning.scan_tree` (a hub's stored files, never written out).
The readers ask only these two questions, so both kinds of folder answer them alike.
"""

from __future__ import annotations

import os
from typing import Final, Protocol

__all__ = ["DISK", "DiskNeighbours", "Neighbours", "lexists"]


class Neighbours(Protocol):
    """What the folder-level checks may ask about a path beside the scanned file."""

    def lstat(self, path: str) -> os.stat_result:
        """As :func:`os.lstat`: never follows a link; raises ``FileNotFoundError``,
        ``NotADirectoryError`` or another ``OSError`` (with ``strerror`` set)."""
        ...

    def realpath(self, path: str) -> str:
        """As :func:`os.path.realpath`: the path that names the same file in every
        check of one scan, so that a file claimed by one is recognised by another."""
        ...


class DiskNeighbours:
    """The real file system."""

    def lstat(self, path: str) -> os.stat_result:
        return os.lstat(path)

    def realpath(self, path: str) -> str:
        return os.path.realpath(path)


DISK: Final = DiskNeighbours()


def lexists(neighbours: Neighbours, path: str) -> bool:
    """As :func:`os.path.lexists`: whether ``path`` names anything, a broken link included."""
    try:
        neighbours.lstat(path)
    except (OSError, ValueError):
        return False
    return True
