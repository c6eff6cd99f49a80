"""Resource limits for one scan, so that no input can exhaust time or memory.

Reaching a limit is a finding (``scan.limit``), never a silent pass.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    max_opcodes: int = 200_000_000
    """Pickle opcodes per stream."""
    max_memo: int = 10_000_000
    """Distinct memo entries per pickle stream."""
    max_inline_bytes: int = 64 << 20
    """Largest nested pickle (bytes handed to a loader inside a pickle) read back to be
    audited. Other strings and bytes over 1 MiB are never held: they are skipped by seeking."""
    max_nesting: int = 4
    """Containers within containers (zip in zip, gzip in tar, pickle in bytes)."""
    max_members: int = 1_000_000
    """Members of one archive."""
    max_unpacked_bytes: int = 64 << 30
    """Total bytes decompressed from one file, across all its members."""
    max_ratio: int = 1_000
    """Largest decompressed/compressed ratio of one member before it counts as a bomb."""
    archive_reader_memory: int = 512 << 20
    """Memory (address space) of the child process that reads a 7z archive."""
    archive_reader_cpu_seconds: int = 120
    """CPU time of that child process."""
    archive_reader_idle_seconds: float = 120.0
    """Longest wait for that child's next answer before it is stopped."""
