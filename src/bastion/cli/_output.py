"""Printing results: one JSON document on stdout with ``--json``, text otherwise.

Human-readable text goes to stdout only when it *is* the result (a digest);
commentary goes to stderr, so scripts can rely on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

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
