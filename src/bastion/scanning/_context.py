"""The state of scanning one file: where findings go, and what is left of the budget.

Container readers do not import the dispatcher (it imports them); they call
:meth:`ScanContext.nested` to scan a member, which routes it by content.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from bastion.scanning._limits import Limits
from bastion.scanning._neighbours import DISK, Neighbours
from bastion.scanning._report import Finding, Scanned, Severity

__all__ = ["Dispatch", "ScanContext", "describe_error", "join_member"]

#: Scans one stream by its content: (context, stream, member, depth).
Dispatch = Callable[["ScanContext", BinaryIO, "str | None", int], None]


def join_member(parent: str | None, name: str) -> str:
    """The member name of ``name`` inside ``parent`` (``/``-joined through nesting)."""
    return name if parent is None else f"{parent}/{name}"


@dataclass
class ScanContext:
    """Findings and budgets for one file (``path`` is relative to the scan root)."""

    path: str
    limits: Limits
    dispatch: Dispatch
    findings: list[Finding] = field(default_factory=list)
    scanned: list[Scanned] = field(default_factory=list)
    unpacked: int = 0
    """Bytes decompressed so far from this file, across all its members."""
    fs_path: str | None = None
    """Where the file is among ``neighbours``, when it is a regular file there (``None``
    for bytes that are not): readers of formats that name other files beside them (ONNX
    external data) check those names against that folder, for the file itself only
    (``member`` is ``None``), never for a container's members. On disk it is the file's
    path; in a scanned tree it is ``"/" + name``, a path that only ``neighbours`` reads."""
    neighbours: Neighbours = DISK
    """The folder that ``fs_path`` is in: the disk, or a virtual tree's files."""
    raw_files: set[str] = field(default_factory=set)
    """Real paths (``neighbours.realpath``) of files beside this one that a model reads
    as raw bytes (ONNX external data that passed its checks): the folder walk reports
    them as such rather than as an unknown format."""
    raw_data: dict[str, str] = field(default_factory=dict)
    """Real paths of other raw data files beside this one that it declares and that
    passed its checks (tensor-bundle data shards), mapped to the format the folder
    walk lists them as instead of an unknown format."""

    def add(
        self,
        rule_id: str,
        severity: Severity,
        message: str,
        *,
        format: str,
        member: str | None,
        offset: int | None = None,
    ) -> None:
        self.findings.append(
            Finding(
                rule_id=rule_id,
                severity=severity,
                message=message,
                path=self.path,
                format=format,
                member=member,
                offset=offset,
            )
        )

    def incomplete(self, message: str, *, format: str, member: str | None) -> None:
        """Record that something could not be scanned (never a silent pass)."""
        self.add("scan.incomplete", Severity.MEDIUM, message, format=format, member=member)

    def limit(self, message: str, *, format: str, member: str | None) -> None:
        self.add("scan.limit", Severity.MEDIUM, message, format=format, member=member)

    def mark_scanned(self, format: str, member: str | None) -> None:
        self.scanned.append(Scanned(path=self.path, format=format, member=member))

    def unpack_budget(self) -> int:
        """Bytes that may still be decompressed from this file."""
        return max(0, self.limits.max_unpacked_bytes - self.unpacked)

    def nested(self, stream: BinaryIO, member: str | None, depth: int) -> None:
        """Scan ``stream``, ``depth`` containers deep, by its content.

        A failure inside one member becomes a ``scan.incomplete`` finding for that
        member, and the scan goes on with the next.
        """
        if depth > self.limits.max_nesting:
            self.limit(
                f"nested more than {self.limits.max_nesting} containers deep; not scanned",
                format="container",
                member=member,
            )
            return
        try:
            self.dispatch(self, stream, member, depth)
        except Exception as exc:  # parsing hostile input: any failure is "not scanned"
            self.incomplete(describe_error(exc), format="unknown", member=member)

    def pickle(
        self,
        stream: BinaryIO,
        member: str | None,
        format: str,
        *,
        depth: int,
        streams: int | None = None,
    ) -> None:
        """Audit the pickle(s) at the start of ``stream`` (never loading them)."""
        from bastion.scanning._pickle import scan_pickle

        self.mark_scanned(format, member)
        self.findings.extend(
            scan_pickle(
                stream,
                path=self.path,
                member=member,
                format=format,
                limits=self.limits,
                streams=streams,
                depth=depth,
            )
        )


def describe_error(exc: BaseException) -> str:
    detail = str(exc) or type(exc).__name__
    return f"could not be parsed ({type(exc).__name__}: {detail[:200]}); not scanned"
