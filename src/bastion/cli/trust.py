"""``bastion trust init``: write a trust policy naming keys or certificate roots."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bastion.cli._output import add_json_flag, emit, note
from bastion.errors import InputError, UsageError

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("trust", help="manage trust policies")
    actions = p.add_subparsers(dest="trust_action", required=True, metavar="ACTION")
    init = actions.add_parser("init", help="write a policy trusting the given keys or roots")
    init.add_argument(
        "--public-key", action="append", default=[], help="PEM public key to trust; repeatable"
    )
    init.add_argument("--ca", help="PEM file of root certificates to trust")
    init.add_argument(
        "--identity", action="append", default=[], help="with --ca: identity to accept; repeatable"
    )
    init.add_argument("--threshold", type=int, default=1, help="distinct signers required")
    init.add_argument("--out", required=True, help="policy file to write (TOML)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    add_json_flag(init)
    init.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bastion._files import read_input
    from bastion.signing import PublicKey, TrustedAuthority, TrustedKey, TrustPolicy
    from bastion.signing._certs import MAX_CERT_FILE, load_pem_certificates
    from bastion.signing._keys import MAX_KEY_FILE

    if args.identity and not args.ca:
        raise UsageError("--identity only applies with --ca")
    if args.ca and not args.identity:
        raise UsageError('--ca needs at least one --identity (use --identity "*" to accept any)')
    keys = []
    for path in args.public_key:
        key = PublicKey.from_pem(
            read_input(path, "public key", limit=MAX_KEY_FILE), source=f"public key {path!r}"
        )
        keys.append(TrustedKey(Path(path).stem, key))
    authorities = []
    if args.ca:
        roots = load_pem_certificates(
            read_input(args.ca, "CA certificate", limit=MAX_CERT_FILE), source=args.ca
        )
        authorities.append(TrustedAuthority(Path(args.ca).stem, tuple(roots), tuple(args.identity)))
    policy = TrustPolicy(tuple(keys), tuple(authorities), threshold=args.threshold)
    out = Path(args.out)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if args.force else os.O_EXCL)
    try:
        fd = os.open(out, flags, 0o644)
    except FileExistsError:
        raise UsageError(f"{args.out!r} already exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise InputError(f"cannot write {args.out!r}: {exc.strerror}") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(policy.to_toml())
    note(f"wrote trust policy {out}")
    emit(
        args,
        {
            "ok": True,
            "policy": str(out),
            "keys": [k.key.fingerprint for k in keys],
            "authorities": [a.name for a in authorities],
            "threshold": policy.threshold,
        },
        str(out),
    )
    return 0
