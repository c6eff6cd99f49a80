"""``bastion login``: remember a hub, its CA and an API key (file mode 0600)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from bastion.cli._output import add_json_flag, emit

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("login", help="remember a hub URL, its CA and an API key")
    p.add_argument("url", help="the hub, e.g. https://127.0.0.1:8443")
    p.add_argument("--token", help="the API key (prefer --token-file or the prompt)")
    p.add_argument("--token-file", help="file holding the API key")
    p.add_argument("--ca", help="PEM CA certificate of the hub (e.g. .bastion/tls/ca.crt)")
    add_json_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bastion._files import read_input
    from bastion.client import Client, Login, save_login
    from bastion.errors import UsageError

    token = args.token
    if args.token_file:
        token = read_input(args.token_file, "token file", limit=4096).decode().strip()
    if not token:
        token = os.environ.get("BASTION_TOKEN")
    if not token and sys.stdin.isatty():
        token = getpass.getpass("API key: ").strip()
    if not token:
        raise UsageError("give the API key with --token-file, BASTION_TOKEN or at the prompt")
    ca = os.path.abspath(args.ca) if args.ca else None
    with Client(args.url, token=token, ca=ca) as client:
        who = client.whoami()
    path = save_login(Login(args.url.rstrip("/"), token, ca))
    roles = ", ".join(f"{r['role']} on {r['namespace']}" for r in who["roles"])
    emit(
        args,
        {
            "ok": True,
            "url": args.url,
            "key": who["key_id"],
            "name": who["name"],
            "saved": str(path),
        },
        f"logged in to {args.url} as {who['name']} ({roles}); saved in {path}",
    )
    return 0
