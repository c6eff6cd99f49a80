"""Scanning a model file or folder: walk it, read every file by content, never run it.

The walk does not follow symbolic links (each one is a finding) and reports
special files instead of opening them. Whatever goes wrong while parsing one
file becomes a ``scan.incomplete`` finding for that file, and the scan goes on.
A file that an ONNX model in the same scan reads as raw external data, or a
tensor-bundle data shard that the ``.index`` beside it declares, and that has no
recognisable format of its own, is reported as scanned raw data rather than as an
unknown format.
"""

from __future__ import annotations

import functools
import logging
import os
import stat
from collections.abc import Callable, Iterator
from typing import BinaryIO

from bastion.errors import InputError, PathNotFoundError
from bastion.scanning._context import ScanContext
from bastion.scanning._dispatch import dispatch
from bastion.scanning._limits import Limits
from bastion.scanning._neighbours import DISK, Neighbours
from bastion.scanning._report import Finding, Scanned, ScanReport, Severity

__all__ = ["Opener", "claim_raw_files", "scan", "scan_file"]

logger = logging.getLogger(__name__)

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def scan(
    path: str | os.PathLike[str],
    *,
    limits: Limits = Limits(),  # noqa: B008
    include_git: bool = False,
) -> ScanReport:
    """Statically scan the model file or folder at ``path``; nothing in it is executed.

    A ``.git`` folder at the top of ``path`` is version-control metadata that no
    model loader reads; it is left out (an INFO finding says so) unless
    ``include_git`` is set.

    Paths in the report are relative to ``path`` (a single file is named by its
    base name). Raises :class:`PathNotFoundError` if ``path`` does not exist.
    """
    root = os.fspath(path)
    try:
        root_st = os.stat(root)
    except FileNotFoundError:
        raise PathNotFoundError(f"path {root!r} does not exist") from None
    except OSError as exc:
        raise InputError(f"cannot read {root!r}: {exc.strerror}") from exc
    report = ScanReport(root=root)
    if stat.S_ISDIR(root_st.st_mode):
        entries = iter(sorted(_walk(root, report, include_git)))
    else:
        entries = iter([(_shown(os.path.basename(os.path.abspath(root))), root, 0)])
    on_disk: dict[str, str] = {}
    raw_files: dict[str, str] = {}
    for name, fs_path, flags in entries:
        on_disk[name] = fs_path
        raw_files.update(_scan_file(report, name, fs_path, flags, limits))
    if raw_files:
        claim_raw_files(report, on_disk, raw_files, DISK)
    return report


def claim_raw_files(
    report: ScanReport,
    on_disk: dict[str, str],
    raw_files: dict[str, str],
    neighbours: Neighbours,
) -> None:
    """Turn "unrecognised format" into "scanned as raw data" (``raw_files`` maps real
    paths to formats) for the files that some model of this scan reads as raw tensor
    bytes (ONNX external data, tensor-bundle shards; already checked there).
    ``on_disk`` maps shown names to their paths among ``neighbours``."""
    unknown = {
        f.path for f in report.findings if f.rule_id == "scan.unknown-format" and f.member is None
    }
    claimed = {
        name
        for name in unknown
        if name in on_disk and neighbours.realpath(on_disk[name]) in raw_files
    }
    if not claimed:
        return
    report.findings[:] = [
        f
        for f in report.findings
        if not (f.rule_id == "scan.unknown-format" and f.member is None and f.path in claimed)
    ]
    report.scanned.extend(
        Scanned(path=name, format=raw_files[neighbours.realpath(on_disk[name])])
        for name in sorted(claimed)
    )


def _walk(root: str, report: ScanReport, include_git: bool) -> Iterator[tuple[str, str, int]]:
    """(shown name, path, extra open flags) of every regular file below ``root``."""
    pending = [("", root)]
    while pending:
        prefix, folder = pending.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            _add(
                report,
                "scan.incomplete",
                Severity.MEDIUM,
                prefix.rstrip("/") or ".",
                f"cannot list folder ({exc.strerror}); not scanned",
            )
            continue
        for entry in reversed(entries):
            name = prefix + _shown(entry.name)
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                _add(
                    report,
                    "scan.incomplete",
                    Severity.MEDIUM,
                    name,
                    f"cannot stat ({exc.strerror}); not scanned",
                )
                continue
            if stat.S_ISLNK(st.st_mode):
                _add(
                    report,
                    "scan.symlink",
                    Severity.MEDIUM,
                    name,
                    f"symbolic link to {_shown(os.readlink(entry.path))!r}; not followed, "
                    "so what it points to was not scanned",
                )
            elif stat.S_ISDIR(st.st_mode):
                if name == ".git" and not include_git:
                    _add(
                        report,
                        "scan.skipped",
                        Severity.INFO,
                        name,
                        "version-control metadata, which model loaders do not read; "
                        "not scanned (--include-git scans it)",
                    )
                    continue
                pending.append((name + "/", entry.path))
            elif stat.S_ISREG(st.st_mode):
                yield name, entry.path, _NOFOLLOW
            else:
                _add(
                    report,
                    "scan.special-file",
                    Severity.MEDIUM,
                    name,
                    "special file (device, FIFO or socket); not read",
                )


#: Opens the file that a context is for; or records on it why not, and returns ``None``.
Opener = Callable[[ScanContext], BinaryIO | None]


def scan_file(
    report: ScanReport,
    name: str,
    opener: Opener,
    *,
    fs_path: str,
    neighbours: Neighbours,
    limits: Limits,
) -> dict[str, str]:
    """Scan one file of a folder into ``report``, by content; returns the raw data files
    it was found to read (real path among ``neighbours`` -> the format to list them as).

    The one step that a disk folder and a virtual tree share: only opening differs.
    """
    logger.debug("scanning %s", name)
    ctx = ScanContext(
        path=name, limits=limits, dispatch=dispatch, fs_path=fs_path, neighbours=neighbours
    )
    stream = opener(ctx)
    if stream is not None:
        with stream:
            ctx.nested(stream, None, 0)
    report.findings.extend(ctx.findings)
    report.scanned.extend(ctx.scanned)
    return {**dict.fromkeys(ctx.raw_files, "onnx-external-data"), **ctx.raw_data}


def _scan_file(
    report: ScanReport, name: str, fs_path: str, flags: int, limits: Limits
) -> dict[str, str]:
    opener = functools.partial(_open_on_disk, fs_path, flags)
    return scan_file(report, name, opener, fs_path=fs_path, neighbours=DISK, limits=limits)


def _open_on_disk(fs_path: str, flags: int, ctx: ScanContext) -> BinaryIO | None:
    try:
        fd = os.open(fs_path, os.O_RDONLY | os.O_CLOEXEC | _NONBLOCK | flags)
    except OSError as exc:
        ctx.incomplete(f"cannot open ({exc.strerror}); not scanned", format="unknown", member=None)
        return None
    # Checked before wrapping: fdopen itself raises on a folder swapped in after the walk.
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        ctx.add(
            "scan.special-file",
            Severity.MEDIUM,
            "not a regular file; not read",
            format="file",
            member=None,
        )
        return None
    return os.fdopen(fd, "rb")


def _add(report: ScanReport, rule: str, severity: Severity, path: str, message: str) -> None:
    report.findings.append(
        Finding(rule_id=rule, severity=severity, message=message, path=path, format="file")
    )


def _shown(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 are shown escaped."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")
