"""Benchmark the hub's transfers: Bastion's push and pull next to MLflow's artifact server and cp.

Run it with ``make bench``, or ``.venv/bin/python benchmarks/hub.py [--runs N] [--quick]``.

In one run it:

* builds (once, then reuses) under a scratch folder (default ``.bench/``) a 2 GiB model
  that scans clean: 4 safetensors files of 512 MiB of float32 weights drawn with numpy,
  plus a ``config.json`` (``--quick``: 4 x 64 MiB and 1 round, a smoke check); signs it
  once per run with a fresh Ed25519 key, the signature written outside the model;
* in each round, starts ``bastion serve`` as a child process with TLS on loopback and a
  fresh data folder, creates a namespace that trusts the key, and times
  ``bastion.Client.push`` (given the signature: signing is not timed) and
  ``Client.pull`` into a fresh folder; then starts ``mlflow server --serve-artifacts``
  (its own virtual environment, see ``--mlflow``) and times the upload and download of
  the same files through its artifact REST API
  (``PUT``/``GET /api/2.0/mlflow-artifacts/artifacts/<path>``) with httpx, streaming in
  the chunk size of Bastion's client; then times ``cp -r`` of the folder, the ceiling;
* samples the resident memory (``VmRSS`` in ``/proc``) of each server's whole process
  tree every 20 ms during its transfers and keeps the peak;
* prints medians of the rounds, MB/s (10^6 bytes per second), ratios and the issue's
  targets on stdout; progress goes to stderr; every round's figures go to
  ``.bench/hub-results.json``.

Both servers are started fresh in every round; before its transfers, each is left until its
process tree is idle (MLflow starts its job runner's consumers after it answers ``/health``)
and is sent a 1 MiB model, untimed. The tools take turns: the order of Bastion and MLflow
alternates from round to round, and every model file is read once before each round (warm
page cache). Servers run in their own process groups and are killed on every path out.
Linux only (``/proc``); needs the project's virtual environment (bastion, httpx, numpy)
and an MLflow installation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import numpy as np

import bastion
from _bench import (
    MIB,
    BenchError,
    add_common_options,
    human_bytes,
    log,
    machine,
    parse_common,
    warm,
)
from bastion.client._transfer import _CHUNK as SDK_CHUNK

MB = 10**6
RSS_TARGET = 300 * MB  # the "under 300 MB"
RATIO_TARGET = 2.0  # the "at least twice MLflow's throughput both ways"
SAMPLE_SECONDS = 0.02
START_TIMEOUT = 120.0  # seconds for a server to answer its health check, then to go idle
IDLE_INTERVAL, IDLE_CHECKS, IDLE_CPU = 0.5, 4, 0.05  # idle: under 5 % of a core for 2 s
TRANSFER_TIMEOUT = httpx.Timeout(30.0, read=900.0)  # as Bastion's SDK
NAMESPACE, MODEL_NAME = "bench", "weights"
CASES = ("push", "pull")
MLFLOW_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
CONFIG_JSON = b'{"architectures": ["BenchModel"], "hidden_size": 4096, "dtype": "float32"}\n'


# --- the model -------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    files: int
    file_size: int


FULL = Sizes(files=4, file_size=512 * MIB)
QUICK = Sizes(files=4, file_size=64 * MIB)


@dataclass(frozen=True)
class Model:
    root: Path
    files: tuple[Path, ...]
    nbytes: int

    @property
    def names(self) -> list[str]:
        return [p.relative_to(self.root).as_posix() for p in self.files]

    def describe(self) -> str:
        big = [p for p in self.files if p.suffix == ".safetensors"]
        each = human_bytes(big[0].stat().st_size) if big else "?"
        return (
            f"{self.root.name}: {len(big)} safetensors files of {each} (float32, numpy "
            f"standard normal) + config.json, {self.nbytes / MB:,.1f} MB"
        )


def build_model(scratch: Path, sizes: Sizes) -> Model:
    """The benchmark's model, written once; files already of the right size are kept."""
    n, size = sizes.files, sizes.file_size
    root = scratch / "models" / f"hub-{n}x{size // MIB}m"
    layout: dict[str, int | bytes] = {
        f"model-{i + 1:05d}-of-{n:05d}.safetensors": size for i in range(n)
    }
    layout["config.json"] = CONFIG_JSON
    expected = {root / name: content for name, content in layout.items()}
    if root.exists():
        for folder, _dirs, names in os.walk(root):
            for name in names:
                if Path(folder, name) not in expected:
                    Path(folder, name).unlink()
    for seed, (path, content) in enumerate(sorted(expected.items())):
        if isinstance(content, bytes):
            if not path.is_file() or path.read_bytes() != content:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
        elif not path.is_file() or path.stat().st_size != content:
            log(f"writing {path} ({human_bytes(content)}; once, later runs reuse it)")
            write_safetensors(path, content, seed=seed)
    files = tuple(sorted(expected))
    return Model(root, files, sum(p.stat().st_size for p in files))


