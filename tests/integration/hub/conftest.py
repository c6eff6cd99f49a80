"""A real hub for the tests: uvicorn serving the application on a loopback port, in a thread.

``hub`` starts one per test on a fresh data folder (SQLite by default). ``admin``
is an SDK client holding the bootstrap admin key; ``signing_key`` is trusted by
the namespace ``med`` that ``med`` creates; ``safe_model`` writes a small model
(safetensors weights and a JSON config) that scans clean.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import pytest
import uvicorn
from safetensors.numpy import save_file

import bastion
from bastion.api import Services, create_app
from bastion.api._server import bootstrap_admin, open_services
from bastion.api._settings import ServerSettings
from bastion.api._transport import hub_server_config
from bastion.auth._passwords import PasswordHasher
from bastion.auth._ratelimit import RateLimiter, RateLimits
from bastion.client import Client

#: argon2id with small costs: the tests sign in often, and the parameters are not under test.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost_kib=1024)


@dataclass
class RunningHub:
    url: str
    data_dir: Path
    services: Services
    admin_token: str

    def client(self, token: str | None = None) -> Client:
        return Client(self.url, token=token or self.admin_token)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_hub(
    data_dir: Path,
    *,
    limits: RateLimits | None = None,
    transport: Literal["hub", "uvicorn"] = "hub",
    **settings: object,
) -> tuple[RunningHub, uvicorn.Server, threading.Thread]:
    port = int(settings.pop("port", None) or _free_port())  # type: ignore[call-overload]
    config = ServerSettings(
        data_dir=data_dir,
        port=port,
        insecure_http=True,
        **settings,  # type: ignore[arg-type]
    )
    services = open_services(config, hasher=CHEAP_HASHER)
    if limits is None:  # every test talks from 127.0.0.1: limits are tested on their own
        limits = RateLimits(
            anonymous="100000/minute",
            principal="100000/minute",
            models={"*": "100000/minute"},
            login_failure_limit="100000/minute",
        )
    services = dataclasses.replace(services, limiter=RateLimiter(limits))
    token = bootstrap_admin(services, None) or ""
    app = create_app(services)
    if transport == "hub":
        # The hub's own transport, as `bastion serve` runs it (inference calls skip ASGI there).
        config = hub_server_config(app, host="127.0.0.1", port=port)
    else:  # any ASGI server: what the routes do must not depend on the hub's transport
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the hub did not start")
        time.sleep(0.02)
    return RunningHub(f"http://127.0.0.1:{port}", data_dir, services, token), server, thread


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningHub]:
    running, server, thread = start_hub(tmp_path / "hub-data")
    yield running
    server.should_exit = True
    thread.join(timeout=20)
    running.services.hub.db.dispose()


@pytest.fixture
def admin(hub: RunningHub) -> Iterator[Client]:
    with hub.client() as client:
        yield client


@pytest.fixture
def signing_key() -> bastion.PrivateKey:
    return bastion.generate_key("ed25519")


@pytest.fixture
def med(admin: Client, signing_key: bastion.PrivateKey) -> str:
    admin.create_namespace("med", bastion.TrustPolicy.for_keys([signing_key.public_key]))
    return "med"


def write_safe_model(folder: Path, *, seed: int = 0, size: int = 64) -> Path:
    """A small model that scans clean: safetensors weights, a JSON config, a README."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    save_file(
        {"dense.weight": rng.standard_normal((size, size)).astype(np.float32)},
        str(folder / "model.safetensors"),
    )
    (folder / "config.json").write_text(json.dumps({"architecture": "mlp", "seed": seed}))
    (folder / "sub").mkdir()
    (folder / "sub" / "README.md").write_text("# test model\n")
    return folder


@pytest.fixture
def safe_model(tmp_path: Path) -> Path:
    return write_safe_model(tmp_path / "model")


