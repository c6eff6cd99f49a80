"""Publishing a version: open an upload, receive its files, commit, admit or quarantine.

1. :meth:`Publisher.start` authenticates the signature against the namespace's
   trust policy (before parsing what it covers) and reserves the version; the
   declared files must be exactly the files the signature covers.
2. Each file streams through an :class:`UploadSink` (hashed, encrypted, written).
3. :meth:`Publisher.commit` moves the version to ``verifying`` with a
   conditional update, so a racing second commit gets a conflict, waits until its
   blobs are on disk (a failure there drops the upload), then runs admission
   (:mod:`bastion.registry._admission`): the version ends ``published`` or
   ``quarantined``; it is immutable either way.

An upload that is aborted, expires, or is interrupted by a restart leaves no
version behind: its row and blobs are removed.
"""

from __future__ import annotations

import json
import logging
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from bastion.db import FileRow, ModelRow, Namespace, VersionRow, aware, iso
from bastion.errors import (
    BastionError,
    ConflictError,
    InputError,
    NotFoundError,
    PayloadTooLargeError,
    QuarantinedError,
    VerificationError,
)
from bastion.registry._admission import Verdict, admit
from bastion.registry._blobs import new_blob_id
from bastion.registry._catalog import check_policy, get_namespace
from bastion.registry._hub import Hub
from bastion.registry._names import check_file_path, check_name, check_version
from bastion.registry._uploads import StoredFile, UploadSink
from bastion.signing import read_signature, signed_files
from bastion.signing._bundle import MAX_BUNDLE_BYTES
from bastion.signing._manifest import Serialization

__all__ = ["FileTarget", "Publisher"]

log = logging.getLogger(__name__)

_OPEN = ("uploading",)


@dataclass(frozen=True, slots=True)
class FileTarget:
    """Where one declared file of an open upload goes."""

    upload_id: str
    path: str
    size: int
    blob_id: str
    serialization: Serialization


