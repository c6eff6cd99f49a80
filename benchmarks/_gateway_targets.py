"""The servers that benchmarks/gateway.py drives: a minimal FastAPI wrapper, MLServer, Bastion.

Each ``running_*`` function is a context manager that starts its server on a free loopback
port (pinned to one core when asked: the process that starts it is pinned while it forks,
and the server and its children inherit the mask), waits until it answers a real
inference, yields :class:`Target` objects and stops it on every path out.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

import bastion
from _bench import REPO, BenchError, log
from hub import free_port, running, server_env

if str(REPO) not in sys.path:  # the benchmark reuses the tests' MLServer launcher
    sys.path.append(str(REPO))
from tests.support.mlserver import running_mlserver

__all__ = [
    "CONNECTIONS",
    "FEATURES",
    "MODELS",
    "TARGETS",
    "TARGET_LABELS",
    "BastionGateway",
    "Rejection",
    "Target",
    "deploy_available",
    "listening_pid",
    "pinned",
    "post",
    "running_bastion",
    "running_fastapi",
    "running_mlserver_target",
]

CONNECTIONS = (1, 16)  # wrk -t1 -cN
FEATURES = 30
MODELS = {"logreg": "logistic regression, standardised", "forest": "random forest, 100 trees"}
TARGET_LABELS = {
    "fastapi": "FastAPI minimal",
    "mlserver": "MLServer",
    "bastion": "Bastion (gateway)",
    "upstream": "Bastion upstream -> MLServer",
}
TARGETS = tuple(TARGET_LABELS)
START_TIMEOUT = 120.0
NAMESPACE = "bench"
LIMITED = "limited"  # a deployment of the first model allowing one call an hour per caller
HIGH = "1000000000/hour"

FASTAPI_APP = '''\
"""A minimal Open Inference Protocol wrapper over ONNX Runtime: no checks at all."""
import json
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request

options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
sessions = {
    name: ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    for name, path in json.loads(os.environ["BENCH_MODELS"]).items()
}
datatypes = {np.dtype(np.int64): "INT64", np.dtype(np.float32): "FP32"}
app = FastAPI()


@app.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request) -> dict:
    body = await request.json()
    session = sessions[name]
    feeds = {
        i["name"]: np.asarray(i["data"], dtype=np.float32).reshape(i["shape"])
        for i in body["inputs"]
    }
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, feeds)
    outputs = [
        {"name": n, "shape": list(r.shape), "datatype": datatypes[r.dtype],
         "data": r.ravel().tolist()}
        for n, r in zip(names, results)
    ]
    return {"model_name": name, "outputs": outputs}
'''


@dataclass(frozen=True)
class Target:
    """One way of serving the models: where to send a request, with what, and who serves it."""

    key: str
    label: str
    base_url: str
    paths: Mapping[str, str]  # model key -> the path of its infer route
    headers: Mapping[str, str] = field(default_factory=dict)
    ca_file: Path | None = None
    pids: tuple[int, ...] = ()  # the serving processes (with their children): CPU time
    log_path: Path | None = None  # where the server writes its log


@dataclass(frozen=True)
class Rejection:
    """A request the target must refuse, with the status it must refuse it with."""

    key: str
    label: str
    status: int
    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class BastionGateway:
    gateway: Target
    upstream: Target | None
    rejections: tuple[Rejection, ...]


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Pin this thread to ``cpu`` inside the block: processes started in it inherit the mask."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def listening_pid(port: int) -> int | None:
    """The lowest process id holding the socket that listens on loopback ``port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in sorted(int(name) for name in os.listdir("/proc") if name.isdigit()):
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in inodes:
                        return pid
    return None


