"""Member names that escape the folder an archive is extracted into."""

from __future__ import annotations

import re

from bastion.scanning._context import ScanContext
from bastion.scanning._report import Severity

__all__ = ["check_member_name"]

_DRIVE = re.compile(r"^[A-Za-z]:")


def check_member_name(ctx: ScanContext, name: str, fmt: str, member: str, prefix: str) -> None:
    """Report an absolute member name, or one that climbs out with ``..``."""
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        ctx.add(
            f"{prefix}.absolute-path",
            Severity.HIGH,
            "member name is an absolute path; extracting it writes anywhere on the disk",
            format=fmt,
            member=member,
        )
    if ".." in re.split(r"[/\\]", name):
        ctx.add(
            f"{prefix}.path-traversal",
            Severity.HIGH,
            "member name climbs out of the archive's folder with '..'",
            format=fmt,
            member=member,
        )
