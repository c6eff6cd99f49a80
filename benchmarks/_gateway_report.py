"""The table of benchmarks/gateway.py: medians over the rounds, ratios, the issue's targets."""

from __future__ import annotations

import statistics
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import bastion
from _bench import REPO, machine
from _gateway_targets import CONNECTIONS, FEATURES, MODELS, TARGET_LABELS, TARGETS, Rejection

__all__ = ["Context", "header", "table"]

THROUGHPUT_TARGET = 2.0  # "at least twice MLServer's throughput"
P50_TARGET_MS = 0.6  # "with p50 under 0.6 ms" (one connection: at 16 it is queueing)
ROW_LABELS = {"raw": "raw ONNX Runtime, in-process"}


@dataclass(frozen=True)
class Context:
    """What the report says besides the rounds' figures."""

    runs: int
    seconds: int
    cpus: tuple[int | None, int | None]
    raw_us: Mapping[str, float]
    repeats: int
    labels: Mapping[str, str]  # target key -> label, in the order served
    missing: Mapping[str, str]  # target key -> why it has no figures
    refused: Mapping[str, int]  # rejection key -> the status a plain request got
    rejections: Sequence[Rejection]
    answers: Mapping[str, Mapping[str, Any]]  # target key -> its answer to a wrong shape
    output_policy: str
    extra: list[str] = field(default_factory=list)


def cell(rounds: list[dict[str, dict[str, Any]]], key: str) -> dict[str, Any] | None:
    """Medians over the rounds that did not fail; None if the case never ran."""
    runs = [r[key] for r in rounds if key in r]
    if not runs:
        return None
    good = [f for f in runs if not f["failed"]]
    figures: dict[str, Any] = {"failed": len(runs) - len(good), "why": runs[-1]["failed"]}
    for name in ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_us"):
        values = [f[name] for f in good if f[name] is not None]
        figures[name] = statistics.median(values) if values else None
    return figures


def figure(rounds: list[dict[str, dict[str, Any]]], key: str, name: str) -> float | None:
    c = cell(rounds, key)
    return None if c is None or c[name] is None else float(c[name])


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def row_text(label: str, rounds: list[dict[str, dict[str, Any]]], prefix: str) -> str:
    parts = [f"{label:<32}"]
    failures = []
    for conns in CONNECTIONS:
        c = cell(rounds, f"{prefix}/{conns}")
        if c is None or c["requests_per_s"] is None:
            parts.append(f"{'-':>10}{'-':>10}{'-':>10}")
        else:
            parts.append(f"{c['requests_per_s']:>10,.0f}{c['p50_ms']:>10.3f}{c['p99_ms']:>10.3f}")
        if c is not None and c["failed"]:
            failures.append(f"@{conns}: {c['failed']} run(s) failed, e.g. {c['why']}")
    cpu = figure(rounds, f"{prefix}/{CONNECTIONS[-1]}", "server_cpu_us")
    parts.append(f"{_num(cpu, '.0f'):>12}")
    return "".join(parts) + ("  " + "; ".join(failures) if failures else "")


