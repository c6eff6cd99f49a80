"""The Alembic migrations build exactly the schema ``bastion.db`` declares, on SQLite and
PostgreSQL, and running them again changes nothing.

PostgreSQL runs when ``BASTION_TEST_POSTGRES_URL`` names a server with a user that may
create databases (``make test`` sets it); each test gets its own database, dropped after.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from bastion.db import Base, Database, Namespace, sqlite_url
from bastion.db._database import MIGRATIONS
from tests.support.databases import postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        db = Database(sqlite_url(tmp_path / "hub.sqlite"))
        yield db
        db.dispose()
        return
    with postgres_database() as url:
        db = Database(url)
        yield db
        db.dispose()


def _differences(db: Database) -> list[Any]:
    with db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, Base.metadata))


def _head() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def _revisions(db: Database) -> list[str]:
    with db.engine.connect() as connection:
        return list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())


def test_an_empty_database_differs_from_the_schema(database: Database) -> None:
    # the comparison does see a difference: every table is missing before migrating
    added = {diff[1].name for diff in _differences(database) if diff[0] == "add_table"}
    assert added == set(Base.metadata.tables)


def test_the_migrations_build_exactly_the_declared_schema(database: Database) -> None:
    database.migrate()
    assert _differences(database) == []
    assert _revisions(database) == [_head()]
    tables = set(inspect(database.engine).get_table_names())
    assert tables == set(Base.metadata.tables) | {"alembic_version"}


def test_migrating_twice_is_harmless(database: Database) -> None:
    database.migrate()
    with database.session() as s:
        s.add(
            Namespace(
                name="kept",
                trust_policy="[policy]",
                created_at=datetime.now(UTC),
                created_by="test",
            )
        )
    database.migrate()
    assert _differences(database) == []
    assert _revisions(database) == [_head()]
    with database.session() as s:
        assert list(s.scalars(select(Namespace.name))) == ["kept"]


def _upgrade(db: Database, revision: str) -> None:
    from alembic import command

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def test_keys_made_before_policies_keep_what_their_roles_allowed(database: Database) -> None:
    """0002 renames ``reader`` to ``consumer`` and gives old keys their roles' scope."""
    _upgrade(database, "0001")
    now = datetime.now(UTC)
    rows = {"ro": ["reader"], "pub": ["publisher", "reader"], "root": ["admin"]}
    with database.engine.begin() as connection:
        for key_id, roles in rows.items():
            connection.execute(
                text(
                    "INSERT INTO api_keys (id, name, secret_hash, created_at, created_by) "
                    "VALUES (:id, :id, :hash, :now, 'test')"
                ),
                {"id": key_id, "hash": bytes(32), "now": now},
            )
            for role in roles:
                connection.execute(
                    text(
                        "INSERT INTO role_bindings (key_id, namespace, role) "
                        "VALUES (:id, 'med', :role)"
                    ),
                    {"id": key_id, "role": role},
                )
    database.migrate()
    with database.engine.connect() as connection:
        scopes = dict(connection.execute(text("SELECT id, scope FROM api_keys")).all())
        roles = connection.execute(text("SELECT DISTINCT role FROM role_bindings")).scalars()
        classified = connection.execute(text("SELECT count(*) FROM models")).scalar()
    assert {k: json.loads(v) for k, v in scopes.items()} == {
        "ro": ["consume"],
        "pub": ["consume", "publish", "version.push"],
        "root": ["*"],
    }
    assert sorted(roles) == ["admin", "consumer", "publisher"]
    assert classified == 0
    assert _differences(database) == []
