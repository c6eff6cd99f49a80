"""``bastion rollout promote|rollback``, ``bastion deployments ls|show|rm`` and
``bastion records export``: change and inspect the gateway's deployments."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from bastion.cli._hub import add_hub_options, open_client
from bastion.cli._output import add_json_flag, emit
from bastion.cli.deploy import describe
from bastion.errors import UsageError

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rollout = sub.add_parser("rollout", help="promote or roll back a deployment's candidate")
    actions = rollout.add_subparsers(dest="rollout_action", required=True, metavar="ACTION")
    promote = actions.add_parser("promote", help="the candidate becomes the stable version")
    rollback = actions.add_parser("rollback", help="drop the candidate")
    rollback.add_argument("--reason", default="", help="why, for the audit log")
    for p in (promote, rollback):
        p.add_argument("name", help="the deployment")
    deployments = sub.add_parser("deployments", help="list, show or remove deployments")
    d_actions = deployments.add_subparsers(
        dest="deployments_action", required=True, metavar="ACTION"
    )
    ls = d_actions.add_parser("ls", help="the deployments you can see")
    show = d_actions.add_parser("show", help="one deployment: plan, workers, revisions")
    rm = d_actions.add_parser("rm", help="stop serving a deployment and remove it")
    for p in (show, rm):
        p.add_argument("name", help="the deployment")
    records = sub.add_parser("records", help="inference records (JSON lines, for a SIEM)")
    r_actions = records.add_subparsers(dest="records_action", required=True, metavar="ACTION")
    export = r_actions.add_parser("export", help="write the records to stdout as JSON lines")
    export.add_argument("--since", help="ISO date or time (UTC), e.g. 2026-11-01")
    export.add_argument("--until", help="ISO date or time (UTC)")
    export.add_argument("--deployment", help="only this deployment's records")
    for p in (promote, rollback, ls, show, rm):
        add_json_flag(p)
    for p in (promote, rollback, ls, show, rm, export):
        add_hub_options(p)
        p.set_defaults(run=run)


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
    with open_client(args) as client:
        if getattr(args, "rollout_action", None) == "promote":
            row = client.promote(args.name)
            emit(args, row, "promoted: " + describe(row))
        elif getattr(args, "rollout_action", None) == "rollback":
            row = client.rollback(args.name, args.reason)
            emit(args, row, "rolled back: " + describe(row))
        elif getattr(args, "deployments_action", None) == "ls":
            rows = client.deployments()
            emit(args, {"deployments": rows}, "\n".join(describe(r) for r in rows) or "(none)")
        elif getattr(args, "deployments_action", None) == "show":
            row = client.deployment(args.name)
            workers = "\n".join(
                f"  worker {ref}: pid {w['pid']}, {'up' if w['alive'] else 'down'}, "
                f"{w['restarts']} restarts"
                for ref, w in row["workers"].items()
            )
            emit(args, row, describe(row) + ("\n" + workers if workers else ""))
        elif getattr(args, "deployments_action", None) == "rm":
            client.undeploy(args.name)
            emit(args, {"removed": args.name}, f"removed {args.name}")
        else:
            lines = client.inference_records(
                since=_when(args.since, "--since"),
                until=_when(args.until, "--until"),
                deployment=args.deployment,
            )
            for line in lines:
                sys.stdout.write(line + "\n")
    return 0