def quotient(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def columns(first: str) -> str:
    heads = [f"{h}@{c}" for c in CONNECTIONS for h in ("req/s", "p50 ms", "p99 ms")]
    return f"{first:<32}" + "".join(f"{h:>10}" for h in heads) + f"{'CPU µs/req':>12}"


def ratio(rounds: list[dict[str, dict[str, Any]]], a: str, b: str) -> float | None:
    """Throughput of case ``a`` over case ``b`` (medians), None if either has none."""
    return quotient(figure(rounds, a, "requests_per_s"), figure(rounds, b, "requests_per_s"))


def table(ctx: Context, rounds: list[dict[str, dict[str, Any]]]) -> list[str]:
    lines: list[str] = []
    for model, about in MODELS.items():
        lines += [f"[{model}: {about}, {FEATURES} features]", columns("target")]
        raw = f"{ctx.raw_us[model]:.1f} µs per row (median of {ctx.repeats:,} runs, 1 thread)"
        lines.append(f"{ROW_LABELS['raw']:<32}{raw}")
        for key in TARGETS:
            label = ctx.labels.get(key) or TARGET_LABELS[key]
            if key in ctx.missing:
                lines.append(f"{label:<32}n/a: {ctx.missing[key]}")
            elif key in ctx.labels:
                lines.append(row_text(label, rounds, f"{key}/{model}"))
        lines.append("")
    if ctx.rejections:
        lines += ["[refused by Bastion, on the first model's route]", columns("request")]
        for r in ctx.rejections:
            label = f"{r.label} ({r.status})"
            if ctx.refused.get(r.key) != r.status:
                got = ctx.refused.get(r.key)
                lines.append(f"{label:<32}n/a: a plain request got HTTP {got}")
            else:
                lines.append(row_text(label, rounds, f"refused/{r.key}"))
        lines.append("")
    lines.append("a wrong-shaped request (shape [1, 29]), one plain request to each:")
    for key, answer in ctx.answers.items():
        tb = "a traceback in its body" if answer["traceback"] else "no traceback in its body"
        if answer["traceback_in_log"] is not None:
            tb += ", " + ("one in its log" if answer["traceback_in_log"] else "none in its log")
        lines.append(
            f"  {ctx.labels[key]:<30} HTTP {answer['status']}, {tb}: {answer['body'][:90]!r}"
        )
    lines += ["", *verdicts(ctx, rounds)]
    return lines


def verdicts(ctx: Context, rounds: list[dict[str, dict[str, Any]]]) -> list[str]:
    lines = ["throughput ratios (req/s over MLServer's, same rounds' medians):"]
    for model in MODELS:
        for key in ("fastapi", "bastion", "upstream"):
            if key not in ctx.labels and key not in ctx.missing:
                continue
            shown = [
                f"@{c} {_times(ratio(rounds, f'{key}/{model}/{c}', f'mlserver/{model}/{c}'))}"
                for c in CONNECTIONS
            ]
            lines.append(f"  {model:<7} {TARGET_LABELS[key]:<30} {', '.join(shown)}")
    lines += ["", f"{'targets (from the issue)':<62}{'measured':>12}  verdict"]

    def verdict(label: str, shown: str, ok: bool | None) -> None:
        text = "n/a" if ok is None else "met" if ok else "MISSED"
        lines.append(f"  {label:<60}{shown:>12}  {text}")

    for model in MODELS:
        for c in CONNECTIONS:
            x = ratio(rounds, f"bastion/{model}/{c}", f"mlserver/{model}/{c}")
            verdict(
                f"{model}: Bastion req/s >= {THROUGHPUT_TARGET:.0f}x MLServer's @{c}",
                _times(x), None if x is None else x >= THROUGHPUT_TARGET,
            )  # fmt: skip
        p50 = figure(rounds, f"bastion/{model}/1", "p50_ms")
        verdict(
            f"{model}: Bastion p50 < {P50_TARGET_MS} ms @1",
            "n/a" if p50 is None else f"{p50:.3f} ms", None if p50 is None else p50 < P50_TARGET_MS,
        )  # fmt: skip
    first = next(iter(MODELS))
    for r in ctx.rejections:
        label = f"{r.label}: p50 @1 and CPU/req @16 < served"
        if ctx.refused.get(r.key) != r.status:
            verdict(label, f"HTTP {ctx.refused.get(r.key)}", None)
            continue
        p50_x = quotient(
            figure(rounds, f"refused/{r.key}/1", "p50_ms"),
            figure(rounds, f"bastion/{first}/1", "p50_ms"),
        )
        cpu_x = quotient(
            figure(rounds, f"refused/{r.key}/16", "server_cpu_us"),
            figure(rounds, f"bastion/{first}/16", "server_cpu_us"),
        )
        if p50_x is None or cpu_x is None:
            verdict(label, "-", None)
        else:
            verdict(label, f"{p50_x:.2f}x/{cpu_x:.2f}x", p50_x < 1 and cpu_x < 1)
    return lines


def header(ctx: Context, tools: str, load: tuple[float, float]) -> list[str]:
    commit = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%h, %cs"],
        capture_output=True, text=True, check=False,
    ).stdout.strip() or "not a git checkout"  # fmt: skip
    wrk_cpu, server_cpu = ctx.cpus
    pinning = (
        f"wrk pinned to CPU {wrk_cpu} (taskset), the servers and raw ONNX Runtime to CPU "
        f"{server_cpu} (sched_setaffinity, inherited by their children)"
        if wrk_cpu is not None
        else "not pinned (fewer than 2 CPUs or no taskset): wrk and the servers share the CPUs"
    )
    return [
        f"Bastion gateway benchmark, {date.today().isoformat()}",
        f"machine: {machine()}; 1-minute load average {load[0]:.2f} before, {load[1]:.2f} after",
        f"bastion {bastion.__version__} (commit {commit}; working tree as found); {tools}",
        f"{pinning}",
        f"wrk -t1 -c1 and -t1 -c16, {ctx.seconds} s runs, --latency; medians of {ctx.runs} "
        "round(s) after a 1 s untimed run of each case; the case order rotates each round",
        "request: POST /v2/models/NAME/infer, one row of 30 floats as Open Inference Protocol "
        "JSON (FP32 [1, 30]); served runs must get only 2xx, refused runs none",
        "FastAPI minimal: uvicorn (uvloop, httptools, 1 worker, no access log), request.json(), "
        "session.run, dict response, no checks; MLServer: 1 process (parallel_workers 0), the "
        "tests' ONNX runtime; both plain HTTP, ONNX Runtime with 1 thread",
        "Bastion: bastion serve with TLS (its generated CA), SQLite, audit log, rate limits "
        "(high enough not to refuse), an invoke-only API key, input validation, output policy "
        f"{ctx.output_policy!r}; models pushed signed (Ed25519) and run by bastion deploy",
        "CPU µs/req: user+system CPU of the serving process trees (/proc, 10 ms ticks) per "
        "request at 16 connections (upstream: Bastion and MLServer together)",
    ]
