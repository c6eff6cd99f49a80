"""``bastion digest``: print a model's root digest (``sha256:...``)."""

from __future__ import annotations

import argparse

from bastion.cli._options import add_cache_option, add_hashing_options, open_cache
from bastion.cli._output import add_json_flag, emit

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("digest", help="print the root digest a signature would record")
    p.add_argument("model", help="model folder or file")
    add_hashing_options(p)
    add_cache_option(p)
    add_json_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bastion.signing import digest

    cache = open_cache(args.cache)
    try:
        value = digest(
            args.model,
            hash_type=args.hash_type,
            method=args.method,
            shard_size=args.shard_size,
            ignore_paths=args.ignore_paths,
            ignore_git_paths=args.ignore_git_paths,
            allow_symlinks=args.allow_symlinks,
            cache=cache,
        )
    finally:
        if cache is not None:
            cache.close()
    emit(args, {"ok": True, "model": args.model, "digest": value}, value)
    return 0
