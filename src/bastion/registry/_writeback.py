"""Starting the disk write of a file early, so that its final ``fsync`` has little left to do.

On Linux, ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` asks the kernel to begin writing a
range out without waiting for it. Elsewhere, or if the call is unavailable, it does
nothing and the final ``fsync`` does all the work, as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable

__all__ = ["start_writeback"]

_SYNC_FILE_RANGE_WRITE = 2


def _load() -> Callable[[int, int, int], None]:
    if not sys.platform.startswith("linux"):
        return lambda fd, offset, length: None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return lambda fd, offset, length: None
    call.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    call.restype = ctypes.c_int

    def start(fd: int, offset: int, length: int) -> None:
        call(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # advisory: errors are ignored

    return start


start_writeback = _load()
