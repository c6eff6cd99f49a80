"""``bastion records export``: the gateway's inference records as JSON lines, for a SIEM."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from bastion.cli._hub import add_hub_options, open_client
from bastion.cli._output import add_json_flag
from bastion.errors import UsageError

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    records = sub.add_parser("records", help="inference records (JSON lines, for a SIEM)")
    actions = records.add_subparsers(dest="records_action", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="write the records to stdout as JSON lines")
    export.add_argument("--since", help="ISO date or time (UTC), e.g. 2026-11-01")
    export.add_argument("--until", help="ISO date or time (UTC)")
    export.add_argument("--deployment", help="only this deployment's records")
    add_hub_options(export)
    add_json_flag(export)
    export.set_defaults(run=run)


def _when(text: str | None, what: str) -> float | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{what}: write an ISO date or time, e.g. 2026-11-01") from None
    if moment.tzinfo is None:  # a date or time without an offset is UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def run(args: argparse.Namespace) -> int:
    since, until = _when(args.since, "--since"), _when(args.until, "--until")
    with open_client(args) as client:
        lines = client.inference_records(since=since, until=until, deployment=args.deployment)
        if args.json:
            print(json.dumps({"records": [json.loads(line) for line in lines]}, indent=2))
            return 0
        for line in lines:
            sys.stdout.write(line + "\n")
    return 0
