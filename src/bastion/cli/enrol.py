"""``bastion enrol URL --code CODE``: a new user sets a password and an authenticator.

The password is asked twice (or read from ``--password-file`` / ``BASTION_PASSWORD``);
the hub answers with the authenticator's secret, shown on stderr as an ``otpauth://``
URI and as base32 text; the first code from the app (prompt, ``--code-file`` or
``BASTION_TOTP``) finishes enrolment, and the ten recovery codes are printed once.
"""

from __future__ import annotations

import argparse
import os

from bastion.cli._output import add_json_flag, emit, note

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "enrol",
        help="set your password and authenticator with the code an administrator gave you",
    )
    p.add_argument("url", help="the hub, e.g. https://hub.example:8443")
    p.add_argument("--code", required=True, help="the one-time enrolment code")
    p.add_argument("--ca", help="PEM CA certificate of the hub")
    p.add_argument(
        "--password-file",
        metavar="FILE",
        help="the new password (else $BASTION_PASSWORD, else asked)",
    )
    p.add_argument(
        "--code-file",
        metavar="FILE",
        help="the authenticator's first code (else $BASTION_TOTP, else asked)",
    )
    add_json_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bastion.cli.login import has_code_source, read_code, read_password
    from bastion.client import Client
    from bastion.errors import UsageError

    if not has_code_source(args.code_file):  # before the hub makes a secret nobody can confirm
        raise UsageError(
            "give the authenticator's code at the prompt, --code-file or $BASTION_TOTP"
        )
    password = read_password(args.password_file, confirm=True)
    ca = os.path.abspath(args.ca) if args.ca else None
    with Client(args.url, ca=ca) as hub:
        begun = hub.enrol_begin(args.code, password)
        note(f"Hello {begun['user']}. Add this account to your authenticator app (scan or paste):")
        note(f"  {begun['otpauth_uri']}")
        note(f"  or type the key: {begun['secret']}")
        first = read_code(args.code_file, prompt="The 6-digit code the app shows: ")
        recovery = hub.enrol_finish(args.code, first)
    if not args.json:
        note(f"Enrolled. Sign in with: bastion login {hub.url} --user {begun['user']}")
        note("Recovery codes below are shown once; each signs you in once if the phone is lost.")
    emit(
        args,
        {
            "ok": True,
            "user": begun["user"],
            "otpauth_uri": begun["otpauth_uri"],
            "recovery_codes": recovery,
        },
        "\n".join(recovery),
    )
    return 0
