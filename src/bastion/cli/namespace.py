"""``bastion namespace create|ls|trust``: namespaces and their signing trust policies."""

from __future__ import annotations

import argparse

from bastion.cli._hub import add_hub_options, open_client
from bastion.cli._output import add_json_flag, emit

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("namespace", help="create and list namespaces on the hub")
    actions = p.add_subparsers(dest="namespace_action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a namespace with its trust policy")
    create.add_argument("name")
    create.add_argument("--trust", required=True, help="trust policy (TOML) for its signatures")
    trust = actions.add_parser("trust", help="replace a namespace's trust policy")
    trust.add_argument("name")
    trust.add_argument("--trust", required=True, help="trust policy (TOML)")
    ls = actions.add_parser("ls", help="list the namespaces you can read")
    for q in (create, trust, ls):
        add_hub_options(q)
        add_json_flag(q)
        q.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bastion.signing import TrustPolicy

    with open_client(args) as client:
        if args.namespace_action == "ls":
            rows = client.namespaces()
            emit(args, {"namespaces": rows}, "\n".join(r["name"] for r in rows) or "(none)")
            return 0
        policy = TrustPolicy.from_file(args.trust)
        if args.namespace_action == "create":
            row = client.create_namespace(args.name, policy)
            emit(args, row, f"created namespace {row['name']}")
        else:
            row = client.set_trust(args.name, policy)
            emit(args, row, f"replaced the trust policy of {row['name']}")
    return 0