@dataclass
class ServeProcess:
    """``bastion serve`` running as a child process (``python -m bastion serve ...``)."""

    process: subprocess.Popen[bytes]
    url: str
    port: int
    data_dir: Path
    token_file: Path
    stdout: Path
    stderr: Path

    @property
    def ca(self) -> Path:
        return self.data_dir / "tls" / "ca.crt"

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def output(self) -> str:
        """Everything the process wrote so far, stdout then stderr."""
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.running():
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as when the machine loses power."""
        if self.running():
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=20)


def _answers(url: str, ca: Path | None) -> bool:
    verify: ssl.SSLContext | bool = True
    if url.startswith("https://"):
        if ca is None or not ca.exists():
            return False
        verify = ssl.create_default_context(cafile=str(ca))
    try:
        return httpx.get(f"{url}/livez", verify=verify, timeout=2).status_code == 200
    except (httpx.TransportError, ssl.SSLError, OSError):
        return False


@contextmanager
def serve_process(
    data_dir: Path,
    token_file: Path,
    *,
    port: int | None = None,
    insecure_http: bool = False,
    extra: tuple[str, ...] = (),
) -> Iterator[ServeProcess]:
    """Start ``bastion serve`` on a loopback port, wait for ``/livez``; stopped on exit."""
    port = port or _free_port()
    argv = [sys.executable, "-m", "bastion", "serve", "--data-dir", str(data_dir)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--admin-token-file", str(token_file)]
    argv += ["--insecure-http"] if insecure_http else []
    logs = data_dir.parent / f"serve-{port}-{time.monotonic_ns()}"
    with (
        (logs.with_suffix(".out")).open("wb") as out,
        (logs.with_suffix(".err")).open("wb") as err,
    ):
        process = subprocess.Popen([*argv, *extra], stdout=out, stderr=err)
    scheme = "http" if insecure_http else "https"
    running = ServeProcess(
        process,
        f"{scheme}://127.0.0.1:{port}",
        port,
        data_dir,
        token_file,
        logs.with_suffix(".out"),
        logs.with_suffix(".err"),
    )
    try:
        deadline = time.monotonic() + 60
        while not _answers(running.url, None if insecure_http else running.ca):
            if not running.running():
                raise RuntimeError(f"bastion serve exited early:\n{running.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"bastion serve did not answer:\n{running.output()}")
            time.sleep(0.1)
        yield running
    finally:
        running.stop()


# Raw HTTP: for requests the SDK would refuse to send -------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def http(hub: RunningHub) -> Iterator[httpx.Client]:
    """A plain HTTP client holding the admin key."""
    with httpx.Client(base_url=hub.url, headers=bearer(hub.admin_token)) as client:
        yield client


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Check an RFC 9457 problem document carrying Bastion's stable ``code``; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:bastion:problem:{code}"
    for field in ("title", "detail"):
        assert isinstance(body[field], str), body
        assert body[field], body
    return body


@dataclass
class SignedModel:
    """A model folder and a signature kept beside it, as a raw upload declares them."""

    folder: Path
    signature: bytes
    files: dict[str, int]

    def start_body(self, version: str) -> dict[str, Any]:
        return {
            "version": version,
            "signature": base64.b64encode(self.signature).decode(),
            "files": self.files,
        }


def sign_beside(folder: Path, key: bastion.PrivateKey) -> SignedModel:
    sig = folder.parent / f"{folder.name}.sig"
    bastion.sign(folder, key, signature_path=sig)
    files = {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    return SignedModel(folder, sig.read_bytes(), files)


def open_upload(http: httpx.Client, model: str, version: str, signed: SignedModel) -> str:
    """Start an upload of ``signed`` as ``model@version`` (``model`` is ``ns/name``); its id."""
    response = http.post(f"/api/v1/models/{model}/versions", json=signed.start_body(version))
    assert response.status_code == 201, response.text
    upload_id: str = response.json()["upload_id"]
    return upload_id


def put_file(http: httpx.Client, upload_id: str, name: str, data: bytes) -> httpx.Response:
    return http.put(f"/api/v1/uploads/{upload_id}/files/{name}", content=data)


def upload_all(http: httpx.Client, upload_id: str, signed: SignedModel) -> None:
    """Upload every file of ``signed`` into an open upload; each must be accepted."""
    for name in signed.files:
        data = (signed.folder / name).read_bytes()
        assert put_file(http, upload_id, name, data).status_code == 201


def make_key(admin: Client, *roles: tuple[str, str], expires_in_days: int | None = 90) -> str:
    """A new API key with ``roles`` ((namespace, role) pairs); its token."""
    token: str = admin.create_api_key("test", list(roles), expires_in_days=expires_in_days)["token"]
    return token


def stop_hub(running: RunningHub, server: uvicorn.Server, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(timeout=20)
    running.services.hub.db.dispose()


@pytest.fixture
def hub_with(tmp_path: Path) -> Iterator[Callable[..., RunningHub]]:
    """Start hubs with custom settings (``data_dir=`` too); each is stopped after the test."""
    started: list[tuple[RunningHub, uvicorn.Server, threading.Thread]] = []

    def start(
        data_dir: Path | None = None, *, limits: RateLimits | None = None, **settings: object
    ) -> RunningHub:
        folder = data_dir or tmp_path / f"custom-hub-{len(started)}"
        started.append(start_hub(folder, limits=limits, **settings))
        return started[-1][0]

    yield start
    for running, server, thread in started:
        stop_hub(running, server, thread)
