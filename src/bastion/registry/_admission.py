"""Admission of a committed version: digests, signature, then a scan of the stored bytes.

The digests computed while the files arrived are checked against the signed
manifest, and the signature against the namespace's trust policy as it is now.
The scan reads the exact bytes stored, in place: the scanner is handed the
version's blobs as a folder of decrypting streams (``_stored_tree.py``), so no
plaintext is written anywhere. Every failing step is recorded as a reason; any
reason quarantines the version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from bastion.db import FileRow, ModelRow, Namespace, VersionRow
from bastion.errors import BastionError, ModelTreeError
from bastion.registry._catalog import check_policy
from bastion.registry._hub import Hub
from bastion.registry._stored_tree import StoredFileRef, StoredTree
from bastion.scanning import scan_tree
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
        stored = [StoredFileRef(f.path, f.blob_id, f.wrapped_key or "", f.size) for f in rows]
    try:
        result, _statement = verify_digests(
            signature, resources, trust=check_policy(policy_text), now=hub.now()
        )
        verdict.signers = [_signer(s) for s in result.signers]
        verdict.root_digest = result.root_digest
    except BastionError as exc:
        verdict.reasons.append(f"signature: {exc.message}")
    _scan(hub, stored, verdict)
    return verdict


def _signer(signer: Signer) -> dict[str, Any]:
    body = signer.to_dict()
    body.pop("signature", None)  # the server-side name of the bundle, not the signer's
    return body


def _scan(hub: Hub, stored: list[StoredFileRef], verdict: Verdict) -> None:
    tree = StoredTree(hub, stored)
    try:
        report = scan_tree(tree)
    except ModelTreeError as exc:  # e.g. both "a" and "a/b": no folder on disk holds that
        verdict.reasons.append(f"files: {exc.message}")
        return
    tree.check_readable()
    verdict.scan = report.to_dict()
    for path, why in sorted(tree.damaged().items()):
        verdict.reasons.append(f"storage: {path!r} cannot be read back as stored ({why})")
    findings = report.at_or_above(hub.limits.scan_threshold)
    if findings:
        worst = max(f.severity for f in findings)
        verdict.reasons.append(
            f"scan: {len(findings)} finding(s) at or above "
            f"{hub.limits.scan_threshold.label} (worst: {worst.label}, "
            f"e.g. {findings[0].rule_id} in {findings[0].path})"
        )
