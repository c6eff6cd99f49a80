"""``bastion rollout promote|rollback`` and ``bastion deployments ls|show|rm``: change and
inspect the gateway's deployments."""

from __future__ import annotations

import argparse

from bastion.cli._hub import add_hub_options, open_client
from bastion.cli._output import add_json_flag, emit
from bastion.cli.deploy import describe

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
    for p in (promote, rollback, ls, show, rm):
        add_json_flag(p)
        add_hub_options(p)
        p.set_defaults(run=run)


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
        else:
            client.undeploy(args.name)
            emit(args, {"removed": args.name}, f"removed {args.name}")
    return 0
