"""``bastion verify``: check a model against its signature(s) and a trust decision."""

from __future__ import annotations

import argparse
import json
import sys

from bastion.cli._options import add_cache_option, open_cache
from bastion.cli._output import add_json_flag, emit
from bastion.errors import UsageError, VerificationError

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("verify", help="verify a model's signature and files")
    p.add_argument("model", help="model folder or file")
    trust = p.add_mutually_exclusive_group(required=True)
    trust.add_argument("--public-key", help="trust this PEM public key")
    trust.add_argument("--trust", metavar="TOML", help="trust what this policy file says")
    trust.add_argument("--ca", metavar="PEM", help="trust certificates chaining to these roots")
    p.add_argument(
        "--identity",
        action="append",
        default=None,
        help="with --ca (required): accepted certificate identity (e-mail, URI, DNS or CN), "
        "or '*' for any; repeatable",
    )
    p.add_argument(
        "--signature",
        action="append",
        default=None,
        help="bundle to check (default MODEL/model.sig); repeat for several signers",
    )
    add_cache_option(p)
    add_json_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bastion.signing import TrustPolicy, verify

    if args.identity and not args.ca:
        raise UsageError("--identity only applies with --ca")
    if args.ca and not args.identity:
        raise UsageError(
            "--ca needs at least one --identity: name the accepted signer, or use "
            "--identity '*' to accept any identity the CA certifies"
        )
    trust = TrustPolicy.from_file(args.trust) if args.trust else None
    cache = open_cache(args.cache)
    try:
        result = verify(
            args.model,
            trust=trust,
            public_key=args.public_key,
            ca=args.ca,
            identities=args.identity or (),
            signatures=args.signature,
            cache=cache,
        )
    except VerificationError as exc:
        if args.json and exc.result is not None:
            # The diagnosis goes to stderr via main(); the detail is the result.
            body = {"ok": False, "error": exc.to_dict()}
            print(json.dumps(body, indent=2))
            print(f"bastion: error [{exc.code}]: {exc.message}", file=sys.stderr)
            return exc.exit_code
        raise
    finally:
        if cache is not None:
            cache.close()
    signers = ", ".join(f"{s.name} ({s.algorithm})" for s in result.signers)
    for note in result.notes:
        print(f"bastion: note: {note}", file=sys.stderr)
    emit(
        args,
        result.to_dict(),
        f"verified {result.model}: {result.files} file(s), {result.root_digest}, "
        f"signed by {signers}",
    )
    return 0
