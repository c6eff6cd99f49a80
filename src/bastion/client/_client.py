"""``bastion.Client``: the hub from Python, the same operations as the command line."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bastion._key_text import key_id_named
from bastion.client._gateway import GatewayMixin
from bastion.client._http import HubSession
from bastion.client._identity import IdentityMixin
from bastion.client._login import resolve_login
from bastion.client._transfer import Progress, pull, push
from bastion.errors import HubUnavailableError, UsageError
from bastion.registry._names import check_alias, check_name, parse_ref
from bastion.signing import PrivateKey, TrustPolicy

__all__ = ["Client"]


#: The hub's answer to ``GET /api/v1/audit/entries`` names the last row it sent here.
_NEXT_AFTER = "Bastion-Audit-Next-After"


def _next_after(response: httpx.Response, after: int) -> int:
    """Where the next page of audit entries starts, as the hub says; always past ``after``."""
    text = response.headers.get(_NEXT_AFTER, "")
    if not (text.isascii() and text.isdigit() and after < int(text) < 2**53):
        raise HubUnavailableError(
            f"the hub's page of audit entries after row {after} does not say where the next "
            f"page starts (its {_NEXT_AFTER} header is missing or not past {after}): a "
            "proxy may drop the header, or the hub runs an older Bastion; reach the hub "
            "directly or upgrade it"
        )
    return int(text)


class Client(IdentityMixin, GatewayMixin):
    """A client of one hub. ``url``, ``token`` and ``ca`` default to ``BASTION_URL``,
    ``BASTION_TOKEN``, ``BASTION_CA``, then to what ``bastion login`` saved."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        ca: str | os.PathLike[str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        login = resolve_login(url, token, None if ca is None else os.fspath(ca))
        self.url = login.url
        self._session = HubSession(login, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    # who and where ------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = self._session.json("GET", "/api/v1/whoami")
        return result

    # namespaces ------------------------------------------------------------

    def namespaces(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._session.json("GET", "/api/v1/namespaces")
        return result

    def create_namespace(self, name: str, trust: TrustPolicy) -> dict[str, Any]:
        check_name(name, "namespace")
        body = {"name": name, "trust_policy": trust.to_toml()}
        result: dict[str, Any] = self._session.json("POST", "/api/v1/namespaces", json=body)
        return result

    def set_trust(self, name: str, trust: TrustPolicy) -> dict[str, Any]:
        check_name(name, "namespace")
        result: dict[str, Any] = self._session.json(
            "PUT", f"/api/v1/namespaces/{name}/trust-policy", json={"trust_policy": trust.to_toml()}
        )
        return result

    # models and versions -------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._session.json("GET", "/api/v1/models")
        return result

    def versions(self, model: str) -> list[dict[str, Any]]:
        ref = parse_ref(model)
        result: list[dict[str, Any]] = self._session.json(
            "GET", f"/api/v1/models/{ref.namespace}/{ref.model}/versions"
        )
        return result

    def show(self, ref: str) -> dict[str, Any]:
        r = parse_ref(ref, need_version=True)
        base = f"/api/v1/models/{r.namespace}/{r.model}"
        path = f"{base}/versions/{r.version}" if r.version else f"{base}/aliases/{r.alias}"
        result: dict[str, Any] = self._session.json("GET", path)
        return result

    def push(
        self,
        model: str | os.PathLike[str],
        ref: str,
        *,
        key: PrivateKey | str | os.PathLike[str] | None = None,
        passphrase: bytes | None = None,
        signature: str | os.PathLike[str] | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Upload a signed model folder as ``namespace/model@version``.

        Signs it first with ``key`` if given; otherwise uses ``signature`` or the
        folder's ``model.sig``. Raises :class:`QuarantinedError` if the hub refuses it.
        """
        return push(
            self._session,
            Path(model),
            parse_ref(ref, need_version=True, allow_alias=False),
            key=key,
            passphrase=passphrase,
            signature=signature,
            progress=progress,
        )

    def pull(
        self,
        ref: str,
        dest: str | os.PathLike[str],
        *,
        allow_yanked: bool = False,
        trust: TrustPolicy | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Download a version (``ns/model@version`` or ``ns/model:alias``) into ``dest``,
        verified before the folder appears."""
        return pull(
            self._session,
            parse_ref(ref, need_version=True),
            Path(dest),
            allow_yanked=allow_yanked,
            trust=trust,
            progress=progress,
        )

    def set_alias(self, model: str, alias: str, version: str) -> dict[str, Any]:
        ref = parse_ref(model)
        check_alias(alias)
        result: dict[str, Any] = self._session.json(
            "PUT",
            f"/api/v1/models/{ref.namespace}/{ref.model}/aliases/{alias}",
            json={"version": version},
        )
        return result

    def yank(self, ref: str, reason: str) -> dict[str, Any]:
        r = parse_ref(ref, need_version=True, allow_alias=False)
        result: dict[str, Any] = self._session.json(
            "POST",
            f"/api/v1/models/{r.namespace}/{r.model}/versions/{r.version}/yank",
            json={"reason": reason},
        )
        return result

    def classify(self, model: str, classification: str) -> dict[str, Any]:
        """Set a model's data classification (an attribute the policies can test)."""
        ref = parse_ref(model)
        result: dict[str, Any] = self._session.json(
            "PUT",
            f"/api/v1/models/{ref.namespace}/{ref.model}/classification",
            json={"classification": classification},
        )
        return result

    # administration ---------------------------------------------------------------

    def create_api_key(
        self,
        name: str,
        roles: Sequence[tuple[str, str]],
        *,
        expires_in_days: int | None = 90,
        scope: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """A new API key; ``scope`` limits it to those actions (default: its roles')."""
        body: dict[str, Any] = {
            "name": name,
            "roles": [{"namespace": ns, "role": role} for ns, role in roles],
            "expires_in_days": expires_in_days,
        }
        if scope is not None:
            body["scope"] = list(scope)
        result: dict[str, Any] = self._session.json("POST", "/api/v1/api-keys", json=body)
        return result

    def api_keys(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._session.json("GET", "/api/v1/api-keys")
        return result

    def revoke_api_key(self, key_id: str) -> None:
        """Revoke a key, named by its id (or by the whole key, whose secret is not sent)."""
        self._session.request("DELETE", f"/api/v1/api-keys/{_key_id(key_id)}")

    def rotate_api_key(self, key_id: str) -> dict[str, Any]:
        """A new secret for the key (shown once); the old token stops working."""
        result: dict[str, Any] = self._session.json(
            "POST", f"/api/v1/api-keys/{_key_id(key_id)}/rotate"
        )
        return result

    def rotate_kek(self) -> dict[str, Any]:
        result: dict[str, Any] = self._session.json("POST", "/api/v1/admin/kek/rotate")
        return result

    # audit --------------------------------------------------------------------------

    def audit_lines(self, *, since: datetime | None = None, page: int = 1000) -> Iterator[str]:
        """Every audit entry, oldest first, as the JSON lines the hub stores.

        The lines are not checked: one altered in the hub's database comes as stored.
        Pages follow the hub's rows (it names the last row it sent), never the seqs
        written in the lines, so an altered line cannot make this re-read or skip.
        """
        after = 0
        while True:
            params: dict[str, Any] = {"after": after, "limit": page}
            if since is not None:
                params["since"] = since.isoformat()
            response = self._session.request("GET", "/api/v1/audit/entries", params=params)
            lines = response.text.split("\n")[:-1]  # one per row, each ending in "\n"
            yield from lines
            if len(lines) < page:
                return
            after = _next_after(response, after)

    def audit_checkpoints(self) -> list[str]:
        text = self._session.request("GET", "/api/v1/audit/checkpoints").text
        return [line for line in text.splitlines() if line]

    def audit_key(self) -> dict[str, Any]:
        result: dict[str, Any] = self._session.json("GET", "/api/v1/audit/key")
        return result

    def audit_checkpoint(self) -> dict[str, Any]:
        result: dict[str, Any] = self._session.json("POST", "/api/v1/audit/checkpoints")
        return result


def _key_id(text: str) -> str:
    return key_id_named(text, UsageError)
