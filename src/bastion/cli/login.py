"""``bastion login``, ``logout`` and ``whoami``: sign in to a hub and remember it (mode 0600).

A person signs in with ``--user``: a password and a code from their authenticator
(RFC 6238) or a recovery code; the session token is saved, never printed. A pipeline
saves an API key instead (``--token-file``). ``login --step-up`` sends a fresh code on
the saved session before a sensitive action; ``logout`` ends the session and forgets it.

Secrets for scripts: ``--password-file`` or ``BASTION_PASSWORD``, ``--code-file`` or
``BASTION_TOTP``; otherwise prompts on the terminal.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from bastion.cli._hub import add_hub_options, open_client
from bastion.cli._output import add_json_flag, emit, note

__all__ = [
    "PASSWORD_ENV",
    "TOTP_ENV",
    "add_parser",
    "has_code_source",
    "read_code",
    "read_password",
    "run",
    "run_logout",
    "run_whoami",
]

PASSWORD_ENV = "BASTION_PASSWORD"  # noqa: S105 (the variable's name, not a password)
TOTP_ENV = "BASTION_TOTP"
_MAX_SECRET_FILE = 4096


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "login",
        help="sign in to a hub (password and code) or save an API key for it",
        description="bastion login URL --user NAME: sign in with a password and an "
        "authenticator code. bastion login URL --token-file F: save an API key. "
        "bastion login --step-up: a fresh code on the saved session.",
    )
    p.add_argument("url", nargs="?", help="the hub, e.g. https://127.0.0.1:8443")
    p.add_argument("--ca", help="PEM CA certificate of the hub (e.g. .bastion/tls/ca.crt)")
    person = p.add_argument_group("a person")
    person.add_argument("--user", help="sign in as this user (password and code)")
    person.add_argument(
        "--password-file",
        metavar="FILE",
        help=f"the password (else ${PASSWORD_ENV}, else a prompt)",
    )
    person.add_argument(
        "--code-file",
        metavar="FILE",
        help=f"the authenticator or recovery code (else ${TOTP_ENV}, else a prompt)",
    )
    person.add_argument(
        "--step-up", action="store_true", help="send a fresh code on the saved session"
    )
    key = p.add_argument_group("an API key")
    key.add_argument("--token", help="the API key (prefer --token-file or the prompt)")
    key.add_argument("--token-file", help="file holding the API key")
    add_json_flag(p)
    p.set_defaults(run=run)

    out = sub.add_parser("logout", help="end the saved session and forget its token")
    add_json_flag(out)
    out.set_defaults(run=run_logout)

    who = sub.add_parser("whoami", help="who the hub sees: kind, roles, scope, MFA age")
    add_hub_options(who)
    add_json_flag(who)
    who.set_defaults(run=run_whoami)


# secrets: a file, the environment, then the terminal -----------------------------------------


def _file_text(path: str, what: str) -> str:
    from bastion._files import read_input
    from bastion.errors import InputError

    data = read_input(path, what, limit=_MAX_SECRET_FILE)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{what} {path!r} is not UTF-8 text") from None


def read_password(password_file: str | None, *, confirm: bool = False) -> str:
    """The password from ``password_file``, ``$BASTION_PASSWORD`` or a prompt (twice with
    ``confirm``). A file's trailing newline is not part of the password."""
    from bastion.errors import InputError, UsageError

    if password_file is not None:
        value = _file_text(password_file, "password file").rstrip("\r\n")
        if not value:
            raise InputError(f"password file {password_file!r} is empty; put the password in it")
        return value
    env = os.environ.get(PASSWORD_ENV)
    if env:
        return env
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if confirm and first and getpass.getpass("Repeat the password: ") != first:
            raise UsageError("the two passwords differ; run the command again")
        if first:
            return first
    raise UsageError(f"give the password at the prompt, with --password-file or ${PASSWORD_ENV}")


def has_code_source(code_file: str | None) -> bool:
    """Whether :func:`read_code` has somewhere to read a code from."""
    return code_file is not None or bool(os.environ.get(TOTP_ENV)) or sys.stdin.isatty()


def read_code(code_file: str | None, *, prompt: str = "Authenticator code: ") -> str:
    """A TOTP or recovery code from ``code_file``, ``$BASTION_TOTP`` or a prompt on stderr;
    spaces (``123 456``) are dropped."""
    from bastion.errors import UsageError

    if code_file is not None:
        text = _file_text(code_file, "code file")
    elif os.environ.get(TOTP_ENV):
        text = os.environ[TOTP_ENV]
    elif sys.stdin.isatty():
        sys.stderr.write(prompt)
        sys.stderr.flush()
        text = sys.stdin.readline()
    else:
        text = ""
    code = "".join(text.split())
    if not code:
        raise UsageError(f"give the code at the prompt, with --code-file or ${TOTP_ENV}")
    return code


# login -----------------------------------------------------------------------------------------


def _roles(who: dict[str, Any]) -> str:
    return ", ".join(f"{r['role']} on {r['namespace']}" for r in who["roles"]) or "no roles"


