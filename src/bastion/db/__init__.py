"""The hub's database: one SQLAlchemy schema, SQLite by default, PostgreSQL supported.

:class:`Database` opens an engine for a URL (``sqlite:///path`` or
``postgresql+psycopg://...``), brings the schema up to date with the Alembic
migrations shipped in this package, and hands out sessions.
"""

from __future__ import annotations

from bastion.db._database import Database, sqlite_url
from bastion.db._schema import (
    ApiKey,
    AuditCheckpointRow,
    AuditEntryRow,
    AuditHead,
    Base,
    DeploymentRevision,
    DeploymentRow,
    FileRow,
    LoginThrottle,
    ModelAlias,
    ModelRow,
    Namespace,
    PolicyVersion,
    RecoveryCode,
    RoleBinding,
    SessionRow,
    User,
    UserRole,
    VersionRow,
)
from bastion.db._times import aware, iso

__all__ = [
    "ApiKey",
    "AuditCheckpointRow",
    "AuditEntryRow",
    "AuditHead",
    "Base",
    "Database",
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
    "aware",
    "iso",
    "sqlite_url",
]
