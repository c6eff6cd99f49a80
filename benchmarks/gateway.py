"""Benchmark the inference gateway next to ONNX Runtime, a minimal FastAPI wrapper and MLServer.

Run it with ``.venv/bin/python benchmarks/gateway.py [--runs N] [--quick] [--json]``;
``--seconds S`` sets the length of each wrk run, ``--targets fastapi,mlserver,...`` picks the
servers, ``--output-policy`` Bastion's output hardening.

It trains two scikit-learn models on ``load_breast_cancer`` (30 features): a logistic
regression on standardised data and a random forest of 100 trees, converts both to ONNX
(skl2onnx, no ZipMap: input ``input`` FP32 ``[-1, 30]``, outputs ``label`` and
``probabilities``), times ONNX Runtime in this process (single-row runs), then serves the
same files with a minimal FastAPI wrapper (no checks: the floor), MLServer (its own
virtual environment, ``tests/support/mlserver.py``), Bastion (``bastion serve``: TLS,
authentication, policy, rate limits, validation, output hardening, audit, each model
pushed signed and run by ``bastion deploy`` in its isolated worker) and Bastion fronting
MLServer (``bastion deploy --upstream``). ``wrk`` drives each over loopback with one row
of 30 floats as Open Inference Protocol JSON, at 1 and 16 connections, for fixed-length
runs; wrk runs on one core and the servers on another. It also sends requests Bastion must
refuse (an unknown key, a wrong shape, over a rate limit) and one wrong-shaped request to
each server. The table goes to stdout (``--json``: the figures instead; both are kept in
``.bench/gateway-results.json``), progress to stderr. Linux only (``/proc``); needs ``wrk``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import onnxruntime as ort

from _bench import REPO, BenchError, add_common_options, log, parse_common, report_results
from _gateway_report import Context, header, table
from _gateway_targets import (
    CONNECTIONS,
    FEATURES,
    MODELS,
    TARGETS,
    BastionGateway,
    Rejection,
    Target,
    deploy_available,
    pinned,
    post,
    running_bastion,
    running_fastapi,
    running_mlserver_target,
)
from _wrk import WrkResult, find_wrk, run_wrk, write_script
from hub import cpu_seconds, process_tree

__all__ = ["main"]

ROW = 7  # the data set's row sent in every request


def build_models(folder: Path) -> tuple[dict[str, Path], list[float]]:
    """The two ONNX files, and one row of the data set (30 floats) to send."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    logreg = LogisticRegression(max_iter=5000)
    forest = RandomForestClassifier(n_estimators=100, random_state=0)
    estimators = {
        "logreg": (Pipeline([("scale", StandardScaler()), ("model", logreg)]), logreg),
        "forest": (forest, forest),
    }
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for key, (estimator, classifier) in estimators.items():
        estimator.fit(x, y)
        onx = convert_sklearn(
            estimator,
            initial_types=[("input", FloatTensorType([None, FEATURES]))],
            options={id(classifier): {"zipmap": False}},
        )
        files[key] = folder / f"{key}.onnx"
        files[key].write_bytes(onx.SerializeToString())
    return files, [float(v) for v in x[ROW]]


def infer_body(row: Sequence[float]) -> bytes:
    tensor = {"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": list(row)}
    return json.dumps({"inputs": [tensor]}, separators=(",", ":")).encode()


