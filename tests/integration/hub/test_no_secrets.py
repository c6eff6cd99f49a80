"""No secret reaches the audit log, the hub's log or an error message.

A whole round of people and keys — enrolment, sign-in with a TOTP code and with a recovery
code, failed sign-ins, step-up, key creation and rotation, sign-out — then every secret
that passed is looked for in the audit log and in everything the hub logged.
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bastion.auth._totp import totp_code
from bastion.client import Client
from bastion.errors import AuthenticationError
from tests.integration.hub.conftest import RunningHub

_SERVER_LOGGERS = ("bastion", "uvicorn", "fastapi", "starlette", "sqlalchemy", "alembic")


def _secret_of(otpauth_uri: str) -> bytes:
    encoded = parse_qs(urlsplit(otpauth_uri).query)["secret"][0]
    return base64.b32decode(encoded + "=" * (-len(encoded) % 8))


def test_secrets_never_reach_the_audit_log_or_the_hub_log(
    hub: RunningHub, admin: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "correct horse battery staple 42"
    secrets: list[str] = [password]
    enrolment = admin.create_user("dana", [("med", "publisher")])
    secrets.append(enrolment["enrolment_code"])
    with Client(hub.url) as anonymous:
        begun = anonymous.enrol_begin(enrolment["enrolment_code"], password)
        secrets += [begun["secret"], begun["otpauth_uri"]]
        secret = _secret_of(begun["otpauth_uri"])
        now = datetime.now(UTC)
        first = totp_code(secret, now)
        recovery = anonymous.enrol_finish(enrolment["enrolment_code"], first)
        secrets += [first, *recovery]
        with pytest.raises(AuthenticationError) as wrong:
            anonymous.sign_in("dana", password + "!", totp_code(secret, now + timedelta(30)))
        assert password not in str(wrong.value)
        second = totp_code(secret, now + timedelta(seconds=30))
        session = anonymous.sign_in("dana", password, second)
        secrets += [second, session["token"], session["csrf_token"]]
    with Client(hub.url, token=session["token"]) as dana:
        dana.step_up(recovery[0])
        dana.sign_out()
    key = admin.create_api_key("ci", [("med", "consumer")])
    rotated = admin.rotate_api_key(key["id"])
    secrets += [key["token"], rotated["token"], hub.admin_token]
    for token in (key["token"], rotated["token"]):
        secrets.append(token.split("_", 2)[2])  # the secret part alone
    with httpx.Client(base_url=hub.url) as raw:  # a failed sign-in through the raw API too
        response = raw.post(
            "/api/v1/sessions", json={"user": "dana", "password": password, "code": "000000"}
        )
        assert response.status_code == 401
        assert password not in response.text

    audit = "\n".join(admin.audit_lines())
    # The hub runs in this process: its records are those of the server's loggers (the
    # test's own HTTP client logs what it receives, cookies included, at DEBUG).
    server = [r for r in caplog.records if r.name.startswith(_SERVER_LOGGERS)]
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in server)
    assert "session.create" in audit  # the audit log did record the round
    assert server  # the server did log (its access lines at least): the check below bites
    for secret_text in secrets:
        assert secret_text not in audit, "a secret is in the audit log"
        assert secret_text not in logged, "a secret is in the hub's log"