def post(target: Target, path: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
    """One plain request (for checks, not timed)."""
    verify: ssl.SSLContext | bool = True
    if target.ca_file is not None:
        verify = ssl.create_default_context(cafile=str(target.ca_file))
    all_headers = {"content-type": "application/json", **headers}
    try:
        return httpx.post(
            target.base_url + path, content=body, headers=all_headers, verify=verify, timeout=30
        )
    except httpx.HTTPError as exc:
        raise BenchError(f"{target.label}: POST {path} failed: {exc}") from exc


def wait_serving(target: Target, body: bytes, alive: Sequence[subprocess.Popen[bytes]]) -> None:
    """Wait until every model of ``target`` answers ``body`` with 200."""
    deadline = time.monotonic() + START_TIMEOUT
    for path in target.paths.values():
        while True:
            if any(p.poll() is not None for p in alive):
                raise BenchError(f"{target.label} exited while starting")
            with contextlib.suppress(BenchError):
                answer = post(target, path, body, target.headers)
                if answer.status_code == 200:
                    break
                if answer.status_code not in (404, 502, 503):
                    raise BenchError(
                        f"{target.label}: {path} answered {answer.status_code}: {answer.text[:300]}"
                    )
            if time.monotonic() > deadline:
                raise BenchError(f"{target.label}: {path} did not serve in {START_TIMEOUT:.0f} s")
            time.sleep(0.1)


@contextlib.contextmanager
def running_fastapi(
    models: Mapping[str, Path], work: Path, body: bytes, cpu: int | None
) -> Iterator[Target]:
    """The floor: ``uvicorn`` (uvloop, httptools, 1 worker) running :data:`FASTAPI_APP`."""
    app_dir = work / "fastapi"
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "bench_fastapi_app.py").write_text(FASTAPI_APP)
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "bench_fastapi_app:app", "--app-dir", str(app_dir)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http"]
    argv += ["httptools", "--workers", "1", "--no-access-log", "--log-level", "warning"]
    env = server_env(work) | {"BENCH_MODELS": json.dumps({k: str(v) for k, v in models.items()})}
    with contextlib.ExitStack() as stack:
        with pinned(cpu):
            server = stack.enter_context(running("uvicorn", argv, env, work / "fastapi.log"))
        target = Target(
            "fastapi", "FastAPI minimal", f"http://127.0.0.1:{port}",
            {m: f"/v2/models/{m}/infer" for m in models}, pids=(server.process.pid,),
            log_path=server.log_path,
        )  # fmt: skip
        try:
            wait_serving(target, body, [server.process])
        except BenchError as exc:
            raise BenchError(f"{exc}:\n{server.output_tail()}") from exc
        yield target


@contextlib.contextmanager
def running_mlserver_target(
    models: Mapping[str, Path], work: Path, body: bytes, cpu: int | None
) -> Iterator[Target]:
    """MLServer from ``.venv-mlserver`` with the tests' ONNX runtime, one process."""
    with contextlib.ExitStack() as stack:
        with pinned(cpu):
            try:
                url = stack.enter_context(
                    running_mlserver(models, workdir=work / "mlserver", parallel_workers=0)
                )
            except RuntimeError as exc:
                raise BenchError(f"MLServer did not start: {exc}") from exc
        pid = listening_pid(int(url.rsplit(":", 1)[1]))
        target = Target(
            "mlserver", "MLServer", url, {m: f"/v2/models/{m}/infer" for m in models},
            pids=() if pid is None else (pid,), log_path=work / "mlserver" / "mlserver.log",
        )  # fmt: skip
        wait_serving(target, body, [])
        yield target


def deploy_available() -> bool:
    """Whether this checkout's command line has ``bastion deploy``."""
    done = subprocess.run(
        [sys.executable, "-m", "bastion", "deploy", "--help"], capture_output=True, check=False
    )
    return done.returncode == 0


def access_config(path: Path) -> Path:
    """Limits that never refuse the benchmark, but one call an hour to deployment ``limited``."""
    lines = ["[rate_limits]", f'anonymous = "{HIGH}"', f'principal = "{HIGH}"']
    lines += [f'login_failure_limit = "{HIGH}"', "[rate_limits.models]", f'"*" = "{HIGH}"']
    lines += [f'"deployment:{LIMITED}" = "1/hour"']
    path.write_text("\n".join(lines) + "\n")
    return path


def unknown_key() -> str:
    """An API key of the right shape whose id the hub does not know."""
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(16))
    return f"bst_{key_id}_{secrets.token_urlsafe(32)}"


def bastion_cli(env: Mapping[str, str], *args: str) -> str:
    argv = [sys.executable, "-m", "bastion", *args]
    done = subprocess.run(argv, capture_output=True, text=True, env=dict(env), check=False)
    if done.returncode != 0:
        raise BenchError(f"bastion {' '.join(args)} failed:\n{(done.stderr or done.stdout)[-800:]}")
    return done.stdout


