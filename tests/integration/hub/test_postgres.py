"""The hub's core flows on PostgreSQL instead of the embedded SQLite file.

Needs ``BASTION_TEST_POSTGRES_URL`` (``make test`` sets it through
``scripts/with-test-services``); without it every test here is skipped and says so.
Each test gets its own randomly named database, dropped afterwards.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text

import bastion
from bastion.api import Services
from bastion.audit import AuditEntry, SignedCheckpoint, load_audit_public_key, verify_log
from bastion.audit._sql_log import AuditLog
from bastion.client import Client
from bastion.crypto import WrappedKey
from bastion.db import Database, FileRow, VersionRow
from tests.integration.hub.conftest import RunningHub, start_hub, write_safe_model
from tests.support.databases import postgres_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_hub(tmp_path: Path) -> Iterator[RunningHub]:
    """A hub whose database is a fresh PostgreSQL database (blobs and keys in tmp_path)."""
    with postgres_database() as url:
        running, server, thread = start_hub(tmp_path / "hub", database_url=url, checkpoint_every=7)
        try:
            yield running
        finally:
            server.should_exit = True
            thread.join(timeout=20)
            running.services.hub.db.dispose()


@pytest.fixture
def pg_admin(pg_hub: RunningHub) -> Iterator[Client]:
    with pg_hub.client() as client:
        yield client


@pytest.fixture
def trusted(pg_admin: Client) -> bastion.PrivateKey:
    key = bastion.generate_key("ed25519")
    pg_admin.create_namespace("med", bastion.TrustPolicy.for_keys([key.public_key]))
    return key


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "model.sig"
    }


def test_the_hub_runs_on_postgresql(pg_hub: RunningHub) -> None:
    db = pg_hub.services.hub.db
    assert db.engine.dialect.name == "postgresql"
    assert not (pg_hub.data_dir / "hub.sqlite").exists()
    with db.engine.connect() as connection:
        revisions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    assert [r[0] for r in revisions] == ["0003"]


def test_push_and_pull_round_trip(
    pg_admin: Client, trusted: bastion.PrivateKey, tmp_path: Path
) -> None:
    model = write_safe_model(tmp_path / "model")
    pushed = pg_admin.push(model, "med/xray@1.0.0", key=trusted)
    assert pushed["state"] == "published"
    pg_admin.set_alias("med/xray", "prod", "1.0.0")
    pulled = pg_admin.pull("med/xray:prod", tmp_path / "out")
    assert pulled["ref"] == "med/xray@1.0.0"
    assert _files(tmp_path / "out") == _files(model)
    assert [v["version"] for v in pg_admin.versions("med/xray")] == ["1.0.0"]
    with pytest.raises(bastion.ConflictError):
        pg_admin.push(model, "med/xray@1.0.0", key=trusted)


def test_a_hostile_model_is_quarantined(
    pg_hub: RunningHub, pg_admin: Client, trusted: bastion.PrivateKey, tmp_path: Path
) -> None:
    model = tmp_path / "hostile"
    model.mkdir()
    # a protocol-2 pickle that would call posix.system("echo") if loaded; it never is
    (model / "model.pkl").write_bytes(b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00echo\x85R.")
    (model / "config.json").write_text("{}")
    with pytest.raises(bastion.QuarantinedError):
        pg_admin.push(model, "med/evil@1.0.0", key=trusted)
    shown = pg_admin.show("med/evil@1.0.0")
    assert shown["state"] == "quarantined"
    assert any("scan" in reason for reason in shown["reasons"])
    with pytest.raises(bastion.QuarantinedError):
        pg_admin.pull("med/evil@1.0.0", tmp_path / "never")
    assert not (tmp_path / "never").exists()
    with pg_hub.services.hub.db.session() as s:
        states = s.scalars(select(VersionRow.state)).all()
    assert states == ["quarantined"]


def test_racing_commits_admit_once(
    pg_hub: RunningHub, trusted: bastion.PrivateKey, tmp_path: Path
) -> None:
    model = write_safe_model(tmp_path / "model")
    bastion.sign(model, trusted)
    files = _files(model)
    auth = {"authorization": f"Bearer {pg_hub.admin_token}"}
    with httpx.Client(base_url=pg_hub.url, headers=auth, timeout=60) as http:
        opened = http.post(
            "/api/v1/models/med/race/versions",
            json={
                "version": "1.0.0",
                "signature": base64.b64encode((model / "model.sig").read_bytes()).decode(),
                "files": {name: len(data) for name, data in files.items()},
            },
        )
        assert opened.status_code == 201, opened.text
        upload = opened.json()["upload_id"]
        for name, data in files.items():
            put = http.put(f"/api/v1/uploads/{upload}/files/{name}", content=data)
            assert put.status_code == 201, put.text

    start = threading.Barrier(3)
    statuses: list[int] = []

    def commit() -> None:
        with httpx.Client(base_url=pg_hub.url, headers=auth, timeout=60) as own:
            start.wait()
            statuses.append(own.post(f"/api/v1/uploads/{upload}/commit").status_code)

    racers = [threading.Thread(target=commit) for _ in range(3)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=60)
    assert sorted(statuses) == [200, 409, 409]
    with pg_hub.client() as admin:
        assert [(v["version"], v["state"]) for v in admin.versions("med/race")] == [
            ("1.0.0", "published")
        ]


def test_concurrent_audit_appends_chain_and_verify(pg_hub: RunningHub) -> None:
    services: Services = pg_hub.services
    # A second log on its own engine, as a second hub process would have: the two only
    # agree on the chain's head through PostgreSQL's row lock.
    other_db = Database(services.hub.db.url)
    other = AuditLog.open(other_db, pg_hub.data_dir / "audit-key.pem", checkpoint_every=7)
    logs = [services.audit_reader, other]
    start = threading.Barrier(4)
    failures: list[BaseException] = []

    def append(log: AuditLog, worker: int) -> None:
        start.wait()
        try:
            for n in range(15):
                log.record(
                    actor=f"worker-{worker}",
                    action="test.append",
                    resource=f"n:{n}",
                    outcome="allowed",
                    source="127.0.0.1",
                    request_id=f"req-{worker}-{n:04d}",
                    details={"n": n},
                )
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=append, args=(logs[i % 2], i)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    other_db.dispose()
    assert failures == []

    reader: AuditLog = services.audit_reader
    lines = reader.entries(limit=10_000)
    entries = [AuditEntry.from_json(line) for line in lines]
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert sum(e.action == "test.append" for e in entries) == 60
    key = reader.public_key()
    report = verify_log(
        entries,
        [SignedCheckpoint.from_json(c) for c in reader.checkpoints()],
        load_audit_public_key(key["public_key"].encode()),
    )
    assert report.ok, report.to_dict()
    assert report.checkpoints_verified == len(entries) // 7


def test_kek_rotation_rewraps_without_reupload(
    pg_hub: RunningHub, pg_admin: Client, trusted: bastion.PrivateKey, tmp_path: Path
) -> None:
    model = write_safe_model(tmp_path / "model")
    pg_admin.push(model, "med/xray@1.0.0", key=trusted)
    blobs = sorted(p for p in (pg_hub.data_dir / "store" / "blobs").rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in blobs}

    rotated = pg_admin.rotate_kek()
    assert rotated["rewrapped"] == len(_files(model))
    with pg_hub.services.hub.db.session() as s:
        wrapped = [WrappedKey.from_text(w) for w in s.scalars(select(FileRow.wrapped_key)) if w]
    assert {w.kek_id for w in wrapped} == {rotated["current_kek"]}
    assert {p: p.read_bytes() for p in blobs} == before  # the data was not re-encrypted

    pg_admin.pull("med/xray@1.0.0", tmp_path / "out")
    assert _files(tmp_path / "out") == _files(model)
    assert pg_admin.rotate_kek()["rewrapped"] == len(_files(model))  # and again


def test_time_columns_come_back_aware(pg_admin: Client, trusted: bastion.PrivateKey) -> None:
    del trusted
    [ns] = pg_admin.namespaces()
    created = datetime.fromisoformat(ns["created_at"].replace("Z", "+00:00"))
    assert created.tzinfo is not None
    assert abs((datetime.now(UTC) - created).total_seconds()) < 600