def run(args: argparse.Namespace) -> int:
    from bastion.errors import UsageError

    if args.step_up:
        if args.url or args.user or args.token or args.token_file or args.password_file:
            raise UsageError("--step-up uses the saved session: give only --code-file, if any")
        return _step_up(args)
    if not args.url:
        raise UsageError("which hub? bastion login URL --user NAME (or --token-file FILE)")
    if args.user:
        if args.token or args.token_file:
            raise UsageError("give --user (a person) or --token/--token-file (an API key)")
        return _sign_in(args)
    if args.password_file or args.code_file:
        raise UsageError("--password-file and --code-file go with --user NAME")
    return _save_key(args)


def _sign_in(args: argparse.Namespace) -> int:
    from bastion.client import Client
    from bastion.client._login import Login, save_login

    url = args.url.rstrip("/")
    ca = os.path.abspath(args.ca) if args.ca else None
    password = read_password(args.password_file)
    code = read_code(args.code_file)
    with Client(url, ca=ca) as hub:
        session = hub.sign_in(args.user, password, code)
    token = session["token"]
    with Client(url, token=token, ca=ca) as client:
        who = client.whoami()
    path = save_login(Login(url, token, ca, user=session["user"], kind="session"))
    if session.get("mfa_method") == "recovery":
        note("You signed in with a recovery code; it is used up. Ask for a reset if few are left.")
    emit(
        args,
        {
            "ok": True,
            "url": url,
            "kind": "session",
            "user": session["user"],
            "name": who["name"],
            "roles": who["roles"],
            "expires_at": session["expires_at"],
            "mfa_method": session.get("mfa_method"),
            "saved": str(path),
        },
        f"logged in to {url} as {session['user']} ({_roles(who)}); "
        f"the session expires at {session['expires_at']}; saved in {path}",
    )
    return 0


def _save_key(args: argparse.Namespace) -> int:
    from bastion._files import read_input
    from bastion.client import Client
    from bastion.client._login import Login, LoginKind, save_login
    from bastion.errors import UsageError

    token = args.token
    if args.token_file:
        token = read_input(args.token_file, "token file", limit=4096).decode().strip()
    if not token:
        token = os.environ.get("BASTION_TOKEN")
    if not token and sys.stdin.isatty():
        token = getpass.getpass("API key: ").strip()
    token = (token or "").strip()  # a key pasted with its line break is still the key
    if not token:
        raise UsageError(
            "give the API key with --token-file, BASTION_TOKEN or at the prompt "
            "(or sign in as a person with --user NAME)"
        )
    url = args.url.rstrip("/")
    ca = os.path.abspath(args.ca) if args.ca else None
    with Client(url, token=token, ca=ca) as client:
        who = client.whoami()
    kinds: dict[str, LoginKind] = {"ServiceAccount": "api_key", "User": "session"}
    kind = kinds.get(who.get("kind", "ServiceAccount"))
    path = save_login(Login(url, token, ca, user=who["name"], kind=kind))
    emit(
        args,
        {
            "ok": True,
            "url": args.url,
            "kind": kind,
            "key": who.get("key_id"),
            "name": who["name"],
            "saved": str(path),
        },
        f"logged in to {args.url} as {who['name']} ({_roles(who)}); saved in {path}",
    )
    return 0


def _step_up(args: argparse.Namespace) -> int:
    from bastion.client import Client
    from bastion.client._login import resolve_login
    from bastion.errors import UsageError

    login = resolve_login()
    if not login.token:
        raise UsageError("no saved session: sign in first with bastion login URL --user NAME")
    if login.kind == "api_key" or login.token.startswith("bst_"):
        raise UsageError("API keys have no step-up (their scope limits them); sign in as a person")
    code = read_code(args.code_file)
    with Client(login.url, token=login.token, ca=login.ca) as client:
        result = client.step_up(code)
    emit(
        args,
        {"ok": True, "user": login.user, **result},
        f"second factor confirmed at {result['mfa_at']}; sensitive actions are allowed again",
    )
    return 0


# logout, whoami -----------------------------------------------------------------------------


def run_logout(args: argparse.Namespace) -> int:
    from bastion.client import Client
    from bastion.client._login import forget_saved_token, login_path
    from bastion.errors import AuthenticationError, BastionError

    saved = forget_saved_token()
    if saved is None or saved.token is None:
        emit(args, {"ok": True, "logged_out": False}, "not logged in; nothing to forget")
        return 0
    document: dict[str, Any] = {"ok": True, "logged_out": True, "url": saved.url}
    document.update(user=saved.user, kind=saved.kind, session_ended=False)
    is_session = saved.kind == "session" or saved.token.startswith("bss_")
    if is_session:
        try:
            with Client(saved.url, token=saved.token, ca=saved.ca) as client:
                client.sign_out()
            document["session_ended"] = True
        except AuthenticationError:
            pass  # expired or signed out already: nothing left to end
        except BastionError:
            note(
                f"The session token was removed from {login_path()}, but the hub did not "
                "confirm the session ended; it expires on its own."
            )
            raise
        text = f"logged out of {saved.url}; the session ended and its token is forgotten"
    else:
        text = (
            f"forgot the API key saved for {saved.url}; it still works until revoked "
            "(bastion tokens revoke ID)"
        )
    emit(args, document, text)
    return 0


def run_whoami(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        who = client.whoami()
    text = f"{who['name']} ({who['kind']}, {who['auth_method']}): {_roles(who)}"
    if who.get("mfa_age_seconds") is not None:
        text += f"; second factor {who['mfa_age_seconds']} s ago"
    emit(args, {"ok": True, **who}, text)
    return 0
