"""``bastion pull``: download a version, verified before its folder appears."""

from __future__ import annotations

import argparse

from bastion.cli._hub import Progress, add_hub_options, open_client
from bastion.cli._output import add_json_flag, emit

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "pull",
        help="download and verify a model version",
        description="The files are written to a temporary folder, verified against the "
        "signature, then renamed to DEST; a failed pull leaves nothing behind.",
    )
    p.add_argument("ref", help="namespace/model@version or namespace/model:alias")
    p.add_argument("dest", help="folder to create")
    p.add_argument("--allow-yanked", action="store_true", help="pull a yanked version anyway")
    p.add_argument(
        "--trust",
        help="verify with this trust policy instead of the namespace's policy from the hub",
    )
    add_hub_options(p)
    add_json_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bastion.cli._output import note
    from bastion.signing import TrustPolicy

    trust = TrustPolicy.from_file(args.trust) if args.trust else None
    with open_client(args) as client:
        result = client.pull(
            args.ref, args.dest, allow_yanked=args.allow_yanked, trust=trust, progress=Progress()
        )
    if result["yanked"]:
        note(f"warning: {result['ref']} is yanked")
    signers = ", ".join(s["name"] for s in result["signers"])
    emit(
        args,
        {"ok": True, **result},
        f"pulled {result['ref']} into {result['path']}: {result['files']} files, "
        f"verified (signed by {signers})",
    )
    return 0
