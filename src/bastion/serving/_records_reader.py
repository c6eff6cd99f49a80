"""Reading the inference records back (export, SIEM): day files in order, filtered, checked."""

from __future__ import annotations

import calendar
import json
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from bastion.errors import (
    InputError,
    PathNotFoundError,
)
from bastion.serving._records import _DAY, _FILE_NAME, MAX_LINE, RECORD_FORMAT, RECORD_TYPE

__all__ = ["read_records"]

logger = logging.getLogger(__name__)


def read_records(
    directory: Path,
    *,
    since: float | None = None,
    until: float | None = None,
    deployment: str | None = None,
) -> Iterator[dict[str, object]]:
    """The records in ``directory``, oldest day first, with ``since <= ts < until``.

    A torn last line (a write cut short) is skipped with a warning; any other line that is
    not a format-1 inference record raises InputError naming the file and line.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise PathNotFoundError(
            f"no inference records folder at {directory}; give the server's records folder"
        )
    try:
        names = sorted(entry.name for entry in os.scandir(directory))
    except OSError as exc:
        raise InputError(f"cannot list {directory}: {exc.strerror or exc}") from exc
    paths = []
    for name in names:
        match = _FILE_NAME.match(name)
        if match is None:
            continue
        try:
            start = calendar.timegm((*map(int, match.groups()), 0, 0, 0))
        except ValueError:  # a name like records-2024-13-45.jsonl is not ours
            continue
        if (since is None or start + _DAY > since) and (until is None or start < until):
            paths.append(directory / name)
    return _iterate(paths, since, until, deployment)


def _iterate(
    paths: list[Path], since: float | None, until: float | None, deployment: str | None
) -> Iterator[dict[str, object]]:
    for path in paths:
        for ts, item in _read_file(path):
            in_range = (since is None or ts >= since) and (until is None or ts < until)
            if in_range and (deployment is None or item.get("deployment") == deployment):
                yield item


def _read_file(path: Path) -> Iterator[tuple[float, dict[str, object]]]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        number = 0
        while raw := _read_line(handle, path):
            number += 1
            where = f"{path} line {number}"
            complete = raw.endswith(b"\n")
            if not complete and len(raw) > MAX_LINE:
                raise InputError(f"{where} is over {MAX_LINE} bytes; not an inference record")
            try:
                item = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                if not complete:
                    logger.warning("%s: skipped a torn last line (a write cut short)", where)
                    return
                raise InputError(f"{where} is not JSON; remove or repair that line") from exc
            yield _check_record(item, where)


def _read_line(handle: BinaryIO, path: Path) -> bytes:
    try:
        line: bytes = handle.readline(MAX_LINE + 1)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return line


def _check_record(item: object, where: str) -> tuple[float, dict[str, object]]:
    if not isinstance(item, dict) or item.get("type") != RECORD_TYPE:
        raise InputError(f"{where} is not a JSON object of type {RECORD_TYPE!r}")
    if type(item.get("format")) is not int or item["format"] != RECORD_FORMAT:
        raise InputError(
            f"{where} has record format {item.get('format')!r}; this Bastion reads format "
            f"{RECORD_FORMAT}: use the Bastion version that wrote it"
        )
    ts = item.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, float | int) or not math.isfinite(ts):
        raise InputError(f"{where} has no valid 'ts' (unix seconds)")
    return ts, item