def build_warmup(scratch: Path) -> Model:
    """A 1 MiB model of the same kinds of files: sent untimed before the timed transfers."""
    root = scratch / "models" / "hub-warmup"
    weights, config = root / "model.safetensors", root / "config.json"
    if not weights.is_file() or weights.stat().st_size != MIB:
        write_safetensors(weights, MIB, seed=99)
    config.write_bytes(CONFIG_JSON)
    files = (config, weights)
    return Model(root, files, sum(p.stat().st_size for p in files))


def write_safetensors(path: Path, size: int, *, seed: int) -> None:
    """A safetensors file of exactly ``size`` bytes: one float32 tensor of random weights."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header_size = 256  # padded with spaces, as the format allows; a multiple of 8
    count = (size - 8 - header_size) // 4
    if count <= 0 or 8 + header_size + 4 * count != size:
        raise BenchError(f"cannot lay out a safetensors file of {size} bytes")
    header = {
        "__metadata__": {"format": "pt"},
        "weight": {"dtype": "F32", "shape": [count], "data_offsets": [0, 4 * count]},
    }
    text = json.dumps(header, separators=(",", ":")).encode()
    if len(text) > header_size:
        raise BenchError("the safetensors header does not fit its padding")
    rng = np.random.default_rng(seed)
    tmp = path.with_name(path.name + ".part")
    with tmp.open("wb") as fh:
        fh.write(header_size.to_bytes(8, "little") + text.ljust(header_size))
        left = count
        while left:
            step = min(left, 4 * MIB)
            fh.write(rng.standard_normal(step, dtype=np.float32).tobytes())
            left -= step
    tmp.replace(path)


def sizes_of(root: Path, names: Sequence[str]) -> list[int]:
    return [(root / name).stat().st_size for name in names]


# --- processes and their memory --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def children_map() -> dict[int, list[int]]:
    """Every process's children, from ``/proc/PID/stat``."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children = children_map()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of these processes (those still running), from ``/proc``."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def status_field(pid: int, name: str) -> int:
    """A ``kB`` figure of ``/proc/PID/status`` in bytes; 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class RssSampler:
    """Samples the resident memory of a process tree in a thread while the block runs."""

    def __init__(self, root: int) -> None:
        self._root = root
        self._pids = process_tree(root)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak_total = 0  # bytes: the largest sum over the tree
        self.peak_single = 0  # bytes: the largest single process
        self.at_start = 0  # bytes: the sum over the tree when the block began
        self.samples = 0
        self.own_cpu = 0.0  # seconds of CPU the sampling thread used (in the client's figure)

    def __enter__(self) -> RssSampler:
        self._sample()
        self.at_start = self.peak_total
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        refreshed = time.monotonic()
        while not self._stop.wait(SAMPLE_SECONDS):
            if time.monotonic() - refreshed > 0.5:  # workers may come and go
                self._pids = process_tree(self._root)
                refreshed = time.monotonic()
            self._sample()
        self.own_cpu = time.thread_time()

    def _sample(self) -> None:
        figures = [status_field(pid, "VmRSS") for pid in self._pids]
        self.peak_total = max(self.peak_total, sum(figures))
        self.peak_single = max(self.peak_single, max(figures, default=0))
        self.samples += 1


@dataclass
class Server:
    """A server started in its own process group, its output going to a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def output_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace").strip()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the group, then SIGKILL to whatever of the tree is left."""
        pid = self.process.pid
        tree = process_tree(pid) if self.alive() else []
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not stop within 15 s; killing it")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        for child in tree:  # a worker that left the group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=15)


