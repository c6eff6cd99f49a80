"""``bastion sign``: sign a model folder or file, writing an OMS bundle."""

from __future__ import annotations

import argparse

from bastion.cli._options import (
    add_cache_option,
    add_hashing_options,
    add_passphrase_option,
    open_cache,
)
from bastion.cli._output import add_json_flag, emit, note, warn_if_shared
from bastion.config import read_passphrase
from bastion.errors import PassphraseError

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sign", help="sign a model (writes MODEL/model.sig)")
    p.add_argument("model", help="model folder or file")
    p.add_argument("--key", required=True, help="PEM private key file")
    p.add_argument("--cert", help="signing certificate (PEM) matching the key")
    p.add_argument(
        "--chain", nargs="+", default=[], metavar="PEM", help="intermediate certificates"
    )
    p.add_argument("--signature", help="where to write the bundle (default MODEL/model.sig)")
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing file at the signature path that is not a signature bundle",
    )
    add_passphrase_option(p)
    add_hashing_options(p)
    add_cache_option(p)
    add_json_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bastion._files import read_input
    from bastion.signing import PrivateKey, sign
    from bastion.signing._keys import MAX_KEY_FILE

    data = read_input(args.key, "private key", limit=MAX_KEY_FILE)
    passphrase = None
    if b"ENCRYPTED" in data:
        passphrase = read_passphrase(args.passphrase_file, prompt="Key passphrase: ")
        if passphrase is None:
            raise PassphraseError(
                f"private key {args.key!r} is encrypted; give its passphrase "
                "(--passphrase-file, BASTION_KEY_PASSPHRASE, or run in a terminal)"
            )
    key = PrivateKey.from_pem(data, passphrase, source=f"private key {args.key!r}")
    warn_if_shared(args.key, "private key")
    cache = open_cache(args.cache)
    try:
        result = sign(
            args.model,
            key,
            certificate=args.cert,
            chain=args.chain,
            signature_path=args.signature,
            hash_type=args.hash_type,
            method=args.method,
            shard_size=args.shard_size,
            ignore_paths=args.ignore_paths,
            ignore_git_paths=args.ignore_git_paths,
            allow_symlinks=args.allow_symlinks,
            cache=cache,
            overwrite=args.force,
        )
    finally:
        if cache is not None:
            cache.close()
    note(f"signed {result.resources} resource(s) of {result.model} with {result.algorithm}")
    emit(args, {"ok": True, **result.to_dict()}, f"{result.signature} {result.root_digest}")
    return 0
