"""``bastion users add|ls|roles|reset|unlock|rm``: the hub's people (administrators).

``add`` and ``reset`` print a one-time enrolment code (shown once, on stdout) and the
command the person runs next: ``bastion enrol URL --code CODE``.
"""

from __future__ import annotations

import argparse
from typing import Any

from bastion.cli._hub import add_hub_options, open_client
from bastion.cli._output import add_json_flag, emit, note

__all__ = ["add_parser", "run"]

ROLES = ("admin", "publisher", "deployer", "consumer", "invoker", "auditor")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("users", help="people: add, list, change roles, reset, unlock, remove")
    actions = p.add_subparsers(dest="users_action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a user; prints a one-time enrolment code")
    roles = actions.add_parser("roles", help="replace a user's roles")
    for q in (add, roles):
        q.add_argument("name")
        q.add_argument("--role", required=True, choices=ROLES, help="the role on each namespace")
        q.add_argument(
            "--namespace",
            action="append",
            required=True,
            help="namespace ('*' for all); repeatable",
        )
    ls = actions.add_parser("ls", help="list users (never a password, secret or code)")
    reset = actions.add_parser(
        "reset", help="clear a user's password and authenticator; prints a new enrolment code"
    )
    unlock = actions.add_parser("unlock", help="forget a user's failed sign-ins")
    rm = actions.add_parser("rm", help="remove a user and end their sessions")
    for q in (reset, unlock, rm):
        q.add_argument("name")
    for q in (add, ls, roles, reset, unlock, rm):
        add_hub_options(q)
        add_json_flag(q)
        q.set_defaults(run=run)


def _roles(rows: list[dict[str, str]]) -> str:
    return ",".join(f"{r['role']}@{r['namespace']}" for r in rows)


def _enrolment(args: argparse.Namespace, url: str, result: dict[str, Any], what: str) -> None:
    code = result["enrolment_code"]
    command = f"bastion enrol {url} --code {code}"
    if not args.json:
        note(f"User {result['user']} {what}; the enrolment code expires at {result['expires_at']}.")
        note("The code below is shown once; hand it to them privately. They run next:")
        note(f"  {command}")
        if url.startswith("https://"):
            note("  (adding --ca FILE if their computer does not trust the hub's certificate)")
    emit(args, {"ok": True, **result, "next": command}, code)


def _listing(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        state = "locked" if r["locked"] else r["status"]
        last = r["last_login_at"] or "never signed in"
        lines.append(f"{r['name']:<24} {state:<8} {_roles(r['roles']):<40} {last}")
    return "\n".join(lines) or "(none)"


def run(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        action = args.users_action
        if action == "add":
            bindings = [(ns, args.role) for ns in args.namespace]
            _enrolment(args, client.url, client.create_user(args.name, bindings), "added")
        elif action == "reset":
            _enrolment(args, client.url, client.reset_user(args.name), "reset")
        elif action == "ls":
            rows = client.users()
            emit(args, {"users": rows}, _listing(rows))
        elif action == "roles":
            bindings = [(ns, args.role) for ns in args.namespace]
            result = client.set_user_roles(args.name, bindings)
            emit(args, {"ok": True, **result}, f"{args.name}: {_roles(result['roles'])}")
        elif action == "unlock":
            result = client.unlock_user(args.name)
            was = "was locked" if result["unlocked"] else "was not locked"
            emit(args, {"ok": True, **result}, f"unlocked {args.name} ({was})")
        else:
            client.delete_user(args.name)
            emit(args, {"ok": True, "removed": args.name}, f"removed {args.name}")
    return 0
