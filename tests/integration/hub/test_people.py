"""People on the hub through the command line and the SDK (issue 5, "zero-trust access").

An administrator adds a user (``bastion users add``), the person enrols (``bastion
enrol``: password, authenticator, recovery codes), signs in (``bastion login --user``:
password and TOTP code), pushes right after signing in, steps up when the MFA is old
(``bastion login --step-up``) and signs out. ``bastion policy apply|show|history`` change
and show the policies in force. Every command runs in-process through ``bastion.cli.main``
against a real hub; TOTP codes are computed from the secret the hub hands out.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import stat
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

import bastion
from bastion.auth._totp import totp_code
from bastion.auth._users import UserLogin
from bastion.client import Client, login_path
from bastion.errors import AuthenticationError
from tests.integration.hub.conftest import RunningHub, write_safe_model
from tests.integration.hub.test_cli_flow import Cli

PASSWORD = "correct horse battery staple"
_SECRET_NAMES = ("BASTION_URL", "BASTION_TOKEN", "BASTION_CA", "BASTION_PASSWORD", "BASTION_TOTP")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in _SECRET_NAMES:
        monkeypatch.delenv(name, raising=False)
    return Cli(capsys)


@pytest.fixture
def as_admin(hub: RunningHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub commands run as the bootstrap administrator (through the environment)."""
    monkeypatch.setenv("BASTION_URL", hub.url)
    monkeypatch.setenv("BASTION_TOKEN", hub.admin_token)


@dataclass
class AuthenticatorAtTheTerminal:
    """A terminal where the person types the code their authenticator app shows.

    It reads the base32 key ``bastion enrol`` printed on stderr and answers the code
    prompt with the current TOTP code for it, as a person with a phone would.
    """

    capsys: pytest.CaptureFixture[str]
    seen: list[str] = field(default_factory=list)

    def isatty(self) -> bool:
        return True

    def readline(self) -> str:
        err = self.capsys.readouterr().err
        self.seen.append(err)
        match = re.search(r"type the key: ([A-Z2-7]+)", err)
        assert match, err
        return totp_code(_secret(match.group(1)), datetime.now(UTC)) + "\n"


class NoTerminal:
    """Standard input of a script: not a terminal, nothing to read."""

    def isatty(self) -> bool:
        return False

    def readline(self) -> str:
        return ""


def _secret(base32: str) -> bytes:
    return base64.b32decode(base32 + "=" * (-len(base32) % 8))


def _secret_of(otpauth_uri: str) -> bytes:
    return _secret(parse_qs(urlsplit(otpauth_uri).query)["secret"][0])


def _private_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def _enrol_with_sdk(hub: RunningHub, enrolment_code: str) -> tuple[bytes, list[str]]:
    """Enrol through the SDK (no credential needed); the TOTP secret and recovery codes."""
    with Client(hub.url) as anonymous:
        begun = anonymous.enrol_begin(enrolment_code, PASSWORD)
        secret = _secret_of(begun["otpauth_uri"])
        codes = anonymous.enrol_finish(enrolment_code, totp_code(secret, datetime.now(UTC)))
    return secret, codes


def _next_code(secret: bytes) -> str:
    """A code the hub accepts once more after one for the current step: the next step's."""
    return totp_code(secret, datetime.now(UTC) + timedelta(seconds=30))


def _signed_model(folder: Path, key: bastion.PrivateKey, seed: int) -> Path:
    model = write_safe_model(folder, seed=seed)
    bastion.sign(model, key)
    return model


