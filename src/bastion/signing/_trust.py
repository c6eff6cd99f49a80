"""Trust policies: which keys and certificate authorities may sign, with which
algorithms, and how many distinct trusted signers a model needs.

The file is TOML (``docs/trust-policy.md``)::

    version = 1
    threshold = 1                       # distinct trusted signers required
    algorithms = ["ecdsa-p256", "hybrid-ecdsa-p384-ml-dsa-65"]   # optional

    [[keys]]
    name = "release"
    public_key = '''-----BEGIN PUBLIC KEY----- ...'''   # or: path = "release.pub"

    [[certificates]]
    name = "corp-pki"
    roots = '''-----BEGIN CERTIFICATE----- ...'''       # or: roots_path = "root.crt"
    identities = ["release-bot@example.com"]            # "*" for any identity

Unknown keys are errors (a typo must not silently widen trust), and a policy
that trusts nothing is an error, never a pass.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bastion._files import read_input
from bastion.errors import InputError, TrustPolicyError
from bastion.signing._certs import MAX_CERT_FILE, load_pem_certificates
from bastion.signing._keys import HYBRID, MAX_KEY_FILE, PublicKey

__all__ = ["ALGORITHMS", "TrustPolicy", "TrustedAuthority", "TrustedKey"]

ALGORITHMS = frozenset({"ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519", "ml-dsa-65", HYBRID})
POLICY_VERSION = 1
ANY_IDENTITY = "*"
_MAX_POLICY_FILE = 4 << 20


@dataclass(frozen=True, slots=True)
class TrustedKey:
    name: str
    key: PublicKey


@dataclass(frozen=True, slots=True)
class TrustedAuthority:
    name: str
    roots: tuple[x509.Certificate, ...]
    identities: tuple[str, ...]

    def accepts(self, names: Sequence[str]) -> bool:
        return ANY_IDENTITY in self.identities or any(n in self.identities for n in names)


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """Who may sign, and how many must."""

    keys: tuple[TrustedKey, ...] = ()
    authorities: tuple[TrustedAuthority, ...] = ()
    threshold: int = 1
    algorithms: frozenset[str] = field(default=ALGORITHMS)

    def __post_init__(self) -> None:
        if not self.keys and not self.authorities:
            raise TrustPolicyError("the trust policy trusts no key and no certificate authority")
        names = [k.name for k in self.keys] + [a.name for a in self.authorities]
        if len(set(names)) != len(names):
            raise TrustPolicyError("two entries of the trust policy have the same name")
        if not 1 <= self.threshold <= len(names):
            raise TrustPolicyError(
                f"threshold {self.threshold} cannot be met: the policy names {len(names)} signer(s)"
            )
        if not self.algorithms:
            raise TrustPolicyError("the trust policy allows no algorithm")
        unknown = self.algorithms - ALGORITHMS
        if unknown:
            raise TrustPolicyError(
                f"unknown algorithm(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(ALGORITHMS))}"
            )
        for authority in self.authorities:
            if not authority.roots:
                raise TrustPolicyError(f"certificate entry {authority.name!r} has no root")
            if not authority.identities:
                raise TrustPolicyError(
                    f"certificate entry {authority.name!r} lists no identities; "
                    'name the identities to trust, or "*" for any'
                )

    @classmethod
    def for_keys(cls, keys: Sequence[PublicKey]) -> TrustPolicy:
        """Trust exactly these keys, any one of them sufficing."""
        return cls(keys=tuple(TrustedKey(k.fingerprint, k) for k in keys))

    @classmethod
    def for_roots(cls, roots: Sequence[x509.Certificate], identities: Sequence[str]) -> TrustPolicy:
        """Trust certificates chaining to ``roots`` for ``identities`` (``["*"]``: any)."""
        return cls(authorities=(TrustedAuthority("ca", tuple(roots), tuple(identities)),))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TrustPolicy:
        file = Path(path)
        data = read_input(file, "trust policy", limit=_MAX_POLICY_FILE)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TrustPolicyError(f"trust policy {str(file)!r} is not UTF-8 text") from exc
        return cls.from_toml(text, base_dir=file.parent, source=str(file))

    @classmethod
    def from_toml(
        cls,
        text: str,
        *,
        base_dir: str | os.PathLike[str] | None = ".",
        source: str = "trust policy",
    ) -> TrustPolicy:
        """Parse a policy; with ``base_dir=None`` keys must be inline (no file is read)."""
        try:
            doc = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, RecursionError, ValueError) as exc:
            raise TrustPolicyError(f"{source} is not valid TOML: {exc}") from exc
        _only(doc, {"version", "threshold", "algorithms", "keys", "certificates"}, source)
        version = doc.get("version")
        if type(version) is not int or version != POLICY_VERSION:  # not true, not 1.0
            raise TrustPolicyError(f"{source} must say version = {POLICY_VERSION}")
        base = None if base_dir is None else Path(base_dir)
        keys = tuple(
            _read_key(entry, base, f"{source} [[keys]] #{i + 1}")
            for i, entry in enumerate(_tables(doc.get("keys", []), "keys", source))
        )
        authorities = tuple(
            _read_authority(entry, base, f"{source} [[certificates]] #{i + 1}")
            for i, entry in enumerate(_tables(doc.get("certificates", []), "certificates", source))
        )
        threshold = doc.get("threshold", 1)
        if not isinstance(threshold, int) or isinstance(threshold, bool):
            raise TrustPolicyError(f"{source}: threshold must be a whole number")
        algorithms = doc.get("algorithms", sorted(ALGORITHMS))
        if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
            raise TrustPolicyError(f"{source}: algorithms must be a list of names")
        return cls(keys, authorities, threshold, frozenset(algorithms))

    def to_toml(self) -> str:
        """The policy as a self-contained TOML document (keys and roots inline)."""
        lines = [
            "# Bastion trust policy: who may sign models, and how many must.",
            f"version = {POLICY_VERSION}",
            f"threshold = {self.threshold}",
            "algorithms = [" + ", ".join(_toml_str(a) for a in sorted(self.algorithms)) + "]",
        ]
        for k in self.keys:
            lines += [
                "",
                "[[keys]]",
                f"name = {_toml_str(k.name)}",
                f"# {k.key.algorithm}, {k.key.fingerprint}",
                f"public_key = '''\n{k.key.pem.decode().strip()}\n'''",
            ]
        for a in self.authorities:
            pem = b"".join(r.public_bytes(serialization.Encoding.PEM) for r in a.roots)
            lines += [
                "",
                "[[certificates]]",
                f"name = {_toml_str(a.name)}",
                f"roots = '''\n{pem.decode().strip()}\n'''",
                "identities = [" + ", ".join(_toml_str(i) for i in a.identities) + "]",
            ]
        return "\n".join(lines) + "\n"


def _toml_char(c: str) -> str:
    if c.isprintable():
        return c
    code = ord(c)
    if 0xD800 <= code <= 0xDFFF:
        raise TrustPolicyError("a name in the trust policy holds a lone surrogate")
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _toml_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(_toml_char(c) for c in escaped) + '"'


def _only(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise TrustPolicyError(f"{where}: unknown setting(s) {', '.join(unknown)}")


def _tables(value: object, name: str, source: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise TrustPolicyError(f"{source}: {name} must be an array of tables ([[{name}]])")
    return value


def _name(entry: Mapping[str, Any], where: str) -> str:
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise TrustPolicyError(f"{where}: every entry needs a name")
    return name


def _inline_or_file(
    entry: Mapping[str, Any], inline: str, path_key: str, base: Path | None, where: str
) -> tuple[bytes, str]:
    has_inline, has_path = inline in entry, path_key in entry
    if has_inline == has_path:
        raise TrustPolicyError(f"{where}: give exactly one of {inline} and {path_key}")
    if has_inline:
        value = entry[inline]
        if not isinstance(value, str):
            raise TrustPolicyError(f"{where}: {inline} must be a PEM string")
        return value.encode(), f"{where} {inline}"
    value = entry[path_key]
    if base is None:
        raise TrustPolicyError(f"{where}: give {inline} inline here; {path_key} is not read")
    if not isinstance(value, str):
        raise TrustPolicyError(f"{where}: {path_key} must be a string")
    file = base / value
    limit = MAX_KEY_FILE if inline == "public_key" else MAX_CERT_FILE
    try:
        return read_input(file, path_key, limit=limit), str(file)
    except InputError as exc:
        raise TrustPolicyError(f"{where}: cannot read {path_key}: {exc.message}") from exc


def _read_key(entry: Mapping[str, Any], base: Path | None, where: str) -> TrustedKey:
    _only(entry, {"name", "public_key", "path"}, where)
    name = _name(entry, where)
    data, source = _inline_or_file(entry, "public_key", "path", base, where)
    try:
        return TrustedKey(name, PublicKey.from_pem(data, source=source))
    except InputError as exc:
        raise TrustPolicyError(f"{where}: {exc.message}") from exc


def _read_authority(entry: Mapping[str, Any], base: Path | None, where: str) -> TrustedAuthority:
    _only(entry, {"name", "roots", "roots_path", "identities"}, where)
    name = _name(entry, where)
    data, source = _inline_or_file(entry, "roots", "roots_path", base, where)
    try:
        roots = tuple(load_pem_certificates(data, source=source))
    except InputError as exc:
        raise TrustPolicyError(f"{where}: {exc.message}") from exc
    identities = entry.get("identities")
    if not isinstance(identities, list) or not all(isinstance(i, str) for i in identities):
        raise TrustPolicyError(f"{where}: identities must be a list of strings")
    return TrustedAuthority(name, roots, tuple(identities))