class Publisher:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def start(
        self,
        namespace: str,
        model: str,
        version: str,
        *,
        signature: bytes,
        files: Mapping[str, int],
        actor: str,
    ) -> dict[str, Any]:
        """Reserve ``namespace/model@version`` for an upload of ``files`` (path -> size)."""
        check_name(model, "model name")
        check_version(version)
        if len(signature) > MAX_BUNDLE_BYTES:
            raise PayloadTooLargeError("the signature is larger than the hub accepts")
        declared = _declared(files, self.hub.limits.max_files)
        total = sum(declared.values())
        if total > self.hub.limits.max_version_bytes:
            raise PayloadTooLargeError(
                f"the version holds {total} bytes; this hub accepts at most "
                f"{self.hub.limits.max_version_bytes} per version"
            )
        self.expire()
        now = self.hub.now()
        with self.hub.db.session() as s:
            ns = get_namespace(s, namespace)
            trust = check_policy(ns.trust_policy)
            ns_id = ns.id
        upload_id = secrets.token_hex(16)
        try:
            _signer, statement = read_signature(signature, trust=trust, now=now)
        except VerificationError as exc:
            self._quarantine_unsigned(ns_id, model, version, signature, total, actor, exc)
            raise QuarantinedError(
                f"{namespace}/{model}@{version} is quarantined: {exc.message}"
            ) from exc
        covered = set(signed_files(statement))
        if covered != set(declared):
            missing = sorted(covered - set(declared))[:5]
            extra = sorted(set(declared) - covered)[:5]
            raise InputError(
                "the files to upload must be exactly those the signature covers"
                + (f"; not declared: {', '.join(missing)}" if missing else "")
                + (f"; not signed: {', '.join(extra)}" if extra else "")
            )
        model_id = self._model_id(ns_id, model, now)
        try:
            with self.hub.db.session() as s:
                row = VersionRow(
                    model_id=model_id,
                    version=version,
                    state="uploading",
                    upload_id=upload_id,
                    created_at=now,
                    created_by=actor,
                    signature=signature,
                    total_size=total,
                )
                s.add(row)
                s.flush()
                for path, size in declared.items():
                    s.add(
                        FileRow(
                            version_id=row.id,
                            path=path,
                            size=size,
                            blob_id=new_blob_id(),
                            uploaded=False,
                        )
                    )
        except DbIntegrityError:
            raise ConflictError(
                f"{namespace}/{model}@{version} exists already; versions are immutable, "
                "push a new version"
            ) from None
        return {
            "upload_id": upload_id,
            "ref": f"{namespace}/{model}@{version}",
            "files": [{"path": p, "size": n} for p, n in declared.items()],
            "expires_at": iso(now + self.hub.limits.upload_ttl),
            "serialization": statement.serialization.to_dict(),
        }

    def namespace_of(self, upload_id: str) -> tuple[str, str]:
        """The namespace and reference of an upload, for authorisation and the audit log."""
        with self.hub.db.session() as s:
            row = s.execute(
                select(Namespace.name, ModelRow.name, VersionRow.version)
                .join(ModelRow, ModelRow.namespace_id == Namespace.id)
                .join(VersionRow, VersionRow.model_id == ModelRow.id)
                .where(VersionRow.upload_id == upload_id)
            ).first()
            if row is None:
                raise NotFoundError("no such upload; it may have expired or been aborted")
            return row[0], f"{row[0]}/{row[1]}@{row[2]}"

    def target(self, upload_id: str, path: str) -> FileTarget:
        """The declared file ``path`` of an open upload, with a fresh blob id for this attempt."""
        check_file_path(path)
        self.expire()  # an expired upload takes no more files, though nothing dropped it yet
        with self.hub.db.session() as s:
            version = _open_upload(s, upload_id)
            row = s.scalars(
                select(FileRow).where(FileRow.version_id == version.id, FileRow.path == path)
            ).first()
            if row is None:
                raise NotFoundError(f"{path!r} is not one of the files declared for this upload")
            blob_id = new_blob_id()
            # Conditional, not read then written: another PUT of the same file may have
            # finished since the row was read, and its blob must stay the one named.
            claimed = s.execute(
                update(FileRow)
                .where(FileRow.id == row.id, FileRow.uploaded.is_(False))
                .values(blob_id=blob_id)
            )
            if row.uploaded or claimed.rowcount != 1:  # type: ignore[attr-defined]
                raise ConflictError(f"{path!r} was uploaded already")
            ser = _serialization(version.signature)
            return FileTarget(upload_id, path, row.size, blob_id, ser)

    def sink(self, target: FileTarget) -> UploadSink:
        return UploadSink(
            self.hub.blobs,
            target.blob_id,
            self.hub.keys,
            name=target.path,
            serialization=target.serialization,
            expected_size=target.size,
            segment_size=self.hub.limits.segment_size,
        )

    def stored(self, target: FileTarget, stored: StoredFile) -> None:
        """Record a completely written file; the blob is dropped if the upload went away."""
        with self.hub.db.session() as s:
            result = s.execute(
                update(FileRow)
                .where(
                    FileRow.blob_id == target.blob_id,
                    FileRow.uploaded.is_(False),
                    FileRow.version_id.in_(
                        select(VersionRow.id).where(
                            VersionRow.upload_id == target.upload_id,
                            VersionRow.state.in_(_OPEN),
                        )
                    ),
                )
                .values(
                    uploaded=True,
                    wrapped_key=stored.wrapped_key.to_text(),
                    digests=json.dumps([r.to_dict() for r in stored.resources]),
                )
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                self.hub.blobs.delete(stored.blob_id)
                raise ConflictError(
                    f"the upload of {target.path!r} was superseded, aborted or committed meanwhile"
                )

    def commit(self, upload_id: str) -> dict[str, Any]:
        """Admit the version or quarantine it; QuarantinedError says why."""
        self.expire()  # nor can it be committed
        with self.hub.db.session() as s:
            version = s.scalars(select(VersionRow).where(VersionRow.upload_id == upload_id)).first()
            if version is None:
                raise NotFoundError("no such upload; it may have expired or been aborted")
            files = s.scalars(select(FileRow).where(FileRow.version_id == version.id)).all()
            missing = sorted(f.path for f in files if not f.uploaded)
            if version.state in _OPEN and missing:
                raise ConflictError(
                    f"{len(missing)} declared file(s) are not uploaded yet, e.g. {missing[0]!r}"
                )
            flipped = s.execute(
                update(VersionRow)
                .where(VersionRow.upload_id == upload_id, VersionRow.state.in_(_OPEN))
                .values(state="verifying")
            )
            if flipped.rowcount != 1:  # type: ignore[attr-defined]
                raise ConflictError(
                    "this upload is being committed or was committed already "
                    f"(state: {version.state})"
                )
        self._make_durable(upload_id, [f.blob_id for f in files])
        try:
            verdict = admit(self.hub, upload_id)
        except BaseException:
            with self.hub.db.session() as s:  # let the client try the commit again
                s.execute(
                    update(VersionRow)
                    .where(VersionRow.upload_id == upload_id, VersionRow.state == "verifying")
                    .values(state="uploading")
                )
            raise
        return self._record(upload_id, verdict)

    def _make_durable(self, upload_id: str, blob_ids: list[str]) -> None:
        """Wait for the disk before the version can be published. The files went to the
        disk without waiting as they arrived; one that cannot be made durable now may
        have lost data the kernel already dropped, so the upload is dropped with it."""
        try:
            self.hub.blobs.sync(blob_ids)
        except BaseException:
            with self.hub.db.session() as s:
                version = s.scalars(
                    select(VersionRow).where(VersionRow.upload_id == upload_id)
                ).first()
                if version is not None and version.state == "verifying":
                    self._drop(s, version)
            raise

    def _record(self, upload_id: str, verdict: Verdict) -> dict[str, Any]:
        with self.hub.db.session() as s:
            version = s.scalars(select(VersionRow).where(VersionRow.upload_id == upload_id)).one()
            version.state = "published" if verdict.admitted else "quarantined"
            version.committed_at = self.hub.now()
            version.root_digest = verdict.root_digest
            version.signers = json.dumps(verdict.signers)
            version.scan_report = json.dumps(verdict.scan) if verdict.scan is not None else None
            version.reasons = json.dumps(verdict.reasons)
            state = version.state
        body = {"upload_id": upload_id, "state": state, "reasons": verdict.reasons}
        if not verdict.admitted:
            raise QuarantinedError("quarantined: " + "; ".join(verdict.reasons))
        return body

    def abort(self, upload_id: str) -> None:
        with self.hub.db.session() as s:
            version = s.scalars(
                select(VersionRow).where(
                    VersionRow.upload_id == upload_id, VersionRow.state.in_(_OPEN)
                )
            ).first()
            if version is None:
                raise NotFoundError("no open upload with this id")
            self._drop(s, version)

    def expire(self) -> int:
        """Drop uploads older than the upload time-to-live; how many were dropped."""
        cutoff = self.hub.now() - self.hub.limits.upload_ttl
        with self.hub.db.session() as s:
            stale = [
                v
                for v in s.scalars(select(VersionRow).where(VersionRow.state.in_(_OPEN)))
                if aware(v.created_at) < cutoff
            ]
            for v in stale:
                self._drop(s, v)
            return len(stale)

    def recover(self) -> int:
        """At start-up: no upload survives a restart, and partial blobs are removed."""
        with self.hub.db.session() as s:
            stale = s.scalars(
                select(VersionRow).where(VersionRow.state.in_(("uploading", "verifying")))
            ).all()
            for v in stale:
                self._drop(s, v)
        self.hub.blobs.sweep_partial()
        return len(stale)

    def _model_id(self, ns_id: int, model: str, now: Any) -> int:
        """The model's id, the model created first if it is new.

        In a transaction of its own: two first pushes of one model (different versions)
        may both try to create it, and the one that loses reads the other's row instead
        of failing as if its version existed.
        """
        for _attempt in range(2):
            try:
                with self.hub.db.session() as s:
                    found = _existing_model(s, ns_id, model)
                    if found is not None:
                        return found
                    row = ModelRow(namespace_id=ns_id, name=model, created_at=now)
                    s.add(row)
                    s.flush()
                    return row.id
            except DbIntegrityError:
                continue  # created meanwhile: read it
        raise ConflictError(f"the model {model!r} is being created; push again")

    def _drop(self, s: Session, version: VersionRow) -> None:
        files = s.scalars(select(FileRow).where(FileRow.version_id == version.id)).all()
        for f in files:
            self.hub.blobs.delete(f.blob_id)
        s.execute(delete(FileRow).where(FileRow.version_id == version.id))
        s.delete(version)

    def _quarantine_unsigned(
        self,
        ns_id: int,
        model: str,
        version: str,
        signature: bytes,
        total: int,
        actor: str,
        exc: BastionError,
    ) -> None:
        now = self.hub.now()
        model_id = self._model_id(ns_id, model, now)
        try:
            with self.hub.db.session() as s:
                s.add(
                    VersionRow(
                        model_id=model_id,
                        version=version,
                        state="quarantined",
                        upload_id=secrets.token_hex(16),
                        created_at=now,
                        created_by=actor,
                        committed_at=now,
                        signature=signature,
                        total_size=total,
                        reasons=json.dumps([f"signature: {exc.message}"]),
                    )
                )
        except DbIntegrityError:
            raise ConflictError(
                "this version exists already; versions are immutable, push a new version"
            ) from None


def _declared(files: Mapping[str, int], max_files: int) -> dict[str, int]:
    if not files:
        raise InputError("an upload declares at least one file")
    if len(files) > max_files:
        raise PayloadTooLargeError(f"a version may hold at most {max_files} files")
    out: dict[str, int] = {}
    for path, size in files.items():
        check_file_path(path)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InputError(f"the size declared for {path!r} is not a whole number of bytes")
        out[path] = size
    # NFC: "café" typed as one é or as e and a combining accent is one name to a person,
    # and to file systems that ignore normalisation (as others ignore case).
    folded = {unicodedata.normalize("NFC", p).casefold() for p in out}
    if len(folded) != len(out):
        raise InputError(
            "two declared files differ only in case or Unicode normalisation; they would "
            "collide on pull"
        )
    return dict(sorted(out.items()))


def _existing_model(s: Session, ns_id: int, model: str) -> int | None:
    return s.scalars(
        select(ModelRow.id).where(ModelRow.namespace_id == ns_id, ModelRow.name == model)
    ).first()


def _open_upload(s: Session, upload_id: str) -> VersionRow:
    version = s.scalars(select(VersionRow).where(VersionRow.upload_id == upload_id)).first()
    if version is None:
        raise NotFoundError("no such upload; it may have expired or been aborted")
    if version.state not in _OPEN:
        raise ConflictError(f"this upload is {version.state}; it takes no more files")
    return version


def _serialization(signature: bytes) -> Serialization:
    """The serialization the signature declares (it was authenticated when the upload opened)."""
    from bastion.signing._bundle import Bundle, Statement

    return Statement.from_payload(Bundle.from_json(signature).payload).serialization
