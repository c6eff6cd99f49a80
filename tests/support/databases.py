"""The hub's database for tests: SQLite in a temporary folder, or a fresh PostgreSQL database.

PostgreSQL comes from ``BASTION_TEST_POSTGRES_URL``, which ``make test`` sets (starting a
throwaway server when none answers); without it those cases are skipped with that reason.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from bastion.db import Database, sqlite_url

POSTGRES_ENV = "BASTION_TEST_POSTGRES_URL"


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, randomly named database on the test server; dropped afterwards."""
    import psycopg
    from psycopg import sql

    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set; `make test` sets it (scripts/with-test-services)")
    url = make_url(base)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"bastion_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(
    name="database", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def migrated_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """The hub's database at its newest schema, on each engine in turn (import it to use it)."""
    if request.param == "sqlite":
        db = Database(sqlite_url(tmp_path / "hub.sqlite"))
        db.migrate()
        yield db
        db.dispose()
        return
    with postgres_database() as url:
        db = Database(url)
        db.migrate()
        yield db
        db.dispose()
