"""``bastion alias set``, ``bastion yank`` and ``bastion classify``: point aliases at versions,
withdraw versions, label a model's data classification for the policies."""

from __future__ import annotations

import argparse

from bastion.cli._hub import add_hub_options, open_client
from bastion.cli._output import add_json_flag, emit

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    alias = sub.add_parser("alias", help="manage a model's aliases (e.g. prod)")
    actions = alias.add_subparsers(dest="alias_action", required=True, metavar="ACTION")
    set_ = actions.add_parser("set", help="point an alias at a published version")
    set_.add_argument("model", help="namespace/model")
    set_.add_argument("alias")
    set_.add_argument("version")
    set_.set_defaults(what="alias")
    yank = sub.add_parser("yank", help="withdraw a version: pulls refuse it unless --allow-yanked")
    yank.add_argument("ref", help="namespace/model@version")
    yank.add_argument("--reason", required=True, help="why, e.g. a CVE id")
    yank.set_defaults(what="yank")
    classify = sub.add_parser(
        "classify", help="set a model's data classification, which policies can test"
    )
    classify.add_argument("model", help="namespace/model")
    classify.add_argument("classification", help="e.g. public, internal, restricted")
    classify.set_defaults(what="classify")
    for p in (set_, yank, classify):
        add_hub_options(p)
        add_json_flag(p)
        p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        if args.what == "alias":
            row = client.set_alias(args.model, args.alias, args.version)
            was = f" (was {row['previous']})" if row["previous"] else ""
            emit(args, row, f"{row['model']}:{row['alias']} -> {row['version']}{was}")
        elif args.what == "classify":
            row = client.classify(args.model, args.classification)
            emit(args, row, f"{row['name']} is {row['classification']}")
        else:
            row = client.yank(args.ref, args.reason)
            emit(args, row, f"yanked {row['ref']}: {row['reason']}")
    return 0
