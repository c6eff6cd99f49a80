"""Printing results: one JSON document on stdout with ``--json``, text otherwise.

Human-readable text goes to stdout only when it *is* the result (a digest);
commentary goes to stderr, so scripts can rely on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from typing import Any

from bastion._files import others_may_read

__all__ = ["add_json_flag", "emit", "note"]


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def emit(args: argparse.Namespace, document: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(text)


def note(message: str) -> None:
    print(message, file=sys.stderr)


def warn_if_shared(path: str | os.PathLike[str], what: str) -> None:
    """Say on stderr when a file holding a secret is open to group or others.

    Signing reads such a key all the same (model-signing and openssl do), but anyone else
    on the machine may have read it too. A path that cannot be examined is left to the
    reader, which names the problem.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return
    if stat.S_ISREG(mode) and (problem := others_may_read(path, what, mode)):
        note(f"warning: {problem}")
