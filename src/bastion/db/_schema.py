"""The one SQLAlchemy schema of the hub's database (SQLite or PostgreSQL).

Tables only, no behaviour: the services own what the rows mean. Every change
here comes with an Alembic migration in ``bastion/db/migrations/versions``; a
test checks that the migrations produce exactly this schema.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ApiKey",
    "AuditCheckpointRow",
    "AuditEntryRow",
    "AuditHead",
    "Base",
    "DeploymentRevision",
    "DeploymentRow",
    "FileRow",
    "LoginThrottle",
    "ModelAlias",
    "ModelRow",
    "Namespace",
    "PolicyVersion",
    "RecoveryCode",
    "RoleBinding",
    "SessionRow",
    "User",
    "UserRole",
    "VersionRow",
]

_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=_NAMING)
    type_annotation_map = {datetime: DateTime(timezone=True)}  # noqa: RUF012 (SQLAlchemy API)


class Namespace(Base):
    __tablename__ = "namespaces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    trust_policy: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))


class ModelRow(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("namespace_id", "name", name="uq_models_namespace_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    #: The data classification policies may test (``public``, ``internal``, ``restricted``...).
    classification: Mapped[str] = mapped_column(String(32), server_default="internal")


class VersionRow(Base):
    """A model version: ``uploading`` -> ``verifying`` -> ``published`` or ``quarantined``."""

    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_versions_model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    upload_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))
    committed_at: Mapped[datetime | None]
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    root_digest: Mapped[str | None] = mapped_column(String(160))
    signers: Mapped[str | None] = mapped_column(Text)
    scan_report: Mapped[str | None] = mapped_column(Text)
    reasons: Mapped[str | None] = mapped_column(Text)
    total_size: Mapped[int] = mapped_column(BigInteger)
    yanked_at: Mapped[datetime | None]
    yank_reason: Mapped[str | None] = mapped_column(Text)


class FileRow(Base):
    __tablename__ = "files"
    __table_args__ = (UniqueConstraint("version_id", "path", name="uq_files_version_path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    blob_id: Mapped[str] = mapped_column(String(64), unique=True)
    wrapped_key: Mapped[str | None] = mapped_column(Text)
    digests: Mapped[str | None] = mapped_column(Text)
    uploaded: Mapped[bool] = mapped_column(Boolean, default=False)


class ModelAlias(Base):
    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("model_id", "name", name="uq_aliases_model_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))
    updated_at: Mapped[datetime]


class ApiKey(Base):
    """An API key: only a hash of its secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    #: JSON list of the actions and action groups the key may use (``docs/access.md``).
    scope: Mapped[str] = mapped_column(Text, server_default="[]")
    rotated_at: Mapped[datetime | None]


class RoleBinding(Base):
    """A role on a namespace (``*`` for every namespace) granted to an API key."""

    __tablename__ = "role_bindings"
    __table_args__ = (
        UniqueConstraint("key_id", "namespace", "role", name="uq_role_bindings_key_ns_role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    namespace: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))


class AuditEntryRow(Base):
    """An audit entry: the columns for queries, ``line`` the exact canonical JSON hashed."""

    __tablename__ = "audit_entries"
    __table_args__ = (Index("ix_audit_entries_time", "time"),)

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    time: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str] = mapped_column(String(512))
    outcome: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(256))
    request_id: Mapped[str] = mapped_column(String(128))
    line: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpointRow(Base):
    __tablename__ = "audit_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    body: Mapped[str] = mapped_column(Text)


class AuditHead(Base):
    """The tip of the audit chain, one row, locked while an entry is appended."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    accumulator: Mapped[str] = mapped_column(Text)


class User(Base):
    """A person: ``pending`` until enrolment finishes, then ``active``; ``disabled`` refuses."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    #: argon2id PHC string; None until enrolment sets a password.
    password_hash: Mapped[str | None] = mapped_column(String(256))
    #: the TOTP secret, sealed (encrypted) by the hub's key manager; None until enrolment.
    totp_secret: Mapped[str | None] = mapped_column(Text)
    #: the last TOTP time step accepted: a code is never accepted twice.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    enrolment_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), unique=True)
    enrolment_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(256))
    enrolled_at: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]


class UserRole(Base):
    """A role on a namespace (``*`` for every namespace) granted to a user."""

    __tablename__ = "user_roles"
    __table_args__ = (
        UniqueConstraint("user_id", "namespace", "role", name="uq_user_roles_user_ns_role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    namespace: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))


class RecoveryCode(Base):
    """A one-time MFA recovery code: only its hash is stored."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    used_at: Mapped[datetime | None]


class LoginThrottle(Base):
    """Failed logins per name (a hash of it, kept for unknown names too): delay and lock-out."""

    __tablename__ = "login_throttle"

    name_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime]
    locked_until: Mapped[datetime | None]


class SessionRow(Base):
    """A person's session: short-lived, bound to the MFA that opened or last refreshed it."""

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_user_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    csrf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    mfa_at: Mapped[datetime]
    mfa_method: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None]


class PolicyVersion(Base):
    """One applied set of Cedar policies; the highest version is in force."""

    __tablename__ = "policy_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    digest: Mapped[str] = mapped_column(String(64))
    #: JSON object: file name -> policy text.
    files: Mapped[str] = mapped_column(Text)
    applied_at: Mapped[datetime]
    applied_by: Mapped[str] = mapped_column(String(256))
    comment: Mapped[str] = mapped_column(String(1000))


class DeploymentRow(Base):
    """A deployment of the inference gateway: what it serves (the routing plan) and how.

    ``revision`` grows with every change; every revision is kept in ``deployment_revisions``
    so that a rollback can return to the last one that served only good versions.
    """

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    namespace: Mapped[str] = mapped_column(String(64))
    #: JSON: the routing plan (``bastion.serving._routing.RoutePlan``); ``{}`` for upstream.
    plan: Mapped[str] = mapped_column(Text)
    #: JSON: output policy tiers, value ranges, limits, rollout thresholds, upstream server.
    config: Mapped[str] = mapped_column(Text)
    revision: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(256))
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(256))


class DeploymentRevision(Base):
    """One state a deployment had, and why it changed to it."""

    __tablename__ = "deployment_revisions"
    __table_args__ = (
        UniqueConstraint(
            "deployment_id", "revision", name="uq_deployment_revisions_deployment_revision"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    revision: Mapped[int] = mapped_column(Integer)
    plan: Mapped[str] = mapped_column(Text)
    config: Mapped[str] = mapped_column(Text)
    changed_at: Mapped[datetime]
    changed_by: Mapped[str] = mapped_column(String(256))
    #: what changed: deploy, canary, shadow, promote, rollback, auto-rollback, yank-rollback...
    change: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(1000))
