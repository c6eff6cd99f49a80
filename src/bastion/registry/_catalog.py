"""Reading and curating the hub's catalogue: namespaces, models, versions, aliases, yanks.

Only ``published`` versions are ever served; ``quarantined`` ones are shown
with the reasons, and a yanked version is served only when asked explicitly.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from bastion.crypto import WrappedKey, iter_decrypt
from bastion.db import FileRow, ModelAlias, ModelRow, Namespace, VersionRow, iso
from bastion.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    QuarantinedError,
    TrustPolicyError,
    VersionYankedError,
)
from bastion.registry._hub import Hub
from bastion.registry._names import (
    DEFAULT_CLASSIFICATION,
    ModelRef,
    check_alias,
    check_classification,
    check_name,
    check_version,
)
from bastion.registry._uploads import artifact_context
from bastion.signing import TrustPolicy

__all__ = ["Catalog", "ServedFile", "check_policy", "get_namespace"]

_MAX_POLICY = 1 << 20
_SERVED = ("published",)


@dataclass(frozen=True, slots=True)
class ServedFile:
    path: str
    size: int
    chunks: Iterator[bytes]


def check_policy(text: str) -> TrustPolicy:
    if len(text.encode()) > _MAX_POLICY:
        raise TrustPolicyError("the trust policy is larger than 1 MiB")
    return TrustPolicy.from_toml(text, base_dir=None, source="the namespace's trust policy")


class Catalog:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    # namespaces ------------------------------------------------------------

    def create_namespace(self, name: str, trust_policy: str, *, actor: str) -> dict[str, Any]:
        check_name(name, "namespace")
        check_policy(trust_policy)
        try:
            with self.hub.db.session() as s:
                ns = Namespace(
                    name=name,
                    trust_policy=trust_policy,
                    created_at=self.hub.now(),
                    created_by=actor,
                )
                s.add(ns)
                s.flush()
                return _namespace(ns)
        except DbIntegrityError:
            raise ConflictError(f"namespace {name!r} exists already") from None

    def set_trust(self, name: str, trust_policy: str) -> dict[str, Any]:
        check_policy(trust_policy)
        with self.hub.db.session() as s:
            ns = get_namespace(s, name)
            ns.trust_policy = trust_policy
            return _namespace(ns)

    def namespace(self, name: str) -> dict[str, Any]:
        with self.hub.db.session() as s:
            ns = get_namespace(s, name)
            return {**_namespace(ns), "trust_policy": ns.trust_policy}

    def namespaces(self) -> list[dict[str, Any]]:
        with self.hub.db.session() as s:
            return [_namespace(n) for n in s.scalars(select(Namespace).order_by(Namespace.name))]

    # models and versions -----------------------------------------------------

    def models(self, namespaces: list[str]) -> list[dict[str, Any]]:
        with self.hub.db.session() as s:
            rows = s.execute(
                select(Namespace.name, ModelRow)
                .join(ModelRow, ModelRow.namespace_id == Namespace.id)
                .where(Namespace.name.in_(namespaces))
                .order_by(Namespace.name, ModelRow.name)
            ).all()
            out = []
            for ns_name, model in rows:
                versions = s.scalars(
                    select(VersionRow)
                    .where(VersionRow.model_id == model.id, VersionRow.state.in_(_LISTED))
                    .order_by(VersionRow.created_at)
                ).all()
                latest = next((v for v in reversed(versions) if v.state == "published"), None)
                out.append(
                    {
                        "name": f"{ns_name}/{model.name}",
                        "namespace": ns_name,
                        "model": model.name,
                        "versions": len(versions),
                        "latest": latest.version if latest else None,
                        "classification": model.classification,
                        "created_at": iso(model.created_at),
                    }
                )
            return out

    def versions(self, namespace: str, model: str) -> list[dict[str, Any]]:
        with self.hub.db.session() as s:
            m = _get_model(s, namespace, model)
            rows = s.scalars(
                select(VersionRow)
                .where(VersionRow.model_id == m.id, VersionRow.state.in_(_LISTED))
                .order_by(VersionRow.created_at)
            ).all()
            aliases = _aliases(s, m.id)
            return [_version_summary(namespace, model, v, aliases.get(v.id, [])) for v in rows]

    def version(self, ref: ModelRef) -> dict[str, Any]:
        """Everything about one version (an alias is resolved), whatever its state."""
        with self.hub.db.session() as s:
            m, v = _resolve(s, ref)
            files = s.scalars(
                select(FileRow).where(FileRow.version_id == v.id).order_by(FileRow.path)
            ).all()
            body = _version_summary(ref.namespace, ref.model, v, _aliases(s, m.id).get(v.id, []))
            body.update(
                classification=m.classification,
                files=[{"path": f.path, "size": f.size} for f in files],
                signature=v.signature.decode(),
                signers=json.loads(v.signers) if v.signers else [],
                scan=json.loads(v.scan_report) if v.scan_report else None,
                reasons=json.loads(v.reasons) if v.reasons else [],
                created_by=v.created_by,
            )
            return body

    def version_state(self, ref: ModelRef) -> tuple[str, str, str | None, str]:
        """(version, state, why it was yanked or None, the model's classification) of a
        version or alias, for authorisation."""
        with self.hub.db.session() as s:
            m, v = _resolve(s, ref)
            reason = None if v.yanked_at is None else v.yank_reason or "no reason given"
            return v.version, v.state, reason, m.classification

    def classification(self, namespace: str, model: str) -> str:
        """A model's data classification; ``internal`` for a model not pushed yet."""
        with self.hub.db.session() as s:
            found = s.scalars(
                select(ModelRow.classification)
                .join(Namespace, ModelRow.namespace_id == Namespace.id)
                .where(Namespace.name == namespace, ModelRow.name == model)
            ).first()
            return found or DEFAULT_CLASSIFICATION

    def classify(self, namespace: str, model: str, classification: str) -> dict[str, Any]:
        """Set a model's data classification (``public``, ``internal``, ``restricted``...)."""
        check_classification(classification)
        with self.hub.db.session() as s:
            m = _get_model(s, namespace, model)
            m.classification = classification
            return {"name": f"{namespace}/{model}", "classification": classification}

    def servable(self, ref: ModelRef, *, allow_yanked: bool) -> dict[str, Any]:
        """The version to pull: published, and not yanked unless ``allow_yanked``."""
        info = self.version(ref)
        if info["state"] != "published":
            raise QuarantinedError(
                f"{info['ref']} is {info['state']} and is never served: "
                + ("; ".join(info["reasons"]) or "it was not admitted")
            )
        if info["yanked"] and not allow_yanked:
            raise VersionYankedError(
                f"{info['ref']} was yanked ({info['yank_reason']}); pass allow_yanked "
                "(--allow-yanked) to pull it anyway"
            )
        return info

    def open_file(self, ref: ModelRef, path: str, *, allow_yanked: bool) -> ServedFile:
        """The decrypted bytes of one file of a servable version, as a stream."""
        info = self.servable(ref, allow_yanked=allow_yanked)
        with self.hub.db.session() as s:
            row = s.scalars(
                select(FileRow)
                .join(VersionRow)
                .where(VersionRow.upload_id == info["upload_id"], FileRow.path == path)
            ).first()
            if row is None or row.wrapped_key is None:
                raise NotFoundError(f"{info['ref']} has no file {path!r}")
            blob_id, wrapped, size = row.blob_id, row.wrapped_key, row.size
        context = artifact_context(blob_id)
        key = self.hub.keys.unwrap(WrappedKey.from_text(wrapped), context=context)
        chunks = _chunks(self.hub, blob_id, key, context)
        # Authenticate the header and first segment before the response starts, so that
        # a damaged blob is answered with an integrity error rather than a cut-off body.
        first = next(chunks, None)
        return ServedFile(path, size, itertools.chain(() if first is None else (first,), chunks))

    # curation ------------------------------------------------------------------

    def set_alias(self, namespace: str, model: str, alias: str, version: str) -> dict[str, Any]:
        check_alias(alias)
        check_version(version)
        with self.hub.db.session() as s:
            m = _get_model(s, namespace, model)
            v = _get_version(s, m, version)
            if v.state != "published" or v.yanked_at is not None:
                raise ConflictError(
                    f"{namespace}/{model}@{version} is {_state(v)}; an alias must point at a "
                    "published version that is not yanked"
                )
            row = s.scalars(
                select(ModelAlias).where(ModelAlias.model_id == m.id, ModelAlias.name == alias)
            ).first()
            previous = None
            if row is None:
                s.add(
                    ModelAlias(
                        model_id=m.id, name=alias, version_id=v.id, updated_at=self.hub.now()
                    )
                )
            else:
                previous = s.get(VersionRow, row.version_id)
                row.version_id = v.id
                row.updated_at = self.hub.now()
            return {
                "model": f"{namespace}/{model}",
                "alias": alias,
                "version": version,
                "previous": previous.version if previous else None,
            }

    def delete_alias(self, namespace: str, model: str, alias: str) -> None:
        check_alias(alias)
        with self.hub.db.session() as s:
            m = _get_model(s, namespace, model)
            row = s.scalars(
                select(ModelAlias).where(ModelAlias.model_id == m.id, ModelAlias.name == alias)
            ).first()
            if row is None:
                raise NotFoundError(f"{namespace}/{model} has no alias {alias!r}")
            s.delete(row)

    def yank(self, ref: ModelRef, reason: str) -> dict[str, Any]:
        reason = reason.strip()
        if not reason or len(reason) > 1000:
            raise InputError("say why the version is yanked (1 to 1000 characters)")
        with self.hub.db.session() as s:
            m = _get_model(s, ref.namespace, ref.model)
            if ref.version is None:
                raise InputError("yank names a version (@version), not an alias")
            v = _get_version(s, m, ref.version)
            if v.state != "published":
                raise ConflictError(f"{ref} is {v.state}; only published versions are yanked")
            if v.yanked_at is None:
                v.yanked_at = self.hub.now()
                v.yank_reason = reason
            return {"ref": str(ref), "yanked_at": iso(v.yanked_at), "reason": v.yank_reason}


_LISTED = ("published", "quarantined")


def _chunks(hub: Hub, blob_id: str, key: bytes, context: bytes) -> Iterator[bytes]:
    with hub.blobs.open(blob_id) as f:
        yield from iter_decrypt(f, key, associated_data=context)


def _namespace(ns: Namespace) -> dict[str, Any]:
    return {"name": ns.name, "created_at": iso(ns.created_at), "created_by": ns.created_by}


def _state(v: VersionRow) -> str:
    return "yanked" if v.state == "published" and v.yanked_at is not None else v.state


def _version_summary(ns: str, model: str, v: VersionRow, aliases: list[str]) -> dict[str, Any]:
    return {
        "ref": f"{ns}/{model}@{v.version}",
        "namespace": ns,
        "model": model,
        "version": v.version,
        "state": v.state,
        "upload_id": v.upload_id,
        "yanked": v.yanked_at is not None,
        "yanked_at": iso(v.yanked_at),
        "yank_reason": v.yank_reason,
        "aliases": sorted(aliases),
        "root_digest": v.root_digest,
        "size": v.total_size,
        "created_at": iso(v.created_at),
        "committed_at": iso(v.committed_at),
    }


def _aliases(s: Session, model_id: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for a in s.scalars(select(ModelAlias).where(ModelAlias.model_id == model_id)):
        out.setdefault(a.version_id, []).append(a.name)
    return out


def get_namespace(s: Session, name: str) -> Namespace:
    check_name(name, "namespace")
    ns = s.scalars(select(Namespace).where(Namespace.name == name)).first()
    if ns is None:
        raise NotFoundError(f"no namespace {name!r}; an administrator creates it")
    return ns


def _get_model(s: Session, namespace: str, model: str) -> ModelRow:
    ns = get_namespace(s, namespace)
    check_name(model, "model name")
    m = s.scalars(
        select(ModelRow).where(ModelRow.namespace_id == ns.id, ModelRow.name == model)
    ).first()
    if m is None:
        raise NotFoundError(f"no model {namespace}/{model}")
    return m


def _get_version(s: Session, m: ModelRow, version: str) -> VersionRow:
    v = s.scalars(
        select(VersionRow).where(
            VersionRow.model_id == m.id,
            VersionRow.version == version,
            VersionRow.state.in_(_LISTED),
        )
    ).first()
    if v is None:
        raise NotFoundError(f"no version {version!r} of this model")
    return v


def _resolve(s: Session, ref: ModelRef) -> tuple[ModelRow, VersionRow]:
    m = _get_model(s, ref.namespace, ref.model)
    if ref.version is not None:
        return m, _get_version(s, m, ref.version)
    if ref.alias is None:
        raise InputError(f"{ref} names no version; add @version or :alias")
    row = s.scalars(
        select(ModelAlias).where(ModelAlias.model_id == m.id, ModelAlias.name == ref.alias)
    ).first()
    if row is None:
        raise NotFoundError(f"{ref.name} has no alias {ref.alias!r}")
    v = s.get(VersionRow, row.version_id)
    assert v is not None
    return m, v
