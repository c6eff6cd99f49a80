"""The ``bastion`` command line: one thin module per sub-command.

``main`` is the single error boundary: a Bastion error becomes a one-line
diagnosis on stderr (and, with ``--json``, a JSON document on stdout) and its
documented exit code (0 ok, 1 verification failed or unsafe, 2 usage or bad
input, 3 internal error); ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from bastion.errors import BastionError, InternalError, InterruptError, UsageError

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

#: stdout was closed before the output was written (as a process killed by SIGPIPE).
EXIT_STDOUT_CLOSED = 141


class _Parser(argparse.ArgumentParser):
    """argparse, whose complaints are usage errors like any other (one line, ``--json``)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see {self.prog} --help")


def _parser() -> argparse.ArgumentParser:
    from bastion import __version__

    parser = _Parser(
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
    words = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        args = parser.parse_args(words)
    except UsageError as exc:
        return _fail(exc, "--json" in words, verbose=False)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="bastion: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    # scan's --json is its --format json.
    as_json = bool(getattr(args, "json", False)) or getattr(args, "format", None) == "json"
    try:
        code: int = args.run(args)
        return code
    except BastionError as exc:
        return _fail(exc, as_json, args.verbose)
    except KeyboardInterrupt:
        return _fail(InterruptError("interrupted before the command finished"), as_json, False)
    except BrokenPipeError:
        return _stdout_closed()
    except Exception as exc:  # the boundary: anything else is a defect
        wrapped = InternalError(f"unexpected {type(exc).__name__}: {exc}; please report this")
        wrapped.__cause__ = exc
        return _fail(wrapped, as_json, verbose=True)


def _fail(exc: BastionError, as_json: bool, verbose: bool) -> int:
    if verbose:
        traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
    print(f"bastion: error [{exc.code}]: {exc.message}", file=sys.stderr)
    if as_json:
        try:
            print(json.dumps({"ok": False, "error": exc.to_dict()}, indent=2), flush=True)
        except BrokenPipeError:
            return _stdout_closed()
    return exc.exit_code


def _stdout_closed() -> int:
    """Whoever read stdout went away (``| head``): stop quietly, as a SIGPIPE would."""
    # Python flushes stdout once more at exit; point it where that cannot fail.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_STDOUT_CLOSED
