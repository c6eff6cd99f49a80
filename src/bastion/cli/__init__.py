"""The ``bastion`` command line: one thin module per sub-command.

``main`` is the single error boundary: a Bastion error becomes a one-line
diagnosis on stderr (and, with ``--json``, a JSON document on stdout) and its
documented exit code (0 ok, 1 verification failed or unsafe, 2 usage or bad
input, 3 internal error); ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import traceback
from collections.abc import Sequence

from bastion.errors import BastionError, InternalError

__all__ = ["main"]

#: Sub-command name -> module under ``bastion.cli``; imported only when used.
COMMANDS = {
    "keygen": "keygen",
    "sign": "sign",
    "verify": "verify",
    "digest": "digest",
    "trust": "trust",
    "scan": "scan",
    "convert": "convert",
    "serve": "serve",
    "login": "login",
    "logout": "login",
    "whoami": "login",
    "enrol": "enrol",
    "users": "users",
    "namespace": "namespace",
    "push": "push",
    "pull": "pull",
    "models": "catalog",
    "alias": "curate",
    "keys": "keys",
    "tokens": "tokens",
    "audit": "audit",
    "policy": "policy",
    "deploy": "deploy",
    "rollout": "rollout",
    "deployments": "rollout",
    "records": "records",
}

EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    from bastion import __version__

    parser = argparse.ArgumentParser(
        prog="bastion",
        description="Sign, verify and serve machine-learning models securely.",
    )
    parser.add_argument("--version", action="version", version=f"bastion {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in dict.fromkeys(COMMANDS.values()):
        importlib.import_module(f"bastion.cli.{module}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="bastion: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    as_json = getattr(args, "json", False)
    try:
        code: int = args.run(args)
        return code
    except BastionError as exc:
        return _fail(exc, as_json, args.verbose)
    except KeyboardInterrupt:
        print("bastion: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the boundary: anything else is a defect
        wrapped = InternalError(f"unexpected {type(exc).__name__}: {exc}; please report this")
        wrapped.__cause__ = exc
        return _fail(wrapped, as_json, verbose=True)


def _fail(exc: BastionError, as_json: bool, verbose: bool) -> int:
    if verbose:
        traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
    print(f"bastion: error [{exc.code}]: {exc.message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"ok": False, "error": exc.to_dict()}, indent=2))
    return exc.exit_code