@contextlib.contextmanager
def running(
    name: str, argv: Sequence[str | Path], env: dict[str, str], log_path: Path
) -> Iterator[Server]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            list(map(str, argv)),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    server = Server(name, process, log_path)
    try:
        yield server
    finally:
        server.stop()


def wait_until_up(server: Server, url: str, verify: ssl.SSLContext | bool) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not server.alive():
            raise BenchError(f"{server.name} exited while starting:\n{server.output_tail()}")
        try:
            if httpx.get(url, verify=verify, timeout=2).status_code == 200:
                return
        except (httpx.TransportError, ssl.SSLError, OSError):
            pass
        time.sleep(0.1)
    raise BenchError(f"{server.name} did not answer {url} in {START_TIMEOUT:.0f} s")


def wait_until_idle(server: Server) -> float:
    """Wait until the server's process tree is idle; the seconds waited.

    MLflow answers ``/health`` while it is still starting its job runner's consumers
    (7 more Python processes here); on two cores they would slow its first transfer.
    """
    start = time.monotonic()
    pids = process_tree(server.process.pid)
    used = cpu_seconds(pids)
    quiet = 0
    while quiet < IDLE_CHECKS:
        if time.monotonic() - start > START_TIMEOUT:
            raise BenchError(f"{server.name} was still busy {START_TIMEOUT:.0f} s after starting")
        time.sleep(IDLE_INTERVAL)
        now_pids = process_tree(server.process.pid)
        now_used = cpu_seconds(now_pids)
        busy = (now_used - used) / IDLE_INTERVAL
        quiet = quiet + 1 if busy < IDLE_CPU and now_pids == pids else 0
        pids, used = now_pids, now_used
    return time.monotonic() - start


