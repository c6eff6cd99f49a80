"""What a scan reports: findings, what could not be scanned, and their serialisations.

A finding names the file, the member inside a container (``/``-joined through
nesting), the format, a severity, a stable rule id, a message, and where it is:
a byte offset or, for configuration formats, a config path. Anything that could
not be scanned is also a finding (rule ``scan.incomplete``): a scan fails
closed, never silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from bastion.errors import UsageError

__all__ = ["SCHEMA_VERSION", "Finding", "ScanReport", "Severity"]

#: Version of the JSON report's schema (docs/scanning.md); bumped on any incompatible change.
SCHEMA_VERSION = 1


class Severity(IntEnum):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> Severity:
        try:
            return cls[label.upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise UsageError(f"unknown severity {label!r}; use one of {names}") from None


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the scanner found."""

    rule_id: str
    severity: Severity
    message: str
    path: str
    format: str
    member: str | None = None
    offset: int | None = None
    config_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "severity": self.severity.label,
            "message": self.message,
            "path": self.path,
            "member": self.member,
            "format": self.format,
            "offset": self.offset,
            "config_path": self.config_path,
        }


@dataclass(frozen=True, slots=True)
class Scanned:
    """A file or member that was scanned, and the format it was read as."""

    path: str
    format: str
    member: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "member": self.member, "format": self.format}


@dataclass(slots=True)
class ScanReport:
    """Everything one scan found. ``unscanned`` lists the incomplete parts and why."""

    root: str
    findings: list[Finding] = field(default_factory=list)
    scanned: list[Scanned] = field(default_factory=list)

    @property
    def unscanned(self) -> list[Finding]:
        return [f for f in self.findings if f.rule_id == "scan.incomplete"]

    @property
    def max_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def at_or_above(self, threshold: Severity) -> list[Finding]:
        return [f for f in self.findings if f.severity >= threshold]

    def to_dict(self) -> dict[str, Any]:
        ordered = sorted(
            self.findings, key=lambda f: (-f.severity, f.path, f.member or "", f.offset or 0)
        )
        return {
            "schema_version": SCHEMA_VERSION,
            "root": self.root,
            "max_severity": None if self.max_severity is None else self.max_severity.label,
            "findings": [f.to_dict() for f in ordered],
            "scanned": [s.to_dict() for s in self.scanned],
        }
