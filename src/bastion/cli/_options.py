"""Options shared by several sub-commands (hashing, ignore paths, cache, passphrase)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from bastion.config import default_cache_path

if TYPE_CHECKING:
    from bastion.signing import DigestCache

__all__ = ["add_cache_option", "add_hashing_options", "add_passphrase_option", "open_cache"]


def add_hashing_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hashing")
    group.add_argument("--hash", dest="hash_type", choices=("sha256", "blake3"), default="sha256")
    group.add_argument(
        "--method",
        choices=("files", "shards"),
        default="files",
        help="hash whole files, or fixed-size shards of them (parallel within a file)",
    )
    group.add_argument(
        "--shard-size", type=int, default=1_000_000_000, metavar="BYTES", help="default 1e9"
    )
    group.add_argument(
        "--ignore-paths",
        nargs="+",
        default=[],
        metavar="PATH",
        help="paths (relative to the model) to leave out; recorded in the signature",
    )
    group.add_argument(
        "--no-ignore-git-paths",
        dest="ignore_git_paths",
        action="store_false",
        help="also sign .git, .github, .gitignore and .gitattributes",
    )
    group.add_argument(
        "--allow-symlinks",
        action="store_true",
        help="follow symlinks to files inside the model (refused by default)",
    )


def add_cache_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="reuse digests of unchanged files (see docs/signing.md for the trust assumption); "
        "default path $BASTION_CACHE or ~/.cache/bastion/digests.sqlite",
    )


def add_passphrase_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="read the key passphrase from FILE (else $BASTION_KEY_PASSPHRASE, else a prompt)",
    )


def open_cache(value: str | None) -> DigestCache | None:
    if value is None:
        return None
    from bastion.signing import DigestCache

    return DigestCache(value or default_cache_path())