def server_env(scratch: Path) -> dict[str, str]:
    """The environment of the servers: bytecode cached outside ``src/`` (see signing.py)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
    return env


# --- one round of each tool --------------------------------------------------------------


@dataclass
class Transfer:
    seconds: float
    peak_rss: int  # bytes, the server's tree (sum) at its largest
    peak_single: int  # bytes, the server's largest process
    rss_before: int  # bytes, the server's tree (sum) when the transfer began
    client_cpu: float  # seconds, this process (every thread but the memory sampler)
    server_cpu: float  # seconds, the server's process tree


@dataclass
class Round:
    bastion: dict[str, Transfer] = field(default_factory=dict)
    mlflow: dict[str, Transfer] = field(default_factory=dict)
    cp: float = 0.0
    bastion_hwm: int = 0  # the server's VmHWM at the end: its peak over its whole life
    settle: dict[str, float] = field(default_factory=dict)  # seconds until a server was idle


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(server: Server, action: Any) -> Transfer:
    """Run one transfer: its wall time, the server's memory, and both sides' CPU time."""
    pids = process_tree(server.process.pid)
    server_before, client_before = cpu_seconds(pids), own_cpu()
    with RssSampler(server.process.pid) as sampler:
        start = time.perf_counter()
        action()
        seconds = time.perf_counter() - start
    client = own_cpu() - client_before - sampler.own_cpu
    # A process born during the transfer spent all its CPU time in it.
    born = [pid for pid in process_tree(server.process.pid) if pid not in pids]
    server_cpu = cpu_seconds(pids) - server_before + cpu_seconds(born)
    return Transfer(
        seconds, sampler.peak_total, sampler.peak_single, sampler.at_start, client, server_cpu
    )


@dataclass(frozen=True)
class Setup:
    scratch: Path
    model: Model
    signature: Path
    warmup: Model  # a small model sent untimed first, so both servers are warm
    warmup_signature: Path
    trust: bastion.TrustPolicy
    bastion_exe: Path
    mlflow_exe: Path

    @property
    def work(self) -> Path:
        return self.scratch / "hub-work"


def bastion_round(setup: Setup, number: int, result: Round) -> None:
    work = setup.work / f"bastion-{number}"
    shutil.rmtree(work, ignore_errors=True)
    data, token_file, dest = work / "data", work / "admin-token", work / "pulled"
    port = free_port()
    argv: list[str | Path] = [setup.bastion_exe, "serve", "--data-dir", data, "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--admin-token-file", token_file]
    url = f"https://127.0.0.1:{port}"
    try:
        with running(
            "bastion serve", argv, server_env(setup.scratch), work / "serve.log"
        ) as server:
            ca = data / "tls" / "ca.crt"
            deadline = time.monotonic() + START_TIMEOUT
            while not ca.exists() and time.monotonic() < deadline and server.alive():
                time.sleep(0.05)
            if not ca.exists():
                raise BenchError(f"bastion serve wrote no CA certificate:\n{server.output_tail()}")
            wait_until_up(server, f"{url}/livez", ssl.create_default_context(cafile=str(ca)))
            result.settle["bastion"] = wait_until_idle(server)
            token = token_file.read_text().strip()
            ref = f"{NAMESPACE}/{MODEL_NAME}@1.0.{number}"
            with bastion.Client(url, token=token, ca=ca) as client:
                client.create_namespace(NAMESPACE, setup.trust)
                warmup = f"{NAMESPACE}/{MODEL_NAME}@0.0.{number}"
                client.push(setup.warmup.root, warmup, signature=setup.warmup_signature)
                client.pull(warmup, work / "warmup")
                result.bastion["push"] = timed(
                    server, lambda: client.push(setup.model.root, ref, signature=setup.signature)
                )
                result.bastion["pull"] = timed(server, lambda: client.pull(ref, dest))
            result.bastion_hwm = status_field(server.process.pid, "VmHWM")
        if sizes_of(dest, setup.model.names) != sizes_of(setup.model.root, setup.model.names):
            raise BenchError("Bastion's pull did not bring back the model's files")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def mlflow_round(setup: Setup, number: int, result: Round) -> None:
    work = setup.work / f"mlflow-{number}"
    shutil.rmtree(work, ignore_errors=True)
    artifacts, dest = work / "artifacts", work / "pulled"
    artifacts.mkdir(parents=True)
    port = free_port()
    argv: list[str | Path] = [
        setup.mlflow_exe,
        "server",
        "--serve-artifacts",
        "--artifacts-destination",
        artifacts,
    ]
    argv += ["--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    base = f"/api/2.0/mlflow-artifacts/artifacts/{MODEL_NAME}/1.0.{number}"
    names = setup.model.names
    try:
        with running(
            "mlflow server", argv, {**server_env(setup.scratch), **MLFLOW_ENV}, work / "serve.log"
        ) as server:
            wait_until_up(server, f"{url}/health", True)
            result.settle["mlflow"] = wait_until_idle(server)
            with httpx.Client(base_url=url, timeout=TRANSFER_TIMEOUT) as http:
                warmup = f"{base}-warmup"
                mlflow_upload(http, warmup, setup.warmup.root, setup.warmup.names)
                mlflow_download(http, warmup, work / "warmup", setup.warmup.names)
                result.mlflow["push"] = timed(
                    server, lambda: mlflow_upload(http, base, setup.model.root, names)
                )
                result.mlflow["pull"] = timed(
                    server, lambda: mlflow_download(http, base, dest, names)
                )
        if sizes_of(dest, names) != sizes_of(setup.model.root, names):
            raise BenchError("MLflow's download did not bring back the model's files")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def mlflow_upload(http: httpx.Client, base: str, root: Path, names: Sequence[str]) -> None:
    for name in names:
        path = root / name
        headers = {
            "content-length": str(path.stat().st_size),
            "content-type": "application/octet-stream",
        }
        response = http.put(f"{base}/{name}", content=read_chunks(path), headers=headers)
        check(response, f"uploading {name} to MLflow")


def mlflow_download(http: httpx.Client, base: str, dest: Path, names: Sequence[str]) -> None:
    for name in names:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with http.stream("GET", f"{base}/{name}") as response, target.open("wb") as out:
            if response.status_code != 200:
                response.read()
                check(response, f"downloading {name} from MLflow")
            for chunk in response.iter_bytes(SDK_CHUNK):
                out.write(chunk)


def read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(SDK_CHUNK):
            yield chunk


def check(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        raise BenchError(f"{what}: HTTP {response.status_code}: {response.text[:500]}")


def cp_round(setup: Setup, number: int, result: Round) -> None:
    dest = setup.work / f"cp-{number}"
    shutil.rmtree(dest, ignore_errors=True)
    setup.work.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        subprocess.run(["cp", "-r", str(setup.model.root), str(dest)], check=True)
        result.cp = time.perf_counter() - start
    except subprocess.CalledProcessError as exc:
        raise BenchError(f"cp -r failed with exit status {exc.returncode}") from exc
    finally:
        shutil.rmtree(dest, ignore_errors=True)


# --- MLflow's installation ------------------------------------------------------------


def find_mlflow(given: Path | None, scratch: Path) -> Path:
    """``--mlflow``, else ``mlflow`` on PATH, else the scratch venv's, else install it there."""
    if given is not None:
        if not os.access(given, os.X_OK):
            raise BenchError(f"--mlflow {given} is not an executable file")
        return given
    on_path = shutil.which("mlflow")
    if on_path:
        return Path(on_path)
    venv = scratch / "mlflow-venv"
    exe = venv / "bin" / "mlflow"
    if exe.exists():
        return exe
    log(f"mlflow is not on PATH: creating {venv} with `python -m venv` + `pip install mlflow`")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "mlflow"]
    done = subprocess.run(pip, capture_output=True, text=True, check=False)
    if done.returncode or not exe.exists():
        raise BenchError(f"`pip install mlflow` failed:\n{done.stderr.strip()[-2000:]}")
    log(f"installed {first_line(exe, '--version')}")
    return exe