def test_a_person_enrols_signs_in_pushes_steps_up_and_signs_out(
    hub: RunningHub,
    med: str,
    signing_key: bastion.PrivateKey,
    cli: Cli,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The administrator adds alice: a one-time enrolment code and the command to run next.
    with monkeypatch.context() as admin_env:
        admin_env.setenv("BASTION_URL", hub.url)
        admin_env.setenv("BASTION_TOKEN", hub.admin_token)
        added = cli.json("users", "add", "alice", "--role", "publisher", "--namespace", med)
    assert added["user"] == "alice"
    assert added["roles"] == [{"namespace": "med", "role": "publisher"}]
    enrolment_code = added["enrolment_code"]
    assert added["next"] == f"bastion enrol {hub.url} --code {enrolment_code}"

    # alice enrols: password from a file, the first code typed from her authenticator.
    terminal = AuthenticatorAtTheTerminal(capsys)
    monkeypatch.setattr(sys, "stdin", terminal)
    password_file = _private_file(tmp_path / "password", PASSWORD)
    enrolled = cli.json(
        "enrol", hub.url, "--code", enrolment_code, "--password-file", password_file
    )
    assert set(enrolled) == {"ok", "user", "otpauth_uri", "recovery_codes"}
    assert enrolled["user"] == "alice"
    assert enrolled["otpauth_uri"].startswith("otpauth://totp/")
    assert len(set(enrolled["recovery_codes"])) == 10
    assert "otpauth://" in terminal.seen[0]  # shown for the app before the code was asked
    secret = _secret_of(enrolled["otpauth_uri"])
    monkeypatch.setattr(sys, "stdin", NoTerminal())  # no terminal from here on

    # alice signs in with her password and the next code: a session, saved, never printed.
    monkeypatch.setenv("BASTION_PASSWORD", PASSWORD)
    monkeypatch.setenv("BASTION_TOTP", _next_code(secret))
    code, out, err = cli.run("login", hub.url, "--user", "alice", "--json")
    assert code == 0, err
    login = json.loads(out)
    assert login["kind"] == "session"
    assert login["user"] == "alice"
    assert login["roles"] == [{"namespace": "med", "role": "publisher"}]
    assert login["expires_at"]
    saved = json.loads(login_path().read_text())
    assert saved["version"] == 1
    assert (saved["kind"], saved["user"], saved["url"]) == ("session", "alice", hub.url)
    assert saved["token"].startswith("bss_")
    assert saved["token"] not in out + err
    assert stat.S_IMODE(login_path().stat().st_mode) == 0o600
    for name in ("BASTION_PASSWORD", "BASTION_TOTP"):
        monkeypatch.delenv(name)

    # whoami sees a person who passed MFA moments ago; a push works right after sign-in.
    who = cli.json("whoami")
    assert (who["kind"], who["name"], who["auth_method"]) == ("User", "alice", "password")
    assert 0 <= who["mfa_age_seconds"] < 300
    model = _signed_model(tmp_path / "xray", signing_key, seed=1)
    pushed = cli.json("push", model, "med/xray@1.0.0")
    assert pushed["state"] == "published"

    # A session whose MFA is 20 minutes old may not push until alice steps up.
    users = {u["name"]: u for u in hub.services.users.list()}
    stale = hub.services.sessions.open(
        UserLogin(int(str(users["alice"]["id"])), "alice", (("med", "publisher"),), "totp"),
        now=datetime.now(UTC) - timedelta(minutes=20),
        source="127.0.0.1",
    )
    saved["token"] = stale.token
    login_path().write_text(json.dumps(saved))
    newer = _signed_model(tmp_path / "xray-2", signing_key, seed=2)
    cli.fails("push", newer, "med/xray@1.0.1", exit_code=4, code="step_up_required")
    recovery_file = tmp_path / "recovery"
    recovery_file.write_text(enrolled["recovery_codes"][0].upper() + "\n")
    stepped = cli.json("login", "--step-up", "--code-file", recovery_file)
    assert stepped["mfa_method"] == "recovery"
    assert cli.json("push", newer, "med/xray@1.0.1")["state"] == "published"
    # the recovery code is used up
    cli.fails(
        "login", "--step-up", "--code-file", recovery_file, exit_code=4, code="unauthenticated"
    )

    # The administrator's list never holds a hash, a secret or a code.
    with monkeypatch.context() as admin_env:
        admin_env.setenv("BASTION_URL", hub.url)
        admin_env.setenv("BASTION_TOKEN", hub.admin_token)
        code, listed, _ = cli.run("users", "ls", "--json")
    assert code == 0
    [row] = json.loads(listed)["users"]
    assert (row["name"], row["status"], row["locked"]) == ("alice", "active", False)
    for secret_text in (PASSWORD, enrolment_code, *enrolled["recovery_codes"], stale.token):
        assert secret_text not in listed
    assert parse_qs(urlsplit(enrolled["otpauth_uri"]).query)["secret"][0] not in listed
    assert not re.search(r"hash|secret|totp|argon2|recovery", listed, re.IGNORECASE)

    # logout ends the session on the hub and forgets it here.
    out_doc = cli.json("logout")
    assert out_doc["session_ended"] is True
    assert json.loads(login_path().read_text())["token"] is None
    with Client(hub.url, token=stale.token) as old, pytest.raises(AuthenticationError):
        old.whoami()
    cli.fails("whoami", exit_code=4, code="unauthenticated")
    assert cli.json("logout")["logged_out"] is False


def test_every_failed_sign_in_gets_the_same_answer(
    hub: RunningHub, admin: Client, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret, _ = _enrol_with_sdk(
        hub, admin.create_user("bob", [("med", "consumer")])["enrolment_code"]
    )
    now = datetime.now(UTC)
    valid = {totp_code(secret, now + timedelta(seconds=30 * k)) for k in range(-3, 4)}
    wrong_code = next(c for c in ("000000", "111111", "222222") if c not in valid)
    attempts = {
        "wrong password": ("bob", "not the password at all", _next_code(secret)),
        "unknown user": ("nobody", PASSWORD, _next_code(secret)),
        "wrong code": ("bob", PASSWORD, wrong_code),
    }
    messages = set()
    for user, password, code in attempts.values():
        monkeypatch.setenv("BASTION_PASSWORD", password)
        monkeypatch.setenv("BASTION_TOTP", code)
        messages.add(
            cli.fails("login", hub.url, "--user", user, exit_code=4, code="unauthenticated")
        )
    assert len(messages) == 1
    assert "password" in messages.pop()
    assert not login_path().exists()
    # The same name and secrets do sign in: the refusals above were about what was wrong.
    monkeypatch.setenv("BASTION_PASSWORD", PASSWORD)
    monkeypatch.setenv("BASTION_TOTP", _next_code(secret))
    assert cli.json("login", hub.url, "--user", "bob")["user"] == "bob"


def test_scripts_need_a_password_and_code_without_a_terminal(
    hub: RunningHub, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", NoTerminal())
    message = cli.fails("login", hub.url, "--user", "bob", exit_code=2, code="usage")
    assert "BASTION_PASSWORD" in message
    message = cli.fails("enrol", hub.url, "--code", "x", exit_code=2, code="usage")
    assert "BASTION_TOTP" in message  # refused before the hub made a secret for nobody
    cli.fails("login", "--step-up", exit_code=2, code="usage")  # no session saved


def test_administrators_manage_users_from_the_command_line(
    hub: RunningHub, cli: Cli, as_admin: None
) -> None:
    code, out, err = cli.run("users", "add", "carol", "--role", "consumer", "--namespace", "med")
    assert code == 0, err
    enrolment_code = out.strip()  # stdout holds the code alone; the rest is on stderr
    assert len(enrolment_code) >= 16
    assert "\n" not in enrolment_code
    assert f"bastion enrol {hub.url} --code {enrolment_code}" in err

    roles = cli.json(
        "users", "roles", "carol", "--role", "auditor", "--namespace", "med", "--namespace", "lab"
    )
    assert roles["roles"] == [
        {"namespace": "med", "role": "auditor"},
        {"namespace": "lab", "role": "auditor"},
    ]
    assert cli.json("users", "unlock", "carol")["unlocked"] is False
    reset = cli.json("users", "reset", "carol")
    assert reset["enrolment_code"] != enrolment_code
    cli.fails("users", "add", "carol", "--role", "consumer", "--namespace", "med",
              exit_code=2, code="conflict")  # fmt: skip
    assert cli.json("users", "rm", "carol") == {"ok": True, "removed": "carol"}
    assert cli.json("users", "ls") == {"users": []}
    cli.fails("users", "rm", "carol", exit_code=2, code="not_found")
    cli.fails("users", "rm", "../api-keys", exit_code=2, code="bad_input")  # checked locally


def _default_policies(folder: Path) -> Path:
    folder.mkdir()
    for item in resources.files("bastion.auth").joinpath("policies/default").iterdir():
        if item.name.endswith(".cedar"):
            (folder / item.name).write_text(item.read_text(encoding="utf-8"))
    return folder


def _policy_applies(admin: Client) -> list[dict[str, Any]]:
    entries = (json.loads(line) for line in admin.audit_lines())
    return [e for e in entries if e["action"] == "policy.apply"]


def test_policies_are_applied_versioned_shown_and_audited(
    hub: RunningHub, admin: Client, cli: Cli, as_admin: None, tmp_path: Path
) -> None:
    folder = _default_policies(tmp_path / "policies")
    applied = cli.json("policy", "apply", folder, "--comment", "first applied set")
    assert applied["version"] == 1
    assert applied["files"] == ["guards.cedar", "roles.cedar"]

    shown = cli.json("policy", "show")
    assert (shown["version"], shown["digest"]) == (1, applied["digest"])
    assert shown["comment"] == "first applied set"
    assert shown["files"] == {p.name: p.read_text() for p in folder.iterdir()}
    out = tmp_path / "in-force"
    cli.json("policy", "show", "--out", out)
    assert {p.name: p.read_text() for p in out.iterdir()} == shown["files"]
    cli.fails("policy", "show", "--out", out, exit_code=2, code="conflict")  # never overwrites

    history = cli.json("policy", "history")["versions"]
    assert [(v["version"], v["digest"]) for v in history] == [(1, applied["digest"])]
    [entry] = _policy_applies(admin)
    assert entry["outcome"] == "allowed"
    assert entry["details"]["policy_version"] == 1
    assert entry["details"]["policy_digest"] == applied["digest"]

    # An invalid folder: every problem named, exit 2, nothing sent to the hub.
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "extra.cedar").write_text(
        'permit (principal, action == Bastion::Action::"nope", resource);'
    )
    (broken / "typo.cedar").write_text("permit (principal action resource);")
    code, out_text, err = cli.run("policy", "apply", broken, "--json")
    assert code == 2
    refused = json.loads(out_text)
    assert refused["ok"] is False
    assert refused["error"]["code"] == "policy_invalid"
    assert len(refused["problems"]) >= 2
    assert "extra.cedar" in err
    assert "typo.cedar" in err
    assert len(_policy_applies(admin)) == 1  # no request reached the hub

    # A set that would stop the administrator applying policies again is refused by the hub.
    lockout = tmp_path / "lockout"
    lockout.mkdir()
    (lockout / "only.cedar").write_text(
        'permit (principal, action == Bastion::Action::"whoami", resource);\n'
    )
    assert cli.json("policy", "check", lockout)["ok"] is True
    message = cli.fails("policy", "apply", lockout, exit_code=2, code="policy_invalid")
    assert "lock-out" in message
    assert [v["version"] for v in cli.json("policy", "history")["versions"]] == [1]
    assert cli.json("policy", "show")["version"] == 1
