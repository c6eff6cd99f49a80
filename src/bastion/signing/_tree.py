"""Walking a model folder: which files make up a model, under which names.

A model is a folder (or a single file). Its files are named by their path
relative to the model root, with ``/`` separators. The walk refuses what cannot
be signed safely: names that are not UTF-8, special files, and symbolic links
(unless allowed, and then only links to regular files inside the model root).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from bastion.errors import ModelTreeError, PathNotFoundError

__all__ = ["GIT_PATHS", "SINGLE_FILE_NAME", "ModelFile", "is_ignored", "walk_model"]

#: Paths ignored by default at the model root, as by the reference tool.
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")

#: The resource name the reference gives the only file of a single-file model.
SINGLE_FILE_NAME = "."


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One regular file of a model."""

    name: str
    """Path relative to the model root, ``/``-separated."""
    path: str
    """Where to read it: the file itself, or a symlink's target inside the root."""
    size: int
    device: int
    inode: int
    mtime_ns: int
    ctime_ns: int
    via_symlink: bool = False

    @classmethod
    def from_stat(cls, name: str, path: str, st: os.stat_result, *, via_symlink: bool) -> ModelFile:
        return cls(
            name=name,
            path=path,
            size=st.st_size,
            device=st.st_dev,
            inode=st.st_ino,
            mtime_ns=st.st_mtime_ns,
            ctime_ns=st.st_ctime_ns,
            via_symlink=via_symlink,
        )


def is_ignored(name: str, ignore_paths: Iterable[str]) -> bool:
    """Whether ``name`` is one of ``ignore_paths`` or lies below one of them."""
    return any(name == p or name.startswith(p + "/") for p in ignore_paths)


def _utf8_name(raw: str, parent: str) -> str:
    try:
        os.fsencode(raw).decode("utf-8")
    except UnicodeDecodeError:
        shown = os.fsencode(raw).decode("utf-8", "backslashreplace")
        where = f"{parent}/{shown}" if parent else shown
        raise ModelTreeError(
            f"file name {where!r} is not valid UTF-8; rename it or add it to the ignore paths"
        ) from None
    return raw


def walk_model(
    root: str | os.PathLike[str],
    *,
    ignore_paths: Iterable[str] = (),
    allow_symlinks: bool = False,
) -> list[ModelFile]:
    """Every file of the model at ``root`` that is not ignored, in no particular order.

    Raises :class:`ModelTreeError` for a symlink that is not allowed, a symlink
    leading outside the model root or to something other than a regular file,
    a special file, or a name that is not UTF-8.
    """
    root_path = os.fspath(root)
    try:
        root_st = os.stat(root_path)
    except FileNotFoundError:
        raise PathNotFoundError(f"model path {root_path!r} does not exist") from None
    except OSError as exc:
        raise ModelTreeError(f"cannot read model path {root_path!r}: {exc.strerror}") from exc
    if stat.S_ISREG(root_st.st_mode):
        if os.path.islink(root_path) and not allow_symlinks:
            raise ModelTreeError(
                f"model path {root_path!r} is a symlink; pass the file it points to"
            )
        return [
            ModelFile.from_stat(
                SINGLE_FILE_NAME, os.path.realpath(root_path), root_st, via_symlink=False
            )
        ]
    if not stat.S_ISDIR(root_st.st_mode):
        raise ModelTreeError(f"model path {root_path!r} is neither a file nor a folder")

    ignored = tuple(ignore_paths)
    real_root = os.path.realpath(root_path)
    files: list[ModelFile] = []
    pending = [("", root_path)]
    while pending:
        prefix, folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise ModelTreeError(f"cannot list folder {folder!r}: {exc.strerror}") from exc
        for entry in entries:
            name = prefix + _utf8_name(entry.name, prefix.rstrip("/"))
            if is_ignored(name, ignored):
                continue
            if entry.is_symlink():
                files.append(_follow_symlink(name, entry.path, real_root, allow_symlinks))
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                pending.append((name + "/", entry.path))
            elif stat.S_ISREG(st.st_mode):
                files.append(ModelFile.from_stat(name, entry.path, st, via_symlink=False))
            else:
                raise ModelTreeError(
                    f"{name!r} is a special file (socket, pipe or device); "
                    "remove it or add it to the ignore paths"
                )
    return files


def _follow_symlink(name: str, link: str, real_root: str, allow: bool) -> ModelFile:
    if not allow:
        raise ModelTreeError(
            f"{name!r} is a symbolic link; symlinks are refused unless allowed "
            "(--allow-symlinks), and even then must point to a file inside the model"
        )
    target = os.path.realpath(link)
    if os.path.commonpath([real_root, target]) != real_root:
        raise ModelTreeError(f"symbolic link {name!r} points outside the model folder")
    try:
        st = os.stat(target)
    except OSError:
        raise ModelTreeError(f"symbolic link {name!r} is broken") from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelTreeError(f"symbolic link {name!r} does not point to a regular file")
    return ModelFile.from_stat(name, target, st, via_symlink=True)
