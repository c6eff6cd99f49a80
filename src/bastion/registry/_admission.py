"""Admission of a committed version: digests, signature, then a scan of the stored bytes.

The digests computed while the files arrived are checked against the signed
manifest, and the signature against the namespace's trust policy as it is now.
The scan reads the exact bytes stored: each blob is decrypted into the upload's
private staging folder (``_staging.py``), the folder is scanned statically, and
it is removed on every path. Every failing
step is recorded as a reason; any reason quarantines the version.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bastion.crypto import WrappedKey, iter_decrypt
from bastion.db import FileRow, ModelRow, Namespace, VersionRow
from bastion.errors import BastionError
from bastion.registry._catalog import check_policy
from bastion.registry._hub import Hub
from bastion.registry._staging import create_staged_file, staging_root
from bastion.registry._uploads import artifact_context
from bastion.scanning import scan
from bastion.signing import Signer, verify_digests
from bastion.signing._manifest import Resource

__all__ = ["Verdict", "admit"]


@dataclass(slots=True)
class Verdict:
    reasons: list[str] = field(default_factory=list)
    signers: list[dict[str, Any]] = field(default_factory=list)
    root_digest: str | None = None
    scan: dict[str, Any] | None = None

    @property
    def admitted(self) -> bool:
        return not self.reasons


@dataclass(frozen=True, slots=True)
class _Stored:
    path: str
    blob_id: str
    wrapped_key: str
    size: int


def admit(hub: Hub, upload_id: str) -> Verdict:
    verdict = Verdict()
    with hub.db.session() as s:
        version = s.scalars(select(VersionRow).where(VersionRow.upload_id == upload_id)).one()
        ns = s.scalars(
            select(Namespace).join(ModelRow).where(ModelRow.id == version.model_id)
        ).one()
        policy_text, signature = ns.trust_policy, version.signature
        rows = s.scalars(select(FileRow).where(FileRow.version_id == version.id)).all()
        resources = [
            Resource(d["name"], d["algorithm"], bytes.fromhex(d["digest"]))
            for f in rows
            for d in json.loads(f.digests or "[]")
        ]
        stored = [_Stored(f.path, f.blob_id, f.wrapped_key or "", f.size) for f in rows]
    try:
        result, _statement = verify_digests(
            signature, resources, trust=check_policy(policy_text), now=hub.now()
        )
        verdict.signers = [_signer(s) for s in result.signers]
        verdict.root_digest = result.root_digest
    except BastionError as exc:
        verdict.reasons.append(f"signature: {exc.message}")
    _scan(hub, upload_id, stored, verdict)
    return verdict


def _signer(signer: Signer) -> dict[str, Any]:
    body = signer.to_dict()
    body.pop("signature", None)  # the server-side name of the bundle, not the signer's
    return body


def _scan(hub: Hub, upload_id: str, stored: list[_Stored], verdict: Verdict) -> None:
    hub.staging.mkdir(mode=0o700, parents=True, exist_ok=True)
    root = staging_root(hub.staging, upload_id)
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        for f in stored:
            _stage(hub, root, f)
        report = scan(root)
        findings = report.at_or_above(hub.limits.scan_threshold)
        verdict.scan = _relative(report.to_dict(), root)
        if findings:
            worst = max(f.severity for f in findings)
            verdict.reasons.append(
                f"scan: {len(findings)} finding(s) at or above "
                f"{hub.limits.scan_threshold.label} (worst: {worst.label}, "
                f"e.g. {findings[0].rule_id} in {_rel(findings[0].path, root)})"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _stage(hub: Hub, root: Path, f: _Stored) -> None:
    """Decrypt one stored file into the staging folder."""
    context = artifact_context(f.blob_id)
    key = hub.keys.unwrap(WrappedKey.from_text(f.wrapped_key), context=context)
    fd = create_staged_file(root, f.path)
    with os.fdopen(fd, "wb") as out, hub.blobs.open(f.blob_id) as blob:
        for chunk in iter_decrypt(blob, key, associated_data=context):
            out.write(chunk)


def _rel(path: str, root: Path) -> str:
    prefix = str(root) + os.sep
    return path[len(prefix) :] if path.startswith(prefix) else path


def _relative(body: Any, root: Path) -> Any:
    """The report with the staging folder's path taken out of every string."""
    if isinstance(body, dict):
        return {k: _relative(v, root) for k, v in body.items()}
    if isinstance(body, list):
        return [_relative(v, root) for v in body]
    if isinstance(body, str):
        return _rel(body, root).replace(str(root), ".")
    return body
