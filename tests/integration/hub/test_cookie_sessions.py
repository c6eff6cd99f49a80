"""A browser's session: the cookie authenticates, and changes need the CSRF token too."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx

from bastion.auth._totp import totp_code
from bastion.client import Client
from tests.integration.hub.conftest import RunningHub, assert_problem

PASSWORD = "a long enough passphrase 7"


def _enrolled(hub: RunningHub, admin: Client) -> bytes:
    """Enrol ``erin`` (publisher on ``med``); her TOTP secret."""
    code = admin.create_user("erin", [("med", "publisher")])["enrolment_code"]
    with Client(hub.url) as anonymous:
        uri = anonymous.enrol_begin(code, PASSWORD)["otpauth_uri"]
        encoded = parse_qs(urlsplit(uri).query)["secret"][0]
        secret = base64.b32decode(encoded + "=" * (-len(encoded) % 8))
        anonymous.enrol_finish(code, totp_code(secret, datetime.now(UTC)))
    return secret


def test_a_cookie_session_needs_the_csrf_token_to_change_anything(
    hub: RunningHub, admin: Client
) -> None:
    secret = _enrolled(hub, admin)
    code = totp_code(secret, datetime.now(UTC) + timedelta(seconds=30))
    with httpx.Client(base_url=hub.url) as browser:
        signed_in = browser.post(
            "/api/v1/sessions", json={"user": "erin", "password": PASSWORD, "code": code}
        )
        assert signed_in.status_code == 201, signed_in.text
        cookie = signed_in.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        csrf = signed_in.json()["csrf_token"]
        # Reads need only the cookie.
        who = browser.get("/api/v1/whoami")
        assert who.status_code == 200
        assert who.json()["kind"] == "User"
        # A change without the token is refused; with a wrong one too; with it, it goes on.
        refused = browser.delete("/api/v1/sessions/current")
        assert_problem(refused, 403, "forbidden")
        wrong = browser.delete("/api/v1/sessions/current", headers={"x-csrf-token": "x" * 43})
        assert_problem(wrong, 403, "forbidden")
        signed_out = browser.delete("/api/v1/sessions/current", headers={"x-csrf-token": csrf})
        assert signed_out.status_code == 204
        assert browser.get("/api/v1/whoami").status_code == 401
