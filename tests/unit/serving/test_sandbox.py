"""The worker's lock-down, proved in a real child process: no network, no writes, bounded memory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.serving._sandbox import _audit

#: Runs in a fresh interpreter: applies a lock-down, then tries what a model must not do.
PROBE = r"""
import ctypes, json, os, socket, subprocess, sys
from bastion.serving import _sandbox

what, port, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
results = {}
if what == "all":
    results["protections"] = list(_sandbox.lock_down(memory_bytes=512 << 20))
elif what == "network":
    results["protections"] = [_sandbox.isolate_network()]
elif what == "limits":
    results["protections"] = _sandbox.limit_resources(memory_bytes=512 << 20)

def attempt(name, action):
    try:
        action()
    except MemoryError:
        results[name] = "MemoryError"
    except OSError as exc:
        results[name] = f"{type(exc).__name__}: {exc}"
    else:
        results[name] = "done"

def connect():
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(b"hello")

def write_file():
    with open(target, "w") as out:
        out.write("written")

def write_fd():
    fd = os.open(target + ".2", os.O_WRONLY | os.O_CREAT)
    try:
        os.write(fd, b"written")
    finally:
        os.close(fd)

attempt("connect", connect)
attempt("write", write_file)
attempt("write_fd", write_fd)
attempt("read", lambda: open(sys.executable, "rb").read(16))
attempt("allocate", lambda: bytearray(1 << 30))
attempt("subprocess", lambda: subprocess.run(["true"], check=True))
attempt("fork", lambda: os._exit(0) if os.fork() == 0 else os.wait())
attempt("ctypes", lambda: ctypes.CDLL(None).getpid())
attempt("remove", lambda: os.remove(sys.argv[4]))
print(json.dumps(results))
"""


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        yield server


def _probe(what: str, listener: socket.socket, tmp_path: Path) -> dict[str, object]:
    keep = tmp_path / "keep.txt"
    keep.write_text("kept")
    port = listener.getsockname()[1]
    target = tmp_path / "written.txt"
    done = subprocess.run(
        [sys.executable, "-I", "-c", PROBE, what, str(port), str(target), str(keep)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
        check=True,
    )
    results: dict[str, object] = json.loads(done.stdout)
    results["file_written"] = target.exists() and target.read_text() != ""
    results["kept"] = keep.exists()
    return results


def test_a_locked_down_child_cannot_connect_write_grow_or_spawn(
    listener: socket.socket, tmp_path: Path
) -> None:
    results = _probe("all", listener, tmp_path)
    protections = list(results["protections"])  # type: ignore[call-overload]
    assert {"memory-limit", "no-file-writes", "audit-hook"} <= set(protections)
    assert any(name.endswith("network-namespace") for name in protections)
    assert "refused in a model worker: socket" in str(results["connect"])
    assert "may not write files" in str(results["write"])
    assert "may not write files" in str(results["write_fd"])
    assert results["file_written"] is False
    assert results["allocate"] == "MemoryError"
    assert "subprocess" in str(results["subprocess"])
    assert "os.fork" in str(results["fork"])
    assert "ctypes" in str(results["ctypes"])
    assert "os.remove" in str(results["remove"])
    assert results["kept"] is True
    assert results["read"] == "done"  # reading stays possible: runtimes load their own code


def test_the_network_namespace_alone_leaves_no_route_even_to_loopback(
    listener: socket.socket, tmp_path: Path
) -> None:
    results = _probe("network", listener, tmp_path)
    (namespace,) = results["protections"]  # type: ignore[misc]
    assert namespace.endswith("network-namespace")
    assert "Network is unreachable" in str(results["connect"])


def test_resource_limits_alone_stop_writes_and_large_allocations(
    listener: socket.socket, tmp_path: Path
) -> None:
    results = _probe("limits", listener, tmp_path)
    assert "memory-limit" in results["protections"]  # type: ignore[operator]
    assert results["allocate"] == "MemoryError"
    assert "File too large" in str(results["write"])
    assert results["file_written"] is False
    assert results["connect"] == "done"  # limits alone do not cut the network


def test_without_lock_down_the_probe_does_everything(
    listener: socket.socket, tmp_path: Path
) -> None:
    results = _probe("none", listener, tmp_path)
    assert results["connect"] == results["write"] == results["allocate"] == "done"
    assert results["file_written"] is True
    assert results["kept"] is False


def test_the_audit_hook_allows_only_thread_control_symbols_and_read_only_opens() -> None:
    _audit("ctypes.dlsym", (object(), "scipy_openblas_set_num_threads64_"))
    _audit("ctypes.dlsym", (object(), "omp_get_max_threads"))
    _audit("open", ("/etc/hostname", "r", os.O_RDONLY))
    _audit("import", ("json", None, [], [], []))
    for event, args in (
        ("ctypes.dlsym", (object(), "system")),
        ("ctypes.dlopen", ("libc.so.6",)),
        ("open", ("/tmp/x", "a", os.O_WRONLY | os.O_APPEND | os.O_CREAT)),
        ("open", ("/tmp/x", None, os.O_RDWR)),
        ("socket.__new__", (None, 2, 1, 0)),
        ("os.system", (b"id",)),
        ("subprocess.Popen", ("sh", ["sh"], None, None)),
        ("os.exec", ("/bin/sh", ["sh"], None)),
        ("os.posix_spawn", ("/bin/sh", ["sh"], None)),
    ):
        with pytest.raises(PermissionError):
            _audit(event, args)
