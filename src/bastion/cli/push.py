"""``bastion push``: upload a signed model folder as a new version (admitted or quarantined)."""

from __future__ import annotations

import argparse

from bastion.cli._hub import Progress, add_hub_options, open_client
from bastion.cli._options import add_passphrase_option
from bastion.cli._output import add_json_flag, emit, warn_if_shared

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "push",
        help="upload a signed model folder to the hub",
        description="Exit 0: published; 1: quarantined (signature, digests or scan); "
        "2: bad input; 4: not allowed.",
    )
    p.add_argument("model", help="the model folder")
    p.add_argument("ref", help="namespace/model@version")
    p.add_argument("--sign-with", metavar="KEY", help="sign with this private key first")
    p.add_argument("--signature", help="the signature bundle (default: MODEL/model.sig)")
    add_passphrase_option(p)
    add_hub_options(p)
    add_json_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bastion.config import read_passphrase

    passphrase = read_passphrase(args.passphrase_file) if args.sign_with else None
    with open_client(args) as client:
        result = client.push(
            args.model,
            args.ref,
            key=args.sign_with,
            passphrase=passphrase,
            signature=args.signature,
            progress=Progress(),
        )
    if args.sign_with:  # said once the key has proved to be one
        warn_if_shared(args.sign_with, "private key")
    emit(
        args,
        {"ok": True, **result},
        f"published {result['ref']} ({result['files']} files, {result['bytes']} bytes)",
    )
    return 0
