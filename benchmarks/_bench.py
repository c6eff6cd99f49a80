"""What every benchmark script shares: units, progress output, and the common options.

Imported by the scripts in this folder (``python benchmarks/NAME.py`` puts the folder on
``sys.path``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIB = 1 << 20
GB = 10**9
CHUNK = 1 * MIB  # read and write size when building and warming inputs


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def add_common_options(
    parser: argparse.ArgumentParser, *, default_runs: int, quick_help: str
) -> None:
    """--runs, --quick and --scratch, the same in every script."""
    parser.add_argument(
        "--runs", type=int, help=f"timed runs per case (default {default_runs}; --quick: 1)"
    )
    parser.add_argument("--quick", action="store_true", help=f"{quick_help}: a smoke check")
    parser.add_argument(
        "--scratch", type=Path, default=REPO / ".bench", help="data folder (default .bench/)"
    )
    parser.set_defaults(default_runs=default_runs)


def parse_common(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else args.default_runs
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def machine() -> str:
    """``CPU model, N CPUs, RAM, Python version``: the first half of every script's machine line."""
    cpu = platform.processor() or platform.machine() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {human_bytes(memory)} RAM, "
        f"Python {platform.python_version()}"
    )


def warm(files: Iterable[Path]) -> None:
    """Read every file once, like ``cat FILES > /dev/null``: timings are warm-cache."""
    buffer = bytearray(CHUNK)
    for path in files:
        with path.open("rb", buffering=0) as fh:
            while fh.readinto(buffer):
                pass


def report_results(
    scratch: Path, name: str, document: Mapping[str, object], head: Sequence[str],
    table: Sequence[str], *, as_json: bool,
) -> None:  # fmt: skip
    """Keep every round's figures in ``scratch/NAME-results.json``; print them or the table."""
    results = scratch / f"{name}-results.json"
    results.write_text(json.dumps(document, indent=2))
    if as_json:
        print(json.dumps(document, indent=2))
    else:
        print("\n".join([*head, "", *table, "", f"every round's figures: {results}"]))
