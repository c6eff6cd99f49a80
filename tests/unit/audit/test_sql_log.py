"""``AuditLog``, the audit log in the hub's database: reading it back by time and by page,
and a stored checkpoint that can no longer be read.

On SQLite and, where ``BASTION_TEST_POSTGRES_URL`` is set, PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from bastion.audit import AuditEntry, AuditLog, CheckpointSigner
from bastion.db import AuditCheckpointRow, AuditEntryRow, Database
from bastion.errors import IntegrityError
from tests.support.databases import migrated_database  # noqa: F401 (the database fixture)
from tests.unit.audit._log import record_entries

T0 = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


def _log(db: Database, signer: CheckpointSigner, entries: int, *, every: int = 1000) -> AuditLog:
    """``entries`` entries, recorded 30 minutes apart from 12:00 UTC on."""
    clock = iter([T0 + timedelta(minutes=30 * i) for i in range(entries)])
    log = AuditLog(db, signer, checkpoint_every=every, now=lambda: next(clock, T0))
    record_entries(log, entries, action="version.push")
    return log


def _seqs(lines: list[str]) -> list[int]:
    return [AuditEntry.from_json(line).seq for line in lines]


@pytest.mark.parametrize(
    "since",
    [
        datetime(2026, 1, 31, 13, 0, tzinfo=UTC),
        datetime(2026, 1, 31, 15, 0, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 1, 31, 7, 30, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        datetime(2026, 1, 31, 13, 0),  # naive: UTC
    ],
    ids=["utc", "plus-2h", "minus-5h30", "naive"],
)
def test_since_is_one_instant_whatever_its_offset(
    database: Database, signer: CheckpointSigner, since: datetime
) -> None:
    log = _log(database, signer, 8)  # 12:00 .. 15:30 UTC
    assert _seqs(log.entries(since=since)) == [3, 4, 5, 6, 7, 8]  # from 13:00 UTC


def test_a_page_ends_at_its_last_row_whatever_its_line_says(
    database: Database, signer: CheckpointSigner
) -> None:
    log = _log(database, signer, 7)
    with database.session() as s:
        doc = json.loads(s.scalars(select(AuditEntryRow.line).where(AuditEntryRow.seq == 3)).one())
        doc["seq"] = 1  # the line altered in the database; the row is still the third
        s.execute(update(AuditEntryRow).where(AuditEntryRow.seq == 3).values(line=json.dumps(doc)))
    lines, after = log.page(after=0, limit=3)
    assert (len(lines), after) == (3, 3)
    lines, after = log.page(after=after, limit=3)
    assert (_seqs(lines), after) == ([4, 5, 6], 6)
    lines, after = log.page(after=after, limit=3)
    assert (_seqs(lines), after) == ([7], 7)
    assert log.page(after=after, limit=3) == ([], 7)


def test_an_unreadable_checkpoint_of_the_head_is_an_integrity_error(
    database: Database, signer: CheckpointSigner
) -> None:
    log = _log(database, signer, 5, every=5)  # the head, 5 entries, is signed
    signed = log.checkpoint()
    assert signed == log.checkpoints()[-1]
    with database.session() as s:
        s.execute(
            update(AuditCheckpointRow).where(AuditCheckpointRow.size == 5).values(body="garbage")
        )
    with pytest.raises(IntegrityError, match="checkpoint for size 5 cannot be read"):
        log.checkpoint()
    # Kept as found, not signed over; the log's own copy of what it signed is served after it.
    assert log.checkpoints() == ["garbage", signed]
