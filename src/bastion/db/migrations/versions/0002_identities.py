"""identities: users, roles, recovery codes, sessions, login throttle, policy versions,
API key scopes, model classification; the ``reader`` role becomes ``consumer``

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: The scope each role of revision 0001 implied, for keys made before scopes existed.
_SCOPES = {
    "admin": ["*"],
    "publisher": ["consume", "publish", "version.push"],
    "reader": ["consume"],
}


def upgrade() -> None:
    # Columns are only added (never altered) here: on SQLite an alteration rebuilds the table,
    # and dropping the old api_keys table would cascade to every role binding.
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scope", sa.Text(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True))
    bind = op.get_bind()
    scopes: dict[str, list[str]] = {}
    for key_id, role in bind.execute(sa.text("SELECT key_id, role FROM role_bindings")):
        found = scopes.setdefault(key_id, [])
        found.extend(s for s in _SCOPES.get(role, []) if s not in found)
    for key_id, scope in scopes.items():
        bind.execute(
            sa.text("UPDATE api_keys SET scope = :scope WHERE id = :id"),
            {"scope": json.dumps(scope), "id": key_id},
        )
    bind.execute(sa.text("UPDATE role_bindings SET role = 'consumer' WHERE role = 'reader'"))
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "classification", sa.String(length=32), nullable=False, server_default="internal"
            )
        )

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=True),
        sa.Column("totp_secret", sa.Text(), nullable=True),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=True),
        sa.Column("enrolment_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("enrolment_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("enrolment_hash", name=op.f("uq_users_enrolment_hash")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "user_roles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_roles_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_roles")),
        sa.UniqueConstraint("user_id", "namespace", "role", name="uq_user_roles_user_ns_role"),
    )
    op.create_table(
        "recovery_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_recovery_codes_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recovery_codes")),
    )
    op.create_table(
        "login_throttle",
        sa.Column("name_key", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name_key", name=op.f("pk_login_throttle")),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("csrf_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mfa_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mfa_method", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_sessions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index("ix_sessions_user_id", ["user_id"], unique=False)
    op.create_table(
        "policy_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("files", sa.Text(), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_by", sa.String(length=256), nullable=False),
        sa.Column("comment", sa.String(length=1000), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_policy_versions")),
    )


def downgrade() -> None:
    op.drop_table("policy_versions")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_sessions_user_id")
    op.drop_table("sessions")
    op.drop_table("login_throttle")
    op.drop_table("recovery_codes")
    op.drop_table("user_roles")
    op.drop_table("users")
    op.execute("UPDATE role_bindings SET role = 'reader' WHERE role = 'consumer'")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("classification")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("rotated_at")
        batch_op.drop_column("scope")
