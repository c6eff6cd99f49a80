"""``bastion scan``: statically scan a model file or folder for hidden code."""

from __future__ import annotations

import argparse
import json
import sys
import time

from bastion.cli._output import note

__all__ = ["add_parser", "run"]

_SEVERITIES = ("info", "low", "medium", "high", "critical")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "scan",
        help="scan a model for hidden code and hostile structure, without running it",
        description="Statically scan a model file or folder. Exit 0 if nothing at or above "
        "--fail-on was found, 1 if something was, 2 for a usage error.",
    )
    p.add_argument("path", help="model file or folder")
    p.add_argument(
        "--format",
        choices=("text", "json", "sarif"),
        default="text",
        help="report on stdout as text (default), JSON (schema version 1) or SARIF 2.1.0",
    )
    p.add_argument(
        "--include-git",
        action="store_true",
        help="also scan a .git folder at the top of PATH (left out by default)",
    )
    p.add_argument(
        "--json",
        dest="format",
        action="store_const",
        const="json",
        help="the same as --format json",
    )
    p.add_argument(
        "--fail-on",
        choices=_SEVERITIES,
        default="low",
        metavar="SEVERITY",
        help="exit 1 if a finding is at or above this severity: "
        f"{', '.join(_SEVERITIES)} (default low)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bastion.scanning import Severity, scan

    threshold = Severity.from_label(args.fail_on)
    started = time.monotonic()
    report = scan(args.path, include_git=args.include_git)
    failing = report.at_or_above(threshold)
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=2))
    elif args.format == "sarif":
        from bastion.scanning._sarif import to_sarif

        print(json.dumps(to_sarif(report), indent=2))
    else:
        for finding in sorted(
            report.findings, key=lambda f: (-f.severity, f.path, f.member or "", f.offset or 0)
        ):
            where = finding.path if finding.member is None else f"{finding.path}!{finding.member}"
            print(f"{finding.severity.label:<8} {where}  {finding.rule_id}  {finding.message}")
    files = len({s.path for s in report.scanned})
    verdict = (
        f"{len(failing)} finding(s) at or above {threshold.label}"
        if failing
        else f"no findings at or above {threshold.label}"
    )
    note(
        f"bastion: scanned {files} file(s) in {time.monotonic() - started:.1f}s: "
        f"{len(report.findings)} finding(s); {verdict}"
    )
    sys.stdout.flush()
    return 1 if failing else 0