def time_ort(onnx: Path, row: Sequence[float], repeats: int) -> float:
    """Median microseconds of one single-row ``InferenceSession.run`` (one thread)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
    feeds = {"input": np.asarray([row], dtype=np.float32)}
    for _ in range(repeats // 10):
        session.run(None, feeds)
    clock, nanos = time.perf_counter_ns, []
    for _ in range(repeats):
        start = clock()
        session.run(None, feeds)
        nanos.append(clock() - start)
    return statistics.median(nanos) / 1000


def cores() -> tuple[int | None, int | None]:
    """(wrk's core, the servers' core), or (None, None) without two cores and taskset."""
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < 2 or shutil.which("taskset") is None:
        return None, None
    return mine[0], mine[1]


@dataclass(frozen=True)
class Case:
    """One wrk run repeated each round: a URL, a Lua script, a connection count."""

    key: str  # target/model/connections, or refused/rejection/connections
    target: Target
    path: str
    script: Path
    conns: int

    @property
    def refused(self) -> bool:
        return self.key.startswith("refused/")

    def run(self, wrk: str, seconds: int, cpu: int | None) -> dict[str, Any]:
        trees = [pid for root in self.target.pids for pid in process_tree(root)]
        before = cpu_seconds(trees)
        result = run_wrk(
            wrk, self.target.base_url + self.path, self.script,
            connections=self.conns, seconds=seconds, cpu=cpu,
        )  # fmt: skip
        used = cpu_seconds(trees) - before
        figures: dict[str, Any] = result.to_dict()
        figures["server_cpu_us"] = used / max(result.requests, 1) * 1e6 if trees else None
        figures["failed"] = self.failure(result)
        return figures

    def failure(self, result: WrkResult) -> str | None:
        if result.requests == 0:
            return "no answers"
        if self.refused and result.non_2xx < result.requests:
            return f"{result.requests - result.non_2xx} of {result.requests} answers were 2xx/3xx"
        if not self.refused and result.non_2xx:
            return f"{result.non_2xx} of {result.requests} answers were not 2xx/3xx"
        if result.socket_errors:
            return f"{result.socket_errors} socket errors"
        return None


def make_cases(
    targets: Sequence[Target], rejections: Sequence[Rejection], body: bytes, scripts: Path
) -> list[Case]:
    cases = []
    for target in targets:
        for model, path in target.paths.items():
            script = write_script(scripts / f"{target.key}-{model}.lua", body, target.headers)
            for conns in CONNECTIONS:
                cases.append(Case(f"{target.key}/{model}/{conns}", target, path, script, conns))
    bastion = next((t for t in targets if t.key == "bastion"), None)
    if bastion is not None:
        for r in rejections:
            script = write_script(scripts / f"refused-{r.key}.lua", r.body, r.headers)
            for conns in CONNECTIONS:
                cases.append(Case(f"refused/{r.key}/{conns}", bastion, r.path, script, conns))
    return cases


def probe_rejections(target: Target, rejections: Sequence[Rejection]) -> dict[str, int]:
    """The status each refusal gets from a plain request (a second one if the first spent a
    limit); only those that get the expected status are driven by wrk."""
    seen = {}
    for r in rejections:
        status = post(target, r.path, r.body, r.headers).status_code
        if status != r.status:
            status = post(target, r.path, r.body, r.headers).status_code
        seen[r.key] = status
        log(f"  {r.label}: HTTP {status} (expected {r.status})")
    return seen


def has_traceback(text: str) -> bool:
    return "Traceback (most recent call last)" in text or 'File "/' in text


def wrong_shape_answers(targets: Sequence[Target], body: bytes) -> dict[str, dict[str, Any]]:
    """What each server answers to one wrong-shaped request, and whether it logs a traceback."""
    answers = {}
    for target in targets:
        logged = target.log_path.stat().st_size if target.log_path else 0
        answer = post(target, next(iter(target.paths.values())), body, target.headers)
        time.sleep(0.2)  # for the log line to land
        in_log = None
        if target.log_path is not None:
            with target.log_path.open("rb") as fh:
                fh.seek(logged)
                in_log = has_traceback(fh.read().decode(errors="replace"))
        answers[target.key] = {
            "status": answer.status_code,
            "traceback": has_traceback(answer.text),
            "traceback_in_log": in_log,
            "body": answer.text[:300],
        }
    return answers


def measure(
    args: argparse.Namespace, wrk: str, cases: list[Case], cpus: tuple[int | None, int | None]
) -> list[dict[str, dict[str, Any]]]:
    """Each round's figures per case; the case order rotates each round."""
    warmup = 1
    for case in cases:  # untimed: connections, caches, the interpreters' first calls
        case.run(wrk, warmup, cpus[0])
    rounds = []
    for number in range(args.runs):
        log(f"round {number + 1} of {args.runs}")
        shift = number * 3 % len(cases)
        result = {}
        for case in cases[shift:] + cases[:shift]:
            figures = result[case.key] = case.run(wrk, args.seconds, cpus[0])
            failed = f"  FAILED: {figures['failed']}" if figures["failed"] else ""
            log(
                f"  {case.key}: {figures['requests_per_s']:.0f} req/s, "
                f"p50 {figures['p50_ms']:.3f} ms{failed}"
            )
        rounds.append(result)
    return rounds


