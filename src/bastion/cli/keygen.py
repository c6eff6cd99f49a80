"""``bastion keygen``: make a signing key pair."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from bastion.cli._options import add_passphrase_option
from bastion.cli._output import add_json_flag, emit, note
from bastion.config import read_passphrase
from bastion.errors import InputError, UsageError

__all__ = ["add_parser", "run"]

_log = logging.getLogger(__name__)
_TYPES = ("ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519", "ml-dsa-65", "hybrid")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keygen", help="generate a signing key pair (PREFIX.key, PREFIX.pub)")
    p.add_argument("--type", dest="key_type", choices=_TYPES, default="ecdsa-p256")
    p.add_argument(
        "--out", required=True, metavar="PREFIX", help="writes PREFIX.key and PREFIX.pub"
    )
    add_passphrase_option(p)
    p.add_argument(
        "--unencrypted",
        action="store_true",
        help="write the private key without a passphrase (not recommended)",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing key files")
    add_json_flag(p)
    p.set_defaults(run=run)


def _write(path: Path, data: bytes, mode: int, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise UsageError(f"{str(path)!r} already exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise InputError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)


def run(args: argparse.Namespace) -> int:
    from bastion.signing import generate_key

    passphrase = None
    if args.unencrypted:
        if args.passphrase_file:
            raise UsageError("--unencrypted and --passphrase-file contradict each other")
        _log.warning("writing an unencrypted private key, as --unencrypted asks")
    else:
        passphrase = read_passphrase(args.passphrase_file, confirm=True)
        if passphrase is None:
            raise UsageError(
                "the private key needs a passphrase: use --passphrase-file, "
                "BASTION_KEY_PASSPHRASE or a terminal, or pass --unencrypted"
            )
    prefix = Path(args.out)
    if prefix.name in ("", ".", ".."):
        raise UsageError(
            f"--out {args.out!r} names a folder, not the keys: give a path and a name, "
            "e.g. keys/release (writes keys/release.key and keys/release.pub)"
        )
    private_path = prefix.with_name(prefix.name + ".key")
    public_path = prefix.with_name(prefix.name + ".pub")
    if not args.force:  # before anything is written: never half a pair
        for path in (private_path, public_path):
            if path.exists() or path.is_symlink():
                raise UsageError(f"{str(path)!r} already exists; pass --force to overwrite it")
    key = generate_key(args.key_type)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    _write(private_path, key.to_pem(passphrase), 0o600, args.force)
    _write(public_path, key.public_key.pem, 0o644, args.force)
    public = key.public_key
    note(f"wrote {private_path} (private{', encrypted' if passphrase else ''}) and {public_path}")
    emit(
        args,
        {
            "ok": True,
            "type": args.key_type,
            "algorithm": public.algorithm,
            "private_key": str(private_path),
            "public_key": str(public_path),
            "fingerprint": public.fingerprint,
            "encrypted": passphrase is not None,
        },
        public.fingerprint,
    )
    return 0
