"""Tar archives, including the legacy PyTorch tar format.

Members are scanned in place (a regular member is a byte range of the archive).
Links and device members are reported, never followed. A tar holding
``sys_info``, ``pickle``, ``storages`` and ``tensors`` is a legacy ``torch.save``
archive, which ``torch.load(weights_only=False)`` still unpickles.
"""

from __future__ import annotations

import tarfile
from typing import BinaryIO

from bastion.scanning._context import ScanContext, join_member
from bastion.scanning._names import check_member_name
from bastion.scanning._report import Severity
from bastion.scanning._streams import SeekableSlice, as_binary

__all__ = ["scan_tar"]

_TORCH_MEMBERS = frozenset({"sys_info", "pickle", "storages", "tensors"})


def scan_tar(ctx: ScanContext, stream: BinaryIO, member: str | None, depth: int) -> None:
    try:
        archive = tarfile.open(fileobj=stream, mode="r:")  # noqa: SIM115 - closed below
    except (tarfile.TarError, OSError, ValueError, EOFError) as exc:
        ctx.incomplete(f"unreadable tar archive ({exc}); not scanned", format="tar", member=member)
        return
    with archive:
        members: list[tarfile.TarInfo] = []
        try:
            while (info := archive.next()) is not None:
                if len(members) >= ctx.limits.max_members:
                    ctx.limit(
                        f"tar has more than {ctx.limits.max_members} members; the rest are "
                        "not scanned",
                        format="tar",
                        member=member,
                    )
                    break
                members.append(info)
        except (tarfile.TarError, OSError, ValueError, EOFError) as exc:
            ctx.incomplete(
                f"tar archive is corrupt after {len(members)} members ({exc})",
                format="tar",
                member=member,
            )
    fmt = "pytorch-tar" if {m.name for m in members} >= _TORCH_MEMBERS else "tar"
    ctx.mark_scanned(fmt, member)
    for info in members:
        _entry(ctx, stream, info, fmt, member, depth)


def _entry(
    ctx: ScanContext,
    stream: BinaryIO,
    info: tarfile.TarInfo,
    fmt: str,
    parent: str | None,
    depth: int,
) -> None:
    member = join_member(parent, info.name)
    check_member_name(ctx, info.name, fmt, member, "tar")
    if info.issym() or info.islnk():
        ctx.add(
            "tar.link",
            Severity.HIGH,
            f"member is a {'symbolic' if info.issym() else 'hard'} link to "
            f"{info.linkname!r}; extracting it can read or overwrite files outside the folder",
            format=fmt,
            member=member,
        )
        return
    if info.isdir():
        return
    if not info.isreg():
        ctx.add(
            "tar.special-member",
            Severity.MEDIUM,
            "member is a device, FIFO or other special file",
            format=fmt,
            member=member,
        )
        return
    if info.sparse is not None:
        ctx.incomplete("sparse tar member; not scanned", format=fmt, member=member)
        return
    with as_binary(SeekableSlice(stream, info.offset_data, info.size)) as data:
        if fmt == "pytorch-tar" and info.name in _TORCH_MEMBERS:
            from bastion.scanning._torch_legacy import scan_torch_tar_member

            scan_torch_tar_member(ctx, data, info.name, member, depth + 1)
        else:
            ctx.nested(data, member, depth + 1)