def versions(wrk: str) -> str:
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    wrk_version = (done.stdout or done.stderr).split(" [", 1)[0].strip() or "unknown"
    mlserver_python = REPO / ".venv-mlserver" / "bin" / "python"
    code = "import importlib.metadata as m; print(m.version('mlserver'))"
    ml = subprocess.run([mlserver_python, "-c", code], capture_output=True, text=True, check=False)
    packages = ("onnxruntime", "skl2onnx", "scikit-learn", "fastapi", "uvicorn")
    listed = ", ".join(f"{p} {metadata.version(p)}" for p in packages)
    return f"{listed}, mlserver {ml.stdout.strip() or 'unavailable'}, {wrk_version}"


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # runs the finally blocks that stop the servers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_options(parser, default_runs=3, quick_help="3 s runs and 1 round")
    parser.add_argument("--seconds", type=int, help="length of each wrk run (10; --quick: 3)")
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)}"
    )
    parser.add_argument(
        "--output-policy", default="full,round=3", help="Bastion's output hardening policy"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parse_common(parser, argv)
    args.seconds = args.seconds or (3 if args.quick else 10)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if unknown := set(args.targets) - set(TARGETS):
        parser.error(f"--targets: unknown {', '.join(sorted(unknown))}")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(args, args.scratch.resolve())
    except BenchError as exc:
        log(f"failed: {exc}")
        return 1


def run(args: argparse.Namespace, scratch: Path) -> int:
    wrk = find_wrk()
    work = scratch / "gateway-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, mode=0o700)
    cpus = cores()
    load_before = os.getloadavg()[0]
    missing: dict[str, str] = {}
    if {"bastion", "upstream"} & set(args.targets) and not deploy_available():
        for key in ("bastion", "upstream"):
            missing[key] = "bastion deploy is not in this checkout"
        log("bastion deploy is not in this checkout: the Bastion rows are n/a")
    try:
        files, row = build_models(work / "models")
        body, wrong = infer_body(row), infer_body(row[:-1])
        with pinned(cpus[1]):
            repeats = 2000 if args.quick else 20000
            raw = {m: time_ort(files[m], row, repeats) for m in MODELS}
        log("raw ONNX Runtime: " + ", ".join(f"{m} {us:.1f} µs" for m, us in raw.items()))
        with contextlib.ExitStack() as stack:
            targets, gateway = start_targets(args, stack, files, body, wrong, cpus, missing)
            refusals = gateway.rejections if gateway and "bastion" in args.targets else ()
            refused = probe_rejections(gateway.gateway, refusals) if gateway else {}
            answers = wrong_shape_answers(targets, wrong)
            usable = [r for r in refusals if refused[r.key] == r.status]
            cases = make_cases(targets, usable, body, work / "wrk")
            rounds = measure(args, wrk, cases, cpus)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    context = Context(
        runs=args.runs, seconds=args.seconds, cpus=cpus, raw_us=raw, repeats=repeats,
        labels={t.key: t.label for t in targets}, missing=missing, refused=refused,
        rejections=refusals, answers=answers,
        output_policy=args.output_policy,
    )  # fmt: skip
    head = header(context, versions(wrk), (load_before, os.getloadavg()[0]))
    lines = table(context, rounds)
    document = {"header": head, "table": lines, "raw_ort_us": raw, "rounds": rounds}
    report_results(scratch, "gateway", document, head, lines, as_json=args.json)
    return 0


def start_targets(
    args: argparse.Namespace,
    stack: contextlib.ExitStack,
    files: dict[str, Path],
    body: bytes,
    wrong: bytes,
    cpus: tuple[int | None, int | None],
    missing: dict[str, str],
) -> tuple[list[Target], BastionGateway | None]:
    work, server_cpu = args.scratch.resolve() / "gateway-work", cpus[1]
    targets: list[Target] = []
    if "fastapi" in args.targets:
        log("starting the minimal FastAPI wrapper")
        targets.append(stack.enter_context(running_fastapi(files, work, body, server_cpu)))
    mlserver = None
    if {"mlserver", "upstream"} & set(args.targets):
        log("starting MLServer")
        mlserver = stack.enter_context(running_mlserver_target(files, work, body, server_cpu))
        if "mlserver" in args.targets:
            targets.append(mlserver)
    gateway = None
    if {"bastion", "upstream"} & set(args.targets) and "bastion" not in missing:
        log("starting bastion serve, pushing and deploying the models")
        upstream = mlserver if "upstream" in args.targets else None
        bodies = {"valid": body, "wrong_shape": wrong}
        try:
            gateway = stack.enter_context(
                running_bastion(
                    files, work, bodies, server_cpu,
                    output_policy=args.output_policy, upstream=upstream,
                )
            )  # fmt: skip
        except BenchError as exc:
            raise BenchError(
                f"{exc}\n(--targets fastapi,mlserver measures without Bastion)"
            ) from exc
        if "bastion" in args.targets:
            targets.append(gateway.gateway)
        if gateway.upstream is not None:
            targets.append(gateway.upstream)
    return targets, gateway


if __name__ == "__main__":
    sys.exit(main())
