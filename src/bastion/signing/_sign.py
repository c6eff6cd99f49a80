"""Signing a model: hash every file, build the OMS statement, sign, write the bundle."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bastion._files import read_input
from bastion.errors import (
    BundleFormatError,
    InputError,
    ModelTreeError,
    PathNotFoundError,
    UsageError,
)
from bastion.signing._bundle import (
    MAX_BUNDLE_BYTES,
    Bundle,
    DsseSignature,
    Statement,
    format_timestamp,
    pae,
)
from bastion.signing._cache import DigestCache
from bastion.signing._certs import MAX_CERT_FILE, load_pem_certificates, signing_refusal
from bastion.signing._hashing import ManifestHasher
from bastion.signing._keys import MAX_KEY_FILE, PrivateKey
from bastion.signing._manifest import (
    DEFAULT_SHARD_SIZE,
    HashType,
    Method,
    Serialization,
    check_relative_name,
)
from bastion.signing._result import SignResult
from bastion.signing._tree import GIT_PATHS, walk_model

__all__ = ["DEFAULT_SIGNATURE_NAME", "default_signature_path", "sign", "signature_name"]

DEFAULT_SIGNATURE_NAME = "model.sig"

#: Every Sigstore bundle's ``mediaType`` starts with this, whatever its version.
_SIGSTORE_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle"


def default_signature_path(model: Path) -> Path:
    """``model.sig`` inside a model folder; ``<file>.sig`` beside a single-file model."""
    return (
        model / DEFAULT_SIGNATURE_NAME if model.is_dir() else model.with_name(model.name + ".sig")
    )


def relative_inside(model: Path, path: Path) -> str | None:
    """``path`` relative to the model folder, or None when it lies outside."""
    if not model.is_dir():
        return None
    return _name_inside(model.resolve(), path.resolve())


def signature_name(model: Path, signature: Path) -> str | None:
    """The name of the signature file inside the model folder, or None when it lies outside.

    Only the folders on the way are resolved, never the file itself, so the name
    returned is the very entry that is read (at verification) or replaced (at
    signing), and only that entry is left out of the manifest. A signature that
    is a symbolic link inside the model, or one that leads into the model, is
    refused: a ``model.sig -> config.json`` link would otherwise leave
    ``config.json`` out of the comparison.
    """
    if not model.is_dir():
        return None
    root = model.resolve()
    # ".." names a folder, never a bundle: resolve it whole.
    parent = signature.parent.resolve()
    where = parent / signature.name if signature.name != ".." else signature.resolve()
    rel = _name_inside(root, where)
    if not signature.is_symlink():
        return rel
    target = _name_inside(root, signature.resolve())
    if rel is None and target is None:
        return None
    shown = os.fspath(signature)
    pointing = f" to {target!r} in the model" if target is not None else ""
    raise ModelTreeError(
        f"signature {shown!r} is a symbolic link{pointing}; a signature in or pointing into "
        "the model must be a regular file: replace the link with the bundle itself, or give "
        "the bundle's real path"
    )


def _name_inside(root: Path, path: Path) -> str | None:
    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    return rel.as_posix() if rel.parts else None


def normalize_ignore_paths(model: Path, paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """User ignore paths as names relative to the model root (no globs, no escape)."""
    out = []
    for raw in paths:
        p = Path(raw)
        if p.is_absolute():
            rel = relative_inside(model, p)
            if rel is None:
                raise UsageError(f"ignore path {os.fspath(raw)!r} is outside the model")
        else:
            rel = p.as_posix().strip("/")
        try:
            out.append(check_relative_name(rel, what="ignore path"))
        except BundleFormatError:  # the rule a bundle's names follow; here, the caller's
            raise UsageError(
                f"ignore path {os.fspath(raw)!r} is not a plain name inside the model (no "
                "'..', no empty or '.' parts); name a file or folder inside the model"
            ) from None
    return out


def effective_ignore_paths(
    model: Path,
    signature_path: Path,
    ignore_paths: Iterable[str | os.PathLike[str]],
    ignore_git_paths: bool,
) -> tuple[str, ...]:
    ignored = set(normalize_ignore_paths(model, ignore_paths))
    if ignore_git_paths and model.is_dir():
        ignored.update(GIT_PATHS)
    signature_rel = signature_name(model, signature_path)
    if signature_rel is not None:
        ignored.add(signature_rel)
    return tuple(sorted(ignored))


def _load_certificate(
    key: PrivateKey,
    certificate: str | os.PathLike[str],
    chain: Sequence[str | os.PathLike[str]],
    signed_at: datetime,
) -> list[x509.Certificate]:
    leaf = load_pem_certificates(
        read_input(certificate, "certificate", limit=MAX_CERT_FILE), source="certificate"
    )[0]
    if len(key.keys) != 1:
        raise UsageError("certificates are used with a single classical key, not a hybrid key")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(serialization.Encoding.PEM, spki) != key.public_key.pem:
        raise InputError("the certificate's public key does not match the private key")
    refusal = signing_refusal(leaf)
    if refusal is not None:
        raise InputError(f"the certificate may not sign models: {refusal}")
    if not leaf.not_valid_before_utc <= signed_at <= leaf.not_valid_after_utc:
        raise InputError(
            f"the certificate is valid only from {leaf.not_valid_before_utc:%Y-%m-%d} "
            f"to {leaf.not_valid_after_utc:%Y-%m-%d}; a signature made at "
            f"{format_timestamp(signed_at)} would not verify"
        )
    intermediates = [
        cert
        for path in chain
        for cert in load_pem_certificates(
            read_input(path, "chain file", limit=MAX_CERT_FILE), source=os.fspath(path)
        )
    ]
    return [leaf, *intermediates]


def sign(
    model_path: str | os.PathLike[str],
    key: PrivateKey | str | os.PathLike[str],
    *,
    passphrase: bytes | None = None,
    certificate: str | os.PathLike[str] | None = None,
    chain: Sequence[str | os.PathLike[str]] = (),
    signature_path: str | os.PathLike[str] | None = None,
    hash_type: HashType = "sha256",
    method: Method = "files",
    shard_size: int = DEFAULT_SHARD_SIZE,
    ignore_paths: Iterable[str | os.PathLike[str]] = (),
    ignore_git_paths: bool = True,
    allow_symlinks: bool = False,
    cache: DigestCache | None = None,
    threads: int | None = None,
    now: datetime | None = None,
    overwrite: bool = False,
) -> SignResult:
    """Sign the model at ``model_path`` and write an OMS bundle.

    ``key`` is a :class:`PrivateKey` or the path of a PEM key file (with
    ``passphrase`` if it is encrypted). With ``certificate`` (and optional
    ``chain`` files), the bundle carries the X.509 chain instead of a key hint.
    The signature goes to ``signature_path`` (default ``model.sig`` in the
    model folder, or ``<file>.sig`` beside a single file) and is left out of
    the manifest. An existing file there is replaced only if it is a signature
    bundle, or with ``overwrite``; a symbolic link there inside the model, or
    the single-file model itself, is always refused. Returns what was signed.
    """
    model = Path(model_path)
    if not model.exists():
        raise PathNotFoundError(f"model path {os.fspath(model)!r} does not exist")
    if not isinstance(key, PrivateKey):
        key = PrivateKey.from_pem(
            read_input(key, "private key", limit=MAX_KEY_FILE),
            passphrase,
            source=f"private key {os.fspath(key)!r}",
        )
    signed_at = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    certs = _load_certificate(key, certificate, chain, signed_at) if certificate else []
    out = Path(signature_path) if signature_path is not None else default_signature_path(model)
    ser = Serialization(
        method=method,
        hash_type=hash_type,
        shard_size=shard_size,
        allow_symlinks=allow_symlinks,
        ignore_paths=effective_ignore_paths(model, out, ignore_paths, ignore_git_paths),
    )
    files = walk_model(model, ignore_paths=ser.ignore_paths, allow_symlinks=allow_symlinks)
    if not files:
        raise ModelTreeError(f"model {os.fspath(model)!r} has no files to sign")
    _check_output(model, out, overwrite)
    resources = ManifestHasher(ser, threads=threads, cache=cache).hash(files)
    statement = Statement.build(model.resolve().name, ser, tuple(resources), signed_at)
    payload = statement.to_payload()
    signatures = tuple(DsseSignature(hint, sig) for hint, sig in key.sign(pae(payload)))
    public = key.public_key
    bundle = Bundle(
        payload,
        signatures,
        key_hint=None if certs else public.hint,
        certificates=tuple(c.public_bytes(serialization.Encoding.DER) for c in certs),
    )
    _write_atomically(out, bundle.to_json())
    return SignResult(
        model=os.fspath(model),
        signature=os.fspath(out),
        root_digest=statement.root_digest,
        algorithm=public.algorithm,
        key_fingerprint=public.fingerprint,
        resources=len(resources),
        signed_at=signed_at,
    )


def _check_output(model: Path, out: Path, overwrite: bool) -> None:
    """Refuse to replace a file that is not a signature bundle (unless ``overwrite``),
    and always refuse to replace the single file being signed."""
    if not out.exists():
        return
    shown = os.fspath(out)
    if not model.is_dir() and os.path.samefile(out, model):
        raise UsageError(
            f"the signature path {shown!r} is the model file being signed, which the "
            "signature would replace; write the signature elsewhere (default: <file>.sig)"
        )
    if not overwrite and not _holds_a_bundle(out):
        raise UsageError(
            f"{shown!r} already exists and is not a signature bundle; give another "
            "signature path, or pass --force (overwrite=True) to replace it"
        )


def _holds_a_bundle(path: Path) -> bool:
    """Whether ``path`` is a regular file holding a Sigstore bundle (of any version)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BUNDLE_BYTES:
            return False
        # A bundle is a JSON object: most other files are told apart by their first bytes.
        if not fh.read(64).lstrip().startswith(b"{"):
            return False
        fh.seek(0)
        data = fh.read(MAX_BUNDLE_BYTES + 1)
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return False
    media_type = doc.get("mediaType") if isinstance(doc, dict) else None
    return isinstance(media_type, str) and media_type.startswith(_SIGSTORE_BUNDLE_MEDIA_TYPE)


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new, never half."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".bastion-", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"cannot write signature {os.fspath(path)!r}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write signature {os.fspath(path)!r}: {exc.strerror}") from exc