@contextlib.contextmanager
def running_bastion(
    models: Mapping[str, Path],
    work: Path,
    bodies: Mapping[str, bytes],
    cpu: int | None,
    *,
    output_policy: str,
    upstream: Target | None = None,
) -> Iterator[BastionGateway]:
    """``bastion serve`` (TLS, audit, limits) with each model pushed signed and deployed.

    ``bodies`` maps ``valid`` and ``wrong_shape`` to request bodies. With ``upstream`` (an
    OIP server serving the same model keys), a second deployment of each fronts it.
    """
    data, token_file = work / "bastion", work / "bastion-admin-token"
    port = free_port()
    argv = [sys.executable, "-m", "bastion", "serve", "--data-dir", str(data), "--host"]
    argv += ["127.0.0.1", "--port", str(port), "--admin-token-file", str(token_file)]
    argv += ["--access-config", str(access_config(work / "bastion-access.toml"))]
    env = {k: v for k, v in server_env(work).items() if not k.startswith("BASTION_")}
    url, ca = f"https://127.0.0.1:{port}", data / "tls" / "ca.crt"
    log_path = work / "bastion.log"
    with contextlib.ExitStack() as stack:
        with pinned(cpu):
            server = stack.enter_context(running("bastion serve", argv, env, log_path))
        deadline = time.monotonic() + START_TIMEOUT
        while not (ca.exists() and token_file.exists()):
            if not server.alive() or time.monotonic() > deadline:
                raise BenchError(f"bastion serve did not start:\n{server.output_tail()}")
            time.sleep(0.05)
        admin = token_file.read_text().strip()
        invoker = publish(url, admin, ca, models, work, lambda: server.alive())
        cli_env = env | {"BASTION_URL": url, "BASTION_TOKEN": admin, "BASTION_CA": str(ca)}
        first = next(iter(models))
        for name, model in [*((m, m) for m in models), (LIMITED, first)]:
            bastion_cli(
                cli_env, "deploy", f"{NAMESPACE}/{model}@1.0.0", "--name", name,
                "--output", output_policy,
            )  # fmt: skip
        fronted = {} if upstream is None else dict.fromkeys(upstream.paths, upstream.base_url)
        for model, base_url in fronted.items():
            bastion_cli(
                cli_env, "deploy", "--upstream", base_url, "--upstream-model", model,
                "--namespace", NAMESPACE, "--name", f"{model}-upstream", "--output", output_policy,
            )  # fmt: skip
        names = [*models, LIMITED, *(f"{m}-upstream" for m in fronted)]
        log(f"bastion: deployed {', '.join(names)}")
        headers = {"Authorization": f"Bearer {invoker}"}
        pids = (server.process.pid,)
        gateway = Target(
            "bastion", TARGET_LABELS["bastion"], url,
            {m: f"/v2/models/{m}/infer" for m in models}, headers, ca, pids, log_path,
        )  # fmt: skip
        wait_serving(gateway, bodies["valid"], [server.process])
        front = None
        if upstream:
            front = Target(
                "upstream", TARGET_LABELS["upstream"], url,
                {m: f"/v2/models/{m}-upstream/infer" for m in upstream.paths}, headers, ca,
                pids + upstream.pids, log_path,
            )  # fmt: skip
            wait_serving(front, bodies["valid"], [server.process])
        path = gateway.paths[first]
        rejections = (
            Rejection("bad_key", "unknown API key", 401, path,
                      {"Authorization": f"Bearer {unknown_key()}"}, bodies["valid"]),
            Rejection("bad_shape", "wrong-shaped input", 400, path, headers,
                      bodies["wrong_shape"]),
            Rejection("over_limit", "over its rate limit", 429, f"/v2/models/{LIMITED}/infer",
                      headers, bodies["valid"]),
        )  # fmt: skip
        yield BastionGateway(gateway, front, rejections)


def publish(
    url: str,
    admin: str,
    ca: Path,
    models: Mapping[str, Path],
    work: Path,
    alive: Callable[[], bool],
) -> str:
    """Make namespace ``bench`` trusting a new key, push each model signed with it as
    ``bench/NAME@1.0.0``; the token of a new API key that may only invoke deployments."""
    key = bastion.generate_key("ed25519")
    deadline = time.monotonic() + START_TIMEOUT
    with bastion.Client(url, token=admin, ca=ca) as client:
        while True:  # the CA is written before the server listens
            with contextlib.suppress(bastion.HubUnavailableError):
                client.whoami()
                break
            if not alive() or time.monotonic() > deadline:
                raise BenchError("bastion serve did not answer its first request")
            time.sleep(0.1)
        client.create_namespace(NAMESPACE, bastion.TrustPolicy.for_keys([key.public_key]))
        for name, onnx in models.items():
            folder = work / "bastion-models" / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "model.onnx").write_bytes(onnx.read_bytes())
            client.push(folder, f"{NAMESPACE}/{name}@1.0.0", key=key)
            log(f"bastion: pushed {NAMESPACE}/{name}@1.0.0, signed")
        made = client.create_api_key("bench-invoker", [(NAMESPACE, "invoker")], scope=["invoke"])
    return str(made["token"])
