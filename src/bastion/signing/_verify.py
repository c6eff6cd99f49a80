"""Verifying a model: authenticate each bundle against a trust policy, then
compare what it signed with the files on disk.

Order matters: the envelope's signature is checked before the statement it
covers is parsed; a certificate chain is validated at the signing time the
signed statement records; only then are files hashed and compared. Every
failure is a :class:`VerificationError`; what differed is on its ``result``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bastion._files import read_input
from bastion.errors import ModelTreeError, PathNotFoundError, UsageError, VerificationError
from bastion.signing._bundle import MAX_BUNDLE_BYTES, Bundle, Statement, pae
from bastion.signing._cache import DigestCache
from bastion.signing._certs import (
    MAX_CERT_FILE,
    leaf_public_key,
    load_pem_certificates,
    verify_chain,
)
from bastion.signing._hashing import ManifestHasher
from bastion.signing._keys import MAX_KEY_FILE, PublicKey
from bastion.signing._manifest import ManifestDiff, Method, Resource, file_of
from bastion.signing._result import Signer, VerificationResult
from bastion.signing._sign import default_signature_path, signature_name
from bastion.signing._tree import SINGLE_FILE_NAME, walk_model
from bastion.signing._trust import TrustPolicy

__all__ = ["read_signature", "signed_files", "verify", "verify_digests"]

#: How far in the future a recorded signing time may lie (clock skew).
CLOCK_SKEW = timedelta(minutes=5)
DIFFERENT_MODEL = "none of the files it covers match this model"


def verify(
    model_path: str | os.PathLike[str],
    *,
    trust: TrustPolicy | None = None,
    public_key: PublicKey | str | os.PathLike[str] | None = None,
    ca: str | os.PathLike[str] | None = None,
    identities: Sequence[str] = (),
    signatures: Sequence[str | os.PathLike[str]] | None = None,
    cache: DigestCache | None = None,
    threads: int | None = None,
    now: datetime | None = None,
) -> VerificationResult:
    """Verify the model at ``model_path``; raise :class:`VerificationError` if it does not.

    Trust comes from exactly one of ``trust`` (a :class:`TrustPolicy`),
    ``public_key`` (a key or PEM file) or ``ca`` (a PEM file of root
    certificates, with the accepted ``identities``, which must be given:
    ``["*"]`` accepts any). ``signatures`` lists the bundle files (default: the
    one ``sign`` writes by default); with several, each must verify and
    together they must come from as many distinct keys as the policy's threshold.
    A signature that is a symbolic link in or into the model is refused.
    """
    policy = _policy(trust, public_key, ca, identities)
    model = Path(model_path)
    if not model.exists():
        raise PathNotFoundError(f"model path {os.fspath(model)!r} does not exist")
    paths = [Path(s) for s in signatures] if signatures else [default_signature_path(model)]
    sig_names = _signature_names(model, paths)
    at = now or datetime.now(UTC)
    result: VerificationResult | None = None
    signers: list[Signer] = []
    keys: list[PublicKey] = []
    for path in paths:
        bundle = Bundle.from_json(read_input(path, "signature", limit=MAX_BUNDLE_BYTES))
        signer, statement, key = _authenticate(bundle, policy, os.fspath(path), at)
        signers.append(signer)
        keys.append(key)
        result = _compare(model, statement, sig_names, cache, threads)
        result = replace(result, signers=tuple(signers))
        if not result.ok:
            raise VerificationError(_describe_mismatch(result, os.fspath(path)), result=result)
    assert result is not None
    distinct = _distinct_keys(keys)
    if distinct < policy.threshold:
        raise VerificationError(
            f"the trust policy needs {policy.threshold} distinct trusted signers; "
            f"the signatures given come from {distinct} distinct key(s) (one key counts "
            "once, under whichever entries trust it): add signatures by other trusted keys",
            result=result,
        )
    return result


def _signature_names(model: Path, paths: Sequence[Path]) -> set[str]:
    """The names, inside the model, of the bundles being checked: left out of the comparison."""
    names = set()
    for path in paths:
        try:
            name = signature_name(model, path)
        except ModelTreeError as exc:
            raise VerificationError(f"cannot verify: {exc.message}") from exc
        if name is not None:
            names.add(name)
    return names


def _distinct_keys(keys: Sequence[PublicKey]) -> int:
    """How many distinct keys signed: the same key counts once, whether trusted as a key
    or through a certificate, and so does a hybrid key with its own classical half."""
    groups: list[set[bytes]] = []
    for key in keys:
        group = {part.pem for part in key.parts}
        for other in [g for g in groups if g & group]:
            group |= other
            groups.remove(other)
        groups.append(group)
    return len(groups)


def read_signature(
    signature: bytes,
    *,
    trust: TrustPolicy,
    now: datetime | None = None,
    source: str = "the signature",
) -> tuple[Signer, Statement]:
    """Authenticate a bundle's bytes against ``trust``, then parse the statement it signs.

    Raises :class:`BundleFormatError` for a malformed bundle and
    :class:`VerificationError` for one that is not trusted.
    """
    signer, statement, _ = _authenticate(
        Bundle.from_json(signature), trust, source, now or datetime.now(UTC)
    )
    return signer, statement


def signed_files(statement: Statement) -> list[str]:
    """The file names a statement covers, in manifest order, each once."""
    method = statement.serialization.method
    return list(dict.fromkeys(file_of(r.name, method)[0] for r in statement.resources))


def verify_digests(
    signature: bytes,
    resources: Sequence[Resource],
    *,
    trust: TrustPolicy,
    now: datetime | None = None,
    source: str = "the signature",
) -> tuple[VerificationResult, Statement]:
    """Verify ``signature`` (a bundle's bytes) for files hashed elsewhere, e.g. while uploaded.

    ``resources`` are the digests computed from the files (with
    :class:`StreamDigester`, in the bundle's own serialization). The bundle is
    authenticated against ``trust`` before anything it covers is read. Raises
    :class:`VerificationError` on any failure; the result says which files differ.
    """
    at = now or datetime.now(UTC)
    bundle = Bundle.from_json(signature)
    signer, statement, _ = _authenticate(bundle, trust, source, at)
    if trust.threshold > 1:
        raise VerificationError(
            f"the trust policy needs {trust.threshold} distinct signers; one signature was given"
        )
    ser = statement.serialization
    local = list(resources)
    if ser.method == "shards" and statement.extension_version is None:
        local = [r for r in local if not r.name.endswith(":0:0")]
    diff = ManifestDiff.compare(statement.resources, local, ser.method)
    result = VerificationResult(
        model="(uploaded files)",
        root_digest=statement.root_digest,
        serialization=ser.to_dict(),
        files=len({file_of(r.name, ser.method)[0] for r in local}),
        signers=(signer,),
        modified=diff.modified,
        added=diff.added,
        removed=diff.removed,
        notes=(DIFFERENT_MODEL,) if not diff.ok and diff.matching == 0 else (),
    )
    if not result.ok:
        raise VerificationError(_describe_mismatch(result, source), result=result)
    return result, statement


def _policy(
    trust: TrustPolicy | None,
    public_key: PublicKey | str | os.PathLike[str] | None,
    ca: str | os.PathLike[str] | None,
    identities: Sequence[str],
) -> TrustPolicy:
    given = [x for x in (trust, public_key, ca) if x is not None]
    if len(given) != 1:
        raise UsageError(
            "say whom to trust with exactly one of: a trust policy, a public key, a CA"
        )
    if trust is not None:
        return trust
    if public_key is not None:
        if not isinstance(public_key, PublicKey):
            public_key = PublicKey.from_pem(
                read_input(public_key, "public key", limit=MAX_KEY_FILE),
                source=f"public key {os.fspath(public_key)!r}",
            )
        return TrustPolicy.for_keys([public_key])
    assert ca is not None
    if not identities:
        raise UsageError(
            "verifying with a CA needs the certificate identities to accept: pass "
            "identities=[...], or identities=['*'] to accept any identity the CA certifies"
        )
    roots = load_pem_certificates(
        read_input(ca, "CA certificate", limit=MAX_CERT_FILE), source=os.fspath(ca)
    )
    return TrustPolicy.for_roots(roots, identities)


def _key_signed(key: PublicKey, bundle: Bundle, message: bytes) -> bool:
    """Every part of ``key`` (both, for a hybrid key) has a valid signature."""
    return all(any(part.verify(s.sig, message) for s in bundle.signatures) for part in key.parts)


def _authenticate(
    bundle: Bundle, policy: TrustPolicy, source: str, at: datetime
) -> tuple[Signer, Statement, PublicKey]:
    """The trusted signer of ``bundle``, the statement it signs, and the key that signed it."""
    message = pae(bundle.payload)
    if bundle.certificates:
        leaf_key = leaf_public_key(bundle.certificates[0], source=source)
        if not _key_signed(leaf_key, bundle, message):
            raise VerificationError(f"{source}: the signature does not match its certificate")
        statement = Statement.from_payload(bundle.payload)
        signed_at = _check_time(statement, at, source)
        failures = []
        for authority in policy.authorities:
            try:
                verified = verify_chain(bundle.certificates, authority.roots, signed_at)
            except VerificationError as exc:
                failures.append(exc.message)
                continue
            if not authority.accepts(verified.identities):
                failures.append(
                    f"identity {', '.join(verified.identities) or '(none)'} is not trusted"
                )
                continue
            _check_algorithm(policy, verified.public_key, source)
            signer = Signer(
                authority.name,
                "certificate",
                verified.public_key.algorithm,
                verified.public_key.fingerprint,
                source,
                verified.identities,
                statement.signed_at,
            )
            return signer, statement, verified.public_key
        reason = "; ".join(failures) or "the trust policy names no certificate authority"
        raise VerificationError(f"{source}: certificate not trusted: {reason}")
    candidates = [
        k for k in policy.keys if bundle.key_hint is None or k.key.hint == bundle.key_hint
    ]
    for trusted in candidates:
        if _key_signed(trusted.key, bundle, message):
            _check_algorithm(policy, trusted.key, source)
            statement = Statement.from_payload(bundle.payload)
            _check_time(statement, at, source)
            signer = Signer(
                trusted.name,
                "key",
                trusted.key.algorithm,
                trusted.key.fingerprint,
                source,
                (),
                statement.signed_at,
            )
            return signer, statement, trusted.key
    if not candidates:
        raise VerificationError(f"{source}: signed by a key the trust policy does not name")
    raise VerificationError(f"{source}: the signature is not valid for the trusted key")


def _check_algorithm(policy: TrustPolicy, key: PublicKey, source: str) -> None:
    if key.algorithm not in policy.algorithms:
        raise VerificationError(
            f"{source}: algorithm {key.algorithm} is not allowed by the trust policy"
        )


def _check_time(statement: Statement, at: datetime, source: str) -> datetime:
    if statement.signed_at is None:
        return at
    if statement.signed_at > at + CLOCK_SKEW:
        raise VerificationError(f"{source}: the recorded signing time is in the future")
    return statement.signed_at


def _compare(
    model: Path,
    statement: Statement,
    sig_names: set[str],
    cache: DigestCache | None,
    threads: int | None,
) -> VerificationResult:
    ser = statement.serialization
    base = VerificationResult(
        model=os.fspath(model),
        root_digest=statement.root_digest,
        serialization=ser.to_dict(),
    )
    ignore = ser.ignore_paths + tuple(sorted(sig_names))
    try:
        files = walk_model(model, ignore_paths=ignore, allow_symlinks=ser.allow_symlinks)
    except ModelTreeError as exc:
        raise VerificationError(f"the model does not match its signature: {exc.message}") from exc
    # Bundles from the reference tool leave empty files out in shards mode;
    # Bastion's record them, so adding an empty file is caught.
    record_empty = statement.extension_version is not None
    local = ManifestHasher(
        ser, threads=threads, cache=cache, record_empty_shards=record_empty
    ).hash(files)
    signed = [r for r in statement.resources if file_of(r.name, ser.method)[0] not in sig_names]
    local = _align_single_file(model, signed, local, ser.method)
    diff = ManifestDiff.compare(signed, local, ser.method)
    notes: tuple[str, ...] = ()
    if ser.method == "shards" and not record_empty:
        notes += ("this signature (from another signer) does not cover empty files",)
    if not diff.ok and diff.matching == 0:
        notes += (DIFFERENT_MODEL,)
    return replace(
        base,
        files=len(files),
        modified=diff.modified,
        added=diff.added,
        removed=diff.removed,
        notes=notes,
    )


def _align_single_file(
    model: Path, signed: list[Resource], local: list[Resource], method: Method
) -> list[Resource]:
    """A single-file model is named ``.`` by the reference and by its base name
    in the specification: accept either."""
    if model.is_dir():
        return local
    signed_files = {file_of(r.name, method)[0] for r in signed}
    if signed_files != {model.name}:
        return local
    out = []
    for r in local:
        path, start, end = file_of(r.name, method)
        if path == SINGLE_FILE_NAME:
            name = model.name if method == "files" else f"{model.name}:{start}:{end}"
            r = Resource(name, r.algorithm, r.digest)
        out.append(r)
    return out


def _describe_mismatch(result: VerificationResult, source: str) -> str:
    if DIFFERENT_MODEL in result.notes:
        return f"{source} is a valid signature, but for a different model: {DIFFERENT_MODEL}"
    parts = []
    for label, names in (
        ("modified", result.modified),
        ("added", result.added),
        ("removed", result.removed),
    ):
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            parts.append(f"{len(names)} {label} ({shown})")
    return "the model does not match its signature: " + "; ".join(parts)
