"""Clients known by a verified TLS client certificate (mutual TLS), as an operator lists them.

The TLS layer verifies the certificate chain against the configured client CA; this module
only maps a verified certificate to a named client, its roles and its scope, from a TOML
document of ``[[clients]]`` tables::

    [[clients]]
    name = "ci-runner"
    sha256 = "3F:A1:...:09"              # the certificate's DER fingerprint, or:
    # subject = "CN=ci-runner,O=Acme"    # its subject, as RFC 4514 writes it
    roles = ["publisher:vision"]
    scope = ["publish"]                  # actions or action groups, or "*"

A fingerprint names one certificate; a subject names every certificate the client CA issues
with it. The subject is compared exactly, in the form ``openssl x509 -noout -subject -nameopt
RFC2253`` prints (most specific attribute first). Without ``scope``, a client gets the scope
an API key with the same roles would get. Unknown keys, wrong types, duplicate names,
fingerprints or subjects are an :class:`InputError` naming the table.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from bastion._names import is_name
from bastion.auth._apikeys import check_scope, default_scope
from bastion.auth._oidc_issuer import RoleBindings, role_bindings
from bastion.errors import InputError

__all__ = ["ClientCertificates", "MtlsClient", "normalize_fingerprint"]

_FINGERPRINT: Final = re.compile(r"[0-9A-Fa-f]{64}|[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31}")
_KEYS: Final = frozenset({"name", "sha256", "subject", "roles", "scope"})
_MAX_CLIENTS: Final = 4096
_MAX_SUBJECT: Final = 1024
_MAX_SCOPE: Final = 64
_ALL_ACTIONS: Final = "*"


def normalize_fingerprint(text: str) -> str | None:
    """A SHA-256 fingerprint as 64 lower-case hex digits (colons between pairs allowed)."""
    if not isinstance(text, str) or _FINGERPRINT.fullmatch(text) is None:
        return None
    return text.replace(":", "").lower()


@dataclass(frozen=True, slots=True)
class MtlsClient:
    """A client a certificate identifies: its name, ``(namespace, role)`` bindings and scope."""

    name: str
    roles: RoleBindings
    scope: tuple[str, ...]


def _scope(value: object, where: str, roles: RoleBindings) -> tuple[str, ...]:
    if value is None:
        return default_scope(roles)
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or len(items) > _MAX_SCOPE:
        raise InputError(f"{where}: 'scope' must be \"*\" or a non-empty list of actions")
    try:
        return check_scope(items)
    except InputError as exc:
        raise InputError(f"{where}: {exc.message}") from None


def _subject(value: object, where: str) -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= _MAX_SUBJECT
        or "=" not in value
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    ):
        raise InputError(
            f"{where}: 'subject' must be an RFC 4514 distinguished name such as "
            '"CN=ci-runner,O=Acme" (one line, at most 1024 characters)'
        )
    return value


@dataclass(frozen=True, slots=True)
class _Entry:
    client: MtlsClient
    sha256: str | None
    subject: str | None


def _entry(table: object, index: int) -> _Entry:
    where = f"mTLS client #{index + 1}"
    if not isinstance(table, Mapping):
        raise InputError(f"{where} must be a [[clients]] table")
    unknown = sorted(str(key)[:64] for key in table if key not in _KEYS)
    if unknown:
        raise InputError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(_KEYS))}"
        )
    name = table.get("name")
    if not is_name(name):
        raise InputError(
            f"{where}: 'name' must be 1-64 lower-case letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    where = f"{where} ({name})"
    if ("sha256" in table) == ("subject" in table):
        raise InputError(f"{where}: give exactly one of 'sha256' and 'subject'")
    sha256 = None
    if "sha256" in table:
        sha256 = normalize_fingerprint(table["sha256"])
        if sha256 is None:
            raise InputError(
                f"{where}: 'sha256' must be the certificate's SHA-256 fingerprint: 64 hex "
                "digits, optionally in colon-separated pairs"
            )
    subject = _subject(table["subject"], where) if "subject" in table else None
    if "roles" not in table:
        raise InputError(f"{where}: 'roles' is required, e.g. roles = [\"publisher:vision\"]")
    roles = role_bindings(table["roles"], f"{where}: 'roles'")
    return _Entry(
        MtlsClient(name, roles, _scope(table.get("scope"), where, roles)), sha256, subject
    )


class ClientCertificates:
    """The configured mTLS clients, looked up by certificate fingerprint or subject."""

    def __init__(self, entries: tuple[_Entry, ...]) -> None:
        by_sha256: dict[str, MtlsClient] = {}
        by_subject: dict[str, MtlsClient] = {}
        names: set[str] = set()
        for entry in entries:
            name = entry.client.name
            if name in names:
                raise InputError(f"mTLS client {name!r} is listed twice; keep one table each")
            names.add(name)
            index, key = by_sha256, entry.sha256
            if key is None:
                index, key = by_subject, entry.subject or ""
            if key in index:
                raise InputError(
                    f"mTLS clients {index[key].name!r} and {name!r} name the same certificate"
                )
            index[key] = entry.client
        self._by_sha256 = MappingProxyType(by_sha256)
        self._by_subject = MappingProxyType(by_subject)

    @property
    def clients(self) -> tuple[MtlsClient, ...]:
        """Every configured client, fingerprint-matched ones first."""
        return (*self._by_sha256.values(), *self._by_subject.values())

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> ClientCertificates:
        """From a parsed document holding a non-empty ``clients`` list of tables."""
        if not isinstance(document, Mapping):
            raise InputError("the mTLS client list must be a table with [[clients]]")
        extra = sorted(str(key)[:64] for key in document if key != "clients")
        if extra:
            raise InputError(f"unknown top-level mTLS setting(s) {', '.join(map(repr, extra))}")
        tables = document.get("clients")
        if not isinstance(tables, list) or not tables:
            raise InputError("the mTLS client list has no [[clients]] table; add one per client")
        if len(tables) > _MAX_CLIENTS:
            raise InputError(f"the mTLS client list holds more than {_MAX_CLIENTS} clients")
        return cls(tuple(_entry(table, index) for index, table in enumerate(tables)))

    @classmethod
    def from_toml(cls, text: str) -> ClientCertificates:
        """From a TOML document of ``[[clients]]`` tables; InputError naming what is wrong."""
        try:
            document = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, TypeError) as exc:
            raise InputError(f"the mTLS client list is not valid TOML: {exc}") from exc
        return cls.from_document(document)

    def identify(self, fingerprint_hex: str, subject: str) -> MtlsClient | None:
        """The client a verified certificate names: by fingerprint first, then by subject."""
        fingerprint = normalize_fingerprint(fingerprint_hex)
        if fingerprint is not None and fingerprint in self._by_sha256:
            return self._by_sha256[fingerprint]
        if isinstance(subject, str) and subject:
            return self._by_subject.get(subject)
        return None
