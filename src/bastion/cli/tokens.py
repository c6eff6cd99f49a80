"""``bastion tokens create|ls|revoke``: API keys with roles on namespaces (admin only)."""

from __future__ import annotations

import argparse

from bastion.cli._hub import add_hub_options, open_client
from bastion.cli._output import add_json_flag, emit, note

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tokens", help="API keys for people and pipelines")
    actions = p.add_subparsers(dest="tokens_action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create an API key; its token is shown once")
    create.add_argument("name")
    create.add_argument(
        "--role",
        required=True,
        choices=("reader", "publisher", "admin"),
        help="the role it holds on each --namespace",
    )
    create.add_argument(
        "--namespace", action="append", required=True, help="namespace ('*' for all); repeatable"
    )
    create.add_argument("--expires", default="90d", help="lifetime in days, e.g. 30d (default 90d)")
    ls = actions.add_parser("ls", help="list API keys (never their tokens)")
    revoke = actions.add_parser("revoke", help="revoke an API key now")
    revoke.add_argument("key_id")
    for q in (create, ls, revoke):
        add_hub_options(q)
        add_json_flag(q)
        q.set_defaults(run=run)


def _days(text: str) -> int:
    from bastion.errors import UsageError

    value = text.removesuffix("d")
    if not value.isdigit() or not 1 <= int(value) <= 3650:
        raise UsageError(f"--expires {text!r}: give a number of days from 1 to 3650, e.g. 30d")
    return int(value)


def run(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        if args.tokens_action == "create":
            roles = [(ns, args.role) for ns in args.namespace]
            key = client.create_api_key(args.name, roles, expires_in_days=_days(args.expires))
            if not args.json:
                note(f"API key {key['id']} ({key['name']}), expires {key['expires_at']}.")
                note("The token below is shown once; store it now.")
            emit(args, {"ok": True, **key}, key["token"])
        elif args.tokens_action == "ls":
            rows = client.api_keys()
            text = "\n".join(
                f"{r['id']}  {r['name']:<24} "
                + ",".join(f"{b['role']}@{b['namespace']}" for b in r["roles"])
                + ("  revoked" if r["revoked_at"] else f"  expires {r['expires_at']}")
                for r in rows
            )
            emit(args, {"keys": rows}, text or "(none)")
        else:
            client.revoke_api_key(args.key_id)
            emit(args, {"ok": True, "revoked": args.key_id}, f"revoked {args.key_id}")
    return 0
