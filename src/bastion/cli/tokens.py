"""``bastion tokens create|ls|rotate|revoke``: API keys (service accounts), scoped to actions.

``--actions`` takes friendly names (``push``, ``pull``, ``deploy``, ``invoke``, ``audit``),
Cedar action names (``version.pull``) or action groups (``consume``); the key may use only
those. Without ``--role``, the key's role on each namespace follows from its actions.
"""

from __future__ import annotations

import argparse

from bastion._key_text import key_id_of
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
        choices=("admin", "publisher", "deployer", "consumer", "invoker", "auditor"),
        help="the role it holds on each --namespace (default: what --actions need)",
    )
    create.add_argument(
        "--actions",
        help="comma-separated: push, pull, deploy, invoke, audit, or action names/groups "
        "(default: everything its role allows)",
    )
    create.add_argument(
        "--namespace", action="append", required=True, help="namespace ('*' for all); repeatable"
    )
    create.add_argument("--expires", default="90d", help="lifetime in days, e.g. 30d (default 90d)")
    ls = actions.add_parser("ls", help="list API keys (never their tokens)")
    revoke = actions.add_parser("revoke", help="revoke an API key now")
    revoke.add_argument("key_id")
    rotate = actions.add_parser("rotate", help="give an API key a new secret; the old one stops")
    rotate.add_argument("key_id")
    for q in (create, ls, revoke, rotate):
        add_hub_options(q)
        add_json_flag(q)
        q.set_defaults(run=run)


def _days(text: str) -> int:
    from bastion.errors import UsageError

    value = text.removesuffix("d")
    if not value.isdigit() or not 1 <= int(value) <= 3650:
        raise UsageError(f"--expires {text!r}: give a number of days from 1 to 3650, e.g. 30d")
    return int(value)


#: Friendly action names: (the role they need, the scope they grant).
FRIENDLY: dict[str, tuple[str, tuple[str, ...]]] = {
    "push": (
        "publisher",
        ("version.push", "upload.file", "upload.commit", "upload.abort", "browse"),
    ),
    "pull": ("consumer", ("consume",)),
    "deploy": ("deployer", ("deploy", "browse")),
    "invoke": ("invoker", ("invoke",)),
    "audit": ("auditor", ("audit",)),
}
_RANK = ("consumer", "invoker", "auditor", "deployer", "publisher", "admin")


def role_and_scope(role: str | None, actions: str | None) -> tuple[str, list[str] | None]:
    """The role to grant and the scope to ask for, from ``--role`` and ``--actions``."""
    from bastion.errors import UsageError

    if actions is None:
        if role is None:
            raise UsageError("give --actions (e.g. push, pull) or --role")
        return role, None
    needed: list[str] = []
    scope: list[str] = []
    for item in (a.strip() for a in actions.split(",")):
        if not item:
            continue
        if item in FRIENDLY:
            needed.append(FRIENDLY[item][0])
            scope.extend(FRIENDLY[item][1])
        else:
            scope.append(item)  # an action or a group: the hub validates it
    if not scope:
        raise UsageError("--actions names nothing; e.g. --actions push or --actions pull")
    if role is None:
        if not needed:
            raise UsageError("with only action names in --actions, give --role too")
        distinct = set(needed)
        if len(distinct) > 1 and not distinct <= {"publisher", "consumer"}:
            raise UsageError(
                f"--actions need roles {sorted(distinct)}; give one --role that covers them"
            )
        role = max(distinct, key=_RANK.index)
    return role, list(dict.fromkeys(scope))


def run(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        if args.tokens_action == "create":
            role, scope = role_and_scope(args.role, args.actions)
            roles = [(ns, role) for ns in args.namespace]
            key = client.create_api_key(
                args.name, roles, expires_in_days=_days(args.expires), scope=scope
            )
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
        elif args.tokens_action == "rotate":
            key = client.rotate_api_key(args.key_id)
            if not args.json:
                note(f"API key {key['id']} rotated; the old token no longer works.")
                note("The token below is shown once; store it now.")
            emit(args, {"ok": True, **key}, key["token"])
        else:
            client.revoke_api_key(args.key_id)
            # Named by the whole key, the key is shown by its id: its secret is not repeated.
            revoked = key_id_of(args.key_id)
            emit(args, {"ok": True, "revoked": revoked}, f"revoked {revoked}")
    return 0
