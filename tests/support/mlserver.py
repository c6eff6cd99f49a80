"""A real MLServer, started for tests and benchmarks, serving ONNX files.

MLServer runs from its own virtual environment, ``.venv-mlserver`` (its pins conflict with
the project's; ``make test`` builds it), with the custom runtime in ``mlserver_onnx/`` beside
this file. :func:`running_mlserver` writes ``settings.json`` and one ``model-settings.json``
per model (its inputs and outputs read from the ONNX file, so MLServer's model metadata
declares them), starts ``mlserver start`` on free loopback ports with metrics off, waits
until ``/v2/health/ready`` answers 200, yields the base URL and stops the server on exit.

Typical use::

    with running_mlserver({"cancer": onnx_path}, workdir=tmp_path) as url:
        ...  # POST f"{url}/v2/models/cancer/infer"
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import onnxruntime

__all__ = ["MLSERVER", "RUNTIME_DIR", "onnx_metadata", "running_mlserver"]

REPO = Path(__file__).resolve().parents[2]
MLSERVER = REPO / ".venv-mlserver" / "bin" / "mlserver"
RUNTIME_DIR = Path(__file__).resolve().parent / "mlserver_onnx"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0

_DATATYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
}


def onnx_metadata(path: Path) -> dict[str, list[dict[str, object]]]:
    """The OIP ``inputs`` and ``outputs`` metadata of the ONNX file at ``path``.

    Dimensions that are not fixed numbers become -1. Raises RuntimeError for a tensor type
    the custom runtime cannot serve (a ZipMap output: convert with ``zipmap=False``).
    """
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    metadata: dict[str, list[dict[str, object]]] = {}
    for side, args in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
        entries: list[dict[str, object]] = []
        for arg in args:
            if arg.type not in _DATATYPES:
                raise RuntimeError(
                    f"{path.name}: {side} {arg.name!r} has type {arg.type}, which the test "
                    "runtime cannot serve (convert classifiers with zipmap=False)"
                )
            shape = [dim if isinstance(dim, int) and dim >= 0 else -1 for dim in arg.shape]
            entries.append({"name": arg.name, "datatype": _DATATYPES[arg.type], "shape": shape})
        metadata[side] = entries
    return metadata


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _write_repository(
    models: Mapping[str, Path], workdir: Path, http_port: int, grpc_port: int, workers: int
) -> None:
    settings = {
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_endpoint": None,
        "parallel_workers": workers,
        "debug": False,
        "load_models_at_startup": True,
        "model_repository_root": str(workdir),
        "metrics_dir": str(workdir / ".metrics"),
        "environments_dir": str(workdir / ".envs"),
    }
    (workdir / "settings.json").write_text(json.dumps(settings, indent=2))
    for name, path in models.items():
        folder = workdir / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        model_settings = {
            "name": name,
            "implementation": "runtime.OnnxRuntimeModel",
            "platform": "onnxruntime",
            "parameters": {"uri": str(Path(path).resolve())},
            **onnx_metadata(Path(path)),
        }
        (folder / "model-settings.json").write_text(json.dumps(model_settings, indent=2))


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as answer:  # noqa: S310
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"MLServer exited with status {process.returncode} before it was ready; "
                f"its log ends:\n{_log_tail(log)}"
            )
        if _is_ready(url):
            return
        time.sleep(0.1)
    raise RuntimeError(
        f"MLServer was not ready at {url} within {READY_TIMEOUT_S:.0f} s; its log ends:\n"
        f"{_log_tail(log)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT_S)
    # Parallel workers live in the server's process group; none may outlive the test.
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def running_mlserver(
    models: Mapping[str, Path], *, workdir: Path, parallel_workers: int = 0
) -> Iterator[str]:
    """Run MLServer serving ``models`` (name to ONNX file); yield its base URL.

    ``parallel_workers`` 0 runs inference in the server process. The server's log is
    ``workdir/mlserver.log``. Raises RuntimeError when ``.venv-mlserver`` is missing or
    the server does not become ready in time.
    """
    if not MLSERVER.exists():
        raise RuntimeError(f"{MLSERVER} does not exist: run `make test` (it builds .venv-mlserver)")
    workdir.mkdir(parents=True, exist_ok=True)
    http_port, grpc_port = _free_port(), _free_port()
    _write_repository(models, workdir, http_port, grpc_port, parallel_workers)
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLSERVER")}
    env["PYTHONPATH"] = str(RUNTIME_DIR)
    log = workdir / "mlserver.log"
    url = f"http://127.0.0.1:{http_port}"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(MLSERVER), "start", str(workdir)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(process, url, log)
        yield url
    finally:
        _stop(process)
