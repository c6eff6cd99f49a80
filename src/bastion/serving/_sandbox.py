"""The lock-down a model worker applies to itself after importing its runtime.

:func:`lock_down` applies, in order: no new privileges and death with the parent (prctl);
a network namespace of its own, so no interface but a loopback that is down (``unshare``
with ``CLONE_NEWNET``, or ``CLONE_NEWUSER | CLONE_NEWNET`` when not privileged); resource
limits (address space, CPU time, no file writes, few descriptors, no core dumps); and an
audit hook refusing sockets, new processes, ctypes and opening files for writing. Each
returns the name of what it applied, so the worker can report them; what cannot be applied
is logged once and left out. An audit hook is a tripwire, not a sandbox: the guarantee is
that the runtimes never run code from a model file.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import resource
import signal
import sys
from typing import Any

__all__ = ["install_audit_hook", "isolate_network", "limit_resources", "lock_down"]

logger = logging.getLogger(__name__)

_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
#: Cumulative CPU seconds before the kernel stops a worker: a cap, not the per-call limit.
CPU_SECONDS_CAP = 24 * 3600
#: Descriptors a worker may hold: its pipes and what a runtime opens to read.
OPEN_FILES = 64

_REFUSED_EVENTS = (
    "socket.",
    "subprocess.",
    "_posixsubprocess.",
    "os.exec",
    "os.spawn",
    "os.posix_spawn",
    "os.fork",
    "os.system",
    "os.kill",
    "os.killpg",
    "pty.",
    "ctypes.",
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.mkdir",
    "os.truncate",
    "os.chmod",
    "os.chown",
    "os.link",
    "os.symlink",
    "os.utime",
    "shutil.",
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
#: scikit-learn limits BLAS and OpenMP threads through threadpoolctl, which looks these
#: symbols up in libraries it opened before the lock-down; no other symbol is looked up.
_THREAD_CONTROL = re.compile(r"(scipy_)?(openblas|omp|mkl|MKL|bli|flexiblas)_\w+")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(libc: ctypes.CDLL) -> list[str]:
    applied = []
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0:
        applied.append("no-new-privileges")
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
        applied.append("dies-with-gateway")
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0:
        applied.append("not-dumpable")
    return applied


def isolate_network() -> str | None:
    """Move into a new network namespace; its name, or None (logged) if not possible."""
    libc = _libc()
    for flags, name in (
        (_CLONE_NEWNET, "network-namespace"),
        (_CLONE_NEWUSER | _CLONE_NEWNET, "user-network-namespace"),
    ):
        if libc.unshare(flags) == 0:
            return name
    logger.warning(
        "a model worker cannot have a network namespace of its own (%s); it relies on its "
        "audit hook to refuse sockets",
        os.strerror(ctypes.get_errno()),
    )
    return None


def limit_resources(
    *, memory_bytes: int, cpu_seconds: int = CPU_SECONDS_CAP, open_files: int = OPEN_FILES
) -> list[str]:
    """Set hard resource limits: address space, CPU time, file size 0, descriptors, no core."""
    limits = (
        ("memory", resource.RLIMIT_AS, memory_bytes),
        ("cpu-time", resource.RLIMIT_CPU, cpu_seconds),
        ("no-file-writes", resource.RLIMIT_FSIZE, 0),
        ("open-files", resource.RLIMIT_NOFILE, open_files),
        ("no-core-dumps", resource.RLIMIT_CORE, 0),
    )
    applied = []
    for name, which, value in limits:
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError) as exc:
            logger.warning("a model worker cannot set its %s limit: %s", name, exc)
            continue
        applied.append(f"{name}-limit" if not name.startswith("no-") else name)
    return applied


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open":
        flags = args[2] if len(args) > 2 else 0
        if isinstance(flags, int) and flags & _WRITE_FLAGS:
            raise PermissionError(f"a model worker may not write files ({args[0]!r})")
        return
    if event.startswith(_REFUSED_EVENTS):
        symbol = args[1] if event == "ctypes.dlsym" and len(args) > 1 else None
        if isinstance(symbol, str) and _THREAD_CONTROL.fullmatch(symbol):
            return
        raise PermissionError(f"refused in a model worker: {event}")


def install_audit_hook() -> str:
    """Install the audit hook; it cannot be removed for the life of the process."""
    sys.addaudithook(_audit)
    return "audit-hook"


def lock_down(*, memory_bytes: int, cpu_seconds: int = CPU_SECONDS_CAP) -> tuple[str, ...]:
    """Apply every protection to this process; the names of those applied."""
    applied = _prctl(_libc())
    network = isolate_network()
    if network is not None:
        applied.append(network)
    applied += limit_resources(memory_bytes=memory_bytes, cpu_seconds=cpu_seconds)
    applied.append(install_audit_hook())
    return tuple(applied)
