"""The SDK's side of people and policy: sign-in, step-up, sign-out, enrolment, users, policies.

:class:`IdentityMixin` is one of :class:`bastion.Client`'s bases. Signing in needs no
credential; the session token it returns is then the credential of a new client::

    with Client("https://hub", ca="ca.crt") as anonymous:
        session = anonymous.sign_in("alice", password, code)
    alice = Client("https://hub", ca="ca.crt", token=session["token"])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bastion.client._http import HubSession
from bastion.registry._names import check_name

__all__ = ["IdentityMixin"]


def _bindings(roles: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"namespace": namespace, "role": role} for namespace, role in roles]


class IdentityMixin:
    """People's sessions and enrolment, the hub's users, and the policies in force."""

    _session: HubSession

    # sessions ---------------------------------------------------------------------

    def sign_in(self, user: str, password: str, code: str) -> dict[str, Any]:
        """Open a session with a password and a TOTP (or recovery) code.

        Returns ``user``, ``token`` (the session's bearer credential, shown once),
        ``csrf_token``, ``expires_at``, ``mfa_at`` and ``mfa_method``. Every failure is
        the same AuthenticationError, whatever was wrong.
        """
        body = {"user": user, "password": password, "code": code}
        result: dict[str, Any] = self._session.json("POST", "/api/v1/sessions", json=body)
        return result

    def step_up(self, code: str) -> dict[str, Any]:
        """Prove a fresh second factor on this session (for sensitive actions)."""
        result: dict[str, Any] = self._session.json(
            "POST", "/api/v1/sessions/current/mfa", json={"code": code}
        )
        return result

    def sign_out(self) -> None:
        """End this client's session on the hub (its token stops working at once)."""
        self._session.request("DELETE", "/api/v1/sessions/current")

    # enrolment (the one-time enrolment code is the credential) --------------------

    def enrol_begin(self, enrolment_code: str, password: str) -> dict[str, Any]:
        """Set the password; returns ``user``, ``otpauth_uri`` and ``secret`` (base32)."""
        body = {"enrolment_code": enrolment_code, "password": password}
        result: dict[str, Any] = self._session.json("POST", "/api/v1/enrolment/password", json=body)
        return result

    def enrol_finish(self, enrolment_code: str, code: str) -> list[str]:
        """Confirm the authenticator with its first code; returns the recovery codes."""
        body = {"enrolment_code": enrolment_code, "code": code}
        result = self._session.json("POST", "/api/v1/enrolment/totp", json=body)
        return [str(c) for c in result["recovery_codes"]]

    # users (administrators) -------------------------------------------------------

    def users(self) -> list[dict[str, Any]]:
        """Every user: name, status, roles, times, locked; never a hash or secret."""
        result: list[dict[str, Any]] = self._session.json("GET", "/api/v1/users")
        return result

    def create_user(self, name: str, roles: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """A new user with ``roles`` ((namespace, role) pairs); returns ``enrolment_code``
        (shown once) and ``expires_at``."""
        check_name(name, "user name")
        body = {"name": name, "roles": _bindings(roles)}
        result: dict[str, Any] = self._session.json("POST", "/api/v1/users", json=body)
        return result

    def set_user_roles(self, name: str, roles: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """Replace a user's roles."""
        check_name(name, "user name")
        result: dict[str, Any] = self._session.json(
            "PUT", f"/api/v1/users/{name}/roles", json={"roles": _bindings(roles)}
        )
        return result

    def reset_user(self, name: str) -> dict[str, Any]:
        """Clear a user's password and authenticator; returns a new ``enrolment_code``."""
        check_name(name, "user name")
        result: dict[str, Any] = self._session.json("POST", f"/api/v1/users/{name}/reset")
        return result

    def unlock_user(self, name: str) -> dict[str, Any]:
        """Forget a user's failed sign-ins; ``unlocked`` says whether sign-in was refused."""
        check_name(name, "user name")
        result: dict[str, Any] = self._session.json("POST", f"/api/v1/users/{name}/unlock")
        return result

    def delete_user(self, name: str) -> None:
        """Delete a user, their roles and sessions."""
        check_name(name, "user name")
        self._session.request("DELETE", f"/api/v1/users/{name}")

    # policies -----------------------------------------------------------------------

    def policies(self) -> dict[str, Any]:
        """The policy version in force: version, digest, who applied it, and its files."""
        result: dict[str, Any] = self._session.json("GET", "/api/v1/policies")
        return result

    def policy_history(self) -> list[dict[str, Any]]:
        """Every applied version, oldest first (file names, not texts)."""
        result: list[dict[str, Any]] = self._session.json("GET", "/api/v1/policies/history")
        return result

    def apply_policies(self, files: Mapping[str, str], comment: str = "") -> dict[str, Any]:
        """Make ``files`` (``name.cedar`` -> text) the policies in force, as a new version.

        The hub validates them against its schema and refuses a set that would stop the
        caller applying policies again (PolicyError). Returns version, digest, files.
        """
        body = {
            "files": [{"name": name, "text": text} for name, text in files.items()],
            "comment": comment,
        }
        result: dict[str, Any] = self._session.json("PUT", "/api/v1/policies", json=body)
        return result
