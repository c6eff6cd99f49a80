"""``bastion keys rotate``: a new key-encryption key on the hub; data keys re-wrapped."""

from __future__ import annotations

import argparse

from bastion.cli._hub import add_hub_options, open_client
from bastion.cli._output import add_json_flag, emit

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keys", help="the hub's key-encryption keys")
    actions = p.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    rotate = actions.add_parser(
        "rotate", help="make a new key-encryption key and re-wrap every data key (no re-upload)"
    )
    add_hub_options(rotate)
    add_json_flag(rotate)
    rotate.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        result = client.rotate_kek()
    emit(
        args,
        {"ok": True, **result},
        f"key-encryption key {result['previous_kek']} -> {result['current_kek']}; "
        f"{result['rewrapped']} data keys re-wrapped",
    )
    return 0