def first_line(*argv: str | Path) -> str:
    try:
        done = subprocess.run(list(map(str, argv)), capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unavailable"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "unavailable"


def package_version(python: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    return first_line(python, "-c", code)


# --- the report ------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def mb_per_s(nbytes: int, seconds: float) -> float:
    return nbytes / MB / seconds


def machine_line() -> str:
    load = os.getloadavg()[0]
    return (
        f"machine: {machine()}, {ssl.OPENSSL_VERSION}; "
        f"1-minute load average {load:.2f} before the runs"
    )


def report(setup: Setup, rounds: list[Round], header: list[str]) -> str:
    nbytes = setup.model.nbytes
    cp = median([r.cp for r in rounds])
    lines = [*header, ""]
    lines.append(
        f"{'case':<6}{'Bastion':>12}{'MLflow':>12}{'ratio':>8}{'cp':>12}"
        f"{'Bastion RSS':>14}{'MLflow RSS':>13}"
    )
    verdicts = []
    for case in CASES:
        b = median([r.bastion[case].seconds for r in rounds])
        m = median([r.mlflow[case].seconds for r in rounds])
        b_rss = max(r.bastion[case].peak_rss for r in rounds)
        m_rss = max(r.mlflow[case].peak_rss for r in rounds)
        ratio = m / b
        lines.append(
            f"{case:<6}{mb_per_s(nbytes, b):>7.0f} MB/s{mb_per_s(nbytes, m):>7.0f} MB/s"
            f"{ratio:>7.2f}x{mb_per_s(nbytes, cp):>7.0f} MB/s"
            f"{human_bytes(b_rss):>14}{human_bytes(m_rss):>13}"
        )
        verdicts.append((f"{case}: Bastion >= {RATIO_TARGET:.0f}x MLflow", f"{ratio:.2f}x", ratio))
    lines.append("")
    lines.append("seconds per transfer (median, then every round):")
    for case in CASES:
        for tool in ("bastion", "mlflow"):
            times = [getattr(r, tool)[case].seconds for r in rounds]
            shown = " ".join(f"{t:.2f}" for t in times)
            lines.append(f"  {case:<5} {tool:<8} {median(times):7.2f} s   [{shown}]")
    cps = " ".join(f"{r.cp:.2f}" for r in rounds)
    lines.append(f"  cp -r          {cp:7.2f} s   [{cps}]")
    lines.append("")
    lines.append(
        "CPU seconds per transfer (median): client + server = total; the least wall time "
        f"that total allows on this machine's {os.cpu_count()} cores, and the transfer's"
    )
    for case in CASES:
        for tool in ("bastion", "mlflow"):
            done = [getattr(r, tool)[case] for r in rounds]
            client = median([t.client_cpu for t in done])
            server = median([t.server_cpu for t in done])
            total = median([t.client_cpu + t.server_cpu for t in done])
            lines.append(
                f"  {case:<5} {tool:<8} {client:5.1f} + {server:5.1f} = {total:5.1f} s"
                f"   at least {total / (os.cpu_count() or 1):5.2f} s, took "
                f"{median([t.seconds for t in done]):5.2f} s"
            )
    mlflow_single = max(r.mlflow[c].peak_single for r in rounds for c in CASES)
    before = {
        tool: median([getattr(r, tool)[c].rss_before for r in rounds for c in CASES])
        for tool in ("bastion", "mlflow")
    }
    hwm = max(r.bastion_hwm for r in rounds)
    lines.append("")
    lines.append(
        f"peak RSS: the largest sample over the rounds (every {SAMPLE_SECONDS * 1000:.0f} ms); "
        f"Bastion: one process (its VmHWM over its whole life: {human_bytes(hwm)}); "
        f"MLflow: the sum over its process tree (largest single process "
        f"{human_bytes(mlflow_single)}); before a transfer (median): Bastion "
        f"{human_bytes(before['bastion'])}, MLflow {human_bytes(before['mlflow'])}"
    )
    settle = {t: median([r.settle[t] for r in rounds]) for t in ("bastion", "mlflow")}
    lines.append(
        f"after answering its health check, each server was left until its process tree was "
        f"idle: median {settle['bastion']:.1f} s for Bastion, {settle['mlflow']:.1f} s for MLflow"
    )
    b_rss = max(r.bastion[c].peak_rss for r in rounds for c in CASES)
    lines.append("")
    lines.append(f"{'targets (from the issue)':<44}{'measured':>12}  verdict")
    for label, shown, ratio in verdicts:
        lines.append(f"  {label:<42}{shown:>12}  {'met' if ratio >= RATIO_TARGET else 'MISSED'}")
    label = "Bastion server RSS < 300 MB in transfers"
    verdict = "met" if b_rss < RSS_TARGET else "MISSED"
    lines.append(f"  {label:<42}{b_rss / MB:>9.0f} MB  {verdict}")
    return "\n".join(lines)


def to_json(rounds: list[Round]) -> list[dict[str, Any]]:
    def transfer(t: Transfer) -> dict[str, Any]:
        return {
            "seconds": t.seconds,
            "peak_rss": t.peak_rss,
            "peak_single": t.peak_single,
            "rss_before": t.rss_before,
            "client_cpu_seconds": t.client_cpu,
            "server_cpu_seconds": t.server_cpu,
        }

    return [
        {
            "bastion": {c: transfer(t) for c, t in r.bastion.items()},
            "mlflow": {c: transfer(t) for c, t in r.mlflow.items()},
            "cp_seconds": r.cp,
            "bastion_vmhwm": r.bastion_hwm,
            "settle_seconds": r.settle,
        }
        for r in rounds
    ]


# --- main ------------------------------------------------------------------------------


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # runs the finally blocks that stop the servers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_options(parser, default_runs=3, quick_help="4 x 64 MiB and 1 round")
    parser.add_argument(
        "--mlflow",
        type=Path,
        help="the mlflow executable (default: mlflow on PATH, else SCRATCH/mlflow-venv/bin/"
        "mlflow, else that venv is created with pip install mlflow)",
    )
    args = parse_common(parser, argv)
    signal.signal(signal.SIGTERM, _terminate)
    scratch: Path = args.scratch.resolve()
    try:
        return run(args, scratch)
    except BenchError as exc:
        log(f"failed: {exc}")
        return 1


def run(args: argparse.Namespace, scratch: Path) -> int:
    bastion_exe = Path(sys.executable).parent / "bastion"
    if not bastion_exe.exists():
        raise BenchError(f"{bastion_exe} is missing; run `make venv` first")
    mlflow_exe = find_mlflow(args.mlflow, scratch)
    model = build_model(scratch, QUICK if args.quick else FULL)
    report_found = bastion.scan(model.root)
    if report_found.at_or_above(bastion.Severity.LOW):
        raise BenchError(f"the benchmark model does not scan clean: {report_found.to_dict()}")
    warmup = build_warmup(scratch)
    key = bastion.generate_key("ed25519")
    signatures = scratch / "signatures"
    signatures.mkdir(parents=True, exist_ok=True)
    log(f"signing {model.root} (not timed)")
    for signed in (model, warmup):
        bastion.sign(signed.root, key, signature_path=signatures / f"{signed.root.name}.sig")
    setup = Setup(
        scratch=scratch,
        model=model,
        signature=signatures / f"{model.root.name}.sig",
        warmup=warmup,
        warmup_signature=signatures / f"{warmup.root.name}.sig",
        trust=bastion.TrustPolicy.for_keys([key.public_key]),
        bastion_exe=bastion_exe,
        mlflow_exe=mlflow_exe,
    )
    header = [
        f"Bastion hub transfer benchmark, {date.today().isoformat()}",
        machine_line(),
        f"bastion: {first_line(bastion_exe, '--version')} (uvicorn "
        f"{package_version(Path(sys.executable), 'uvicorn')}, httpx {httpx.__version__})",
        f"mlflow: {first_line(mlflow_exe, '--version')} ({mlflow_exe})",
        f"model: {model.describe()}",
        f"medians of {args.runs} round(s); each round starts both servers fresh, waits until "
        f"each is idle and sends it a {human_bytes(warmup.nbytes)} model (not timed), reads "
        "every model file once (warm page cache), alternates which server goes first, and "
        "ends with cp -r",
        "Bastion: bastion serve, TLS (its generated CA) on 127.0.0.1, SQLite; Client.push with "
        "the existing signature (hash + encrypt + write, then commit: digests, signature, "
        "a scan of the stored blobs in place), Client.pull (decrypt, hash, verify, rename)",
        "MLflow: mlflow server --serve-artifacts, plain HTTP (it serves no TLS), its default "
        f"workers; httpx PUT/GET /api/2.0/mlflow-artifacts/artifacts/<path>, {SDK_CHUNK // MIB} "
        "MiB chunks as Bastion's client; nothing hashed or encrypted",
        "durability: Bastion fsyncs every stored blob (and its folder) before answering the "
        "commit; MLflow writes a temporary file and renames it, without fsync",
        "MB/s = 10^6 bytes of model per second of the whole transfer; ratio = Bastion MB/s / "
        "MLflow MB/s; cp: one cp -r of the folder per round, the same figure on both rows",
    ]
    rounds: list[Round] = []
    try:
        for number in range(args.runs):
            log(f"round {number + 1} of {args.runs}")
            result = Round()
            warm(model.files)
            tools = [bastion_round, mlflow_round]
            for step in tools if number % 2 == 0 else tools[::-1]:
                step(setup, number, result)
            warm(model.files)
            cp_round(setup, number, result)
            rounds.append(result)
            for case in CASES:
                b, m = result.bastion[case], result.mlflow[case]
                log(
                    f"  {case}: bastion {b.seconds:.2f} s ({human_bytes(b.peak_rss)}), "
                    f"mlflow {m.seconds:.2f} s ({human_bytes(m.peak_rss)}), cp {result.cp:.2f} s"
                )
    finally:
        shutil.rmtree(setup.work, ignore_errors=True)
    results = scratch / "hub-results.json"
    results.write_text(json.dumps({"header": header, "rounds": to_json(rounds)}, indent=2))
    print(report(setup, rounds, header))
    print(f"\nevery round's figures: {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
