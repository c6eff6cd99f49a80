"""The hub's own witness: ``AuditLog`` signs only a stored log that extends what it signed.

Someone with write access to the database (but not to the hub's data folder) rewrites
the entries, recomputes the chain and its head, and deletes the stored checkpoints. The
hub must not sign the rewritten head, must keep recording, and must go on serving the
last checkpoint it did sign, so that a verifier finds the rewrite. On SQLite and, where
``BASTION_TEST_POSTGRES_URL`` is set, PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, update

from bastion.audit import (
    AuditEntry,
    AuditLog,
    Checkpoint,
    CheckpointSigner,
    MerkleAccumulator,
    SignedCheckpoint,
    verify_log,
)
from bastion.audit._hub_witness import ChainState, HubWitness, replay
from bastion.db import AuditCheckpointRow, AuditEntryRow, AuditHead, Database
from bastion.errors import IntegrityError
from tests.support.databases import migrated_database  # noqa: F401 (the database fixture)
from tests.unit.audit._log import record_entries

T0 = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
EVERY = 5


_SECONDS = itertools.count()


def _now() -> datetime:
    """A clock every log in this module shares: a restarted log goes on from the last."""
    return T0 + timedelta(seconds=next(_SECONDS))


def _open(db: Database, signer: CheckpointSigner, witness: Path | None) -> AuditLog:
    return AuditLog(db, signer, checkpoint_every=EVERY, now=_now, witness=witness)


def _stored(db: Database) -> list[AuditEntry]:
    with db.session() as s:
        return [AuditEntry.from_json(line) for line in s.scalars(select(AuditEntryRow.line))]


def _rewrite(db: Database, seq: int) -> None:
    """Change entry ``seq``, re-chain every entry after it and the head, drop the checkpoints."""
    entries = _stored(db)
    prev = entries[seq - 2].hash if seq > 1 else entries[0].prev_hash
    tree = MerkleAccumulator()
    for e in entries[: seq - 1]:
        tree.append(bytes.fromhex(e.hash))
    with db.session() as s:
        for e in entries[seq - 1 :]:
            changed = dataclasses.replace(e, prev_hash=prev)
            if e.seq == seq:
                changed = dataclasses.replace(changed, actor="key:mallory")
            changed = dataclasses.replace(changed, hash=changed.compute_hash())
            s.execute(
                update(AuditEntryRow)
                .where(AuditEntryRow.seq == e.seq)
                .values(
                    line=changed.to_json(), actor=changed.actor, prev_hash=prev, hash=changed.hash
                )
            )
            tree.append(bytes.fromhex(changed.hash))
            prev = changed.hash
        s.execute(update(AuditHead).values(hash=prev, accumulator=tree.to_json()))
        s.execute(delete(AuditCheckpointRow))


def _report(
    log: AuditLog | None, db: Database, signer: CheckpointSigner
) -> list[tuple[str, int | None]]:
    """What verify finds: with ``log``'s checkpoints, or (None) with the stored ones only."""
    if log is None:
        with db.session() as s:
            lines = list(s.scalars(select(AuditCheckpointRow.body)))
    else:
        lines = log.checkpoints()
    checkpoints = [SignedCheckpoint.from_json(line) for line in lines]
    report = verify_log(_stored(db), checkpoints, signer.public_key)
    return [(p.kind, p.seq) for p in report.problems]


def test_a_rewritten_log_is_never_signed_and_stays_detectable(
    database: Database, signer: CheckpointSigner, tmp_path: Path
) -> None:
    log = _open(database, signer, tmp_path / "witness.json")
    record_entries(log, 12)  # checkpoints at 5 and 10
    assert _report(log, database, signer) == []
    _rewrite(database, 7)
    record_entries(log, 8, actor="key-2")  # recording goes on: 20 entries, seq 15 and 20 unsigned
    assert len(_stored(database)) == 20
    with pytest.raises(IntegrityError, match="does not extend the history this hub signed"):
        log.checkpoint()
    # The stored checkpoints are gone; the hub's own (size 10) still anchors the log.
    lines = log.checkpoints()
    assert [SignedCheckpoint.from_json(line).checkpoint.size for line in lines] == [10]
    # No checkpoint matches the rewritten entries: rewritten from the first on.
    assert ("modified", 1) in _report(log, database, signer)
    assert not any(kind == "modified" for kind, _ in _report(None, database, signer))


def test_a_restart_replays_from_the_witness_and_refuses_a_rewrite_made_while_down(
    database: Database, signer: CheckpointSigner, tmp_path: Path
) -> None:
    witness = tmp_path / "witness.json"
    record_entries(_open(database, signer, witness), 7)  # signed at 5
    assert os.stat(witness).st_mode & 0o777 == 0o600
    _rewrite(database, 2)
    restarted = _open(database, signer, witness)
    with pytest.raises(IntegrityError, match="stored entry 6 does not link to entry 5"):
        restarted.checkpoint()
    assert ("modified", 1) in _report(restarted, database, signer)


def test_a_database_rolled_back_is_never_signed(
    database: Database, signer: CheckpointSigner, tmp_path: Path
) -> None:
    witness = tmp_path / "witness.json"
    log = _open(database, signer, witness)
    record_entries(log, 10)
    older = _stored(database)[:6]  # an older backup held entries 1..6
    tree = MerkleAccumulator()
    for e in older:
        tree.append(bytes.fromhex(e.hash))
    with database.session() as s:
        s.execute(delete(AuditEntryRow).where(AuditEntryRow.seq > 6))
        s.execute(delete(AuditCheckpointRow).where(AuditCheckpointRow.size > 6))
        s.execute(update(AuditHead).values(seq=6, hash=older[-1].hash, accumulator=tree.to_json()))
    restarted = _open(database, signer, witness)
    with pytest.raises(IntegrityError, match="holds 6 entries, but this hub knows of 10"):
        restarted.checkpoint()
    record_entries(restarted, 4)  # seq 10 again, and not signed
    with database.session() as s:
        assert s.get(AuditCheckpointRow, 10) is None
    # Removing the witness is how an operator accepts a restored database.
    witness.unlink()
    accepted = _open(database, signer, witness)
    assert SignedCheckpoint.from_json(accepted.checkpoint() or "").checkpoint.size == 10
    assert _report(accepted, database, signer) == []


def test_two_processes_sharing_the_database_sign_each_others_entries(
    database: Database, signer: CheckpointSigner, tmp_path: Path
) -> None:
    witness = tmp_path / "witness.json"
    first, second = _open(database, signer, witness), _open(database, signer, witness)
    for _ in range(4):
        record_entries(first, 3, actor="key-a")
        record_entries(second, 2, actor="key-b")
    assert first.checkpoint() is not None
    assert second.checkpoint() is not None
    sizes = [SignedCheckpoint.from_json(line).checkpoint.size for line in first.checkpoints()]
    assert sizes == [5, 10, 15, 20]
    assert _report(first, database, signer) == []
    state, checkpoint = HubWitness(witness).load() or pytest.fail("no witness kept")
    assert (state.size, checkpoint.checkpoint.size) == (20, 20)


@pytest.mark.parametrize("signed", [True, False], ids=["signed-other-state", "bad-signature"])
def test_a_stored_checkpoint_of_the_head_for_another_state_is_refused(
    database: Database, signer: CheckpointSigner, tmp_path: Path, signed: bool
) -> None:
    log = _open(database, signer, tmp_path / "witness.json")
    record_entries(log, 6)
    other_state = Checkpoint(
        log_id=log.log_id,
        size=6,
        root="ab" * 32,
        last_hash="cd" * 32,
        time=T0,
        key_id=signer.key_id,
    )
    forged = signer.sign(other_state)
    if not signed:
        forged = SignedCheckpoint(other_state, bytes(64))
    with database.session() as s:
        s.add(AuditCheckpointRow(size=6, body=forged.to_json()))
    with pytest.raises(IntegrityError, match="does not match" if signed else "does not verify"):
        log.checkpoint()


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", b"{}", b'{"v":1}', b"[1,2]", "\u00e9".encode("latin-1")],
    ids=["empty", "garbage", "empty-object", "fields-missing", "array", "not-utf8"],
)
def test_an_unusable_witness_stops_the_log_from_opening(
    database: Database, signer: CheckpointSigner, tmp_path: Path, content: bytes
) -> None:
    witness = tmp_path / "witness.json"
    witness.write_bytes(content)
    witness.chmod(0o600)
    with pytest.raises(IntegrityError, match=r"audit witness .* cannot be used"):
        _open(database, signer, witness)


def test_a_witness_others_may_read_or_of_another_key_is_refused(
    database: Database,
    signer: CheckpointSigner,
    other_signer: CheckpointSigner,
    tmp_path: Path,
) -> None:
    witness = tmp_path / "witness.json"
    record_entries(_open(database, signer, witness), 5)
    with pytest.raises(IntegrityError, match="signed by another key"):
        _open(database, other_signer, witness)
    witness.chmod(0o644)
    with pytest.raises(IntegrityError, match="cannot be used"):
        _open(database, signer, witness)


def test_replay_names_the_first_row_that_does_not_follow(signer: CheckpointSigner) -> None:
    state = ChainState.genesis()
    entries = []
    for seq in range(1, 4):
        entry = AuditEntry.seal(
            prev_hash=state.last_hash,
            seq=seq,
            time=T0,
            actor="key-1",
            action="version.pull",
            resource="med/xray@1.0.0",
            outcome="allowed",
            source="10.0.0.1",
            request_id=f"req-{seq}",
        )
        entries.append(entry)
        state = state.extended(entry.hash)
    rows = [(e.seq, e.to_json()) for e in entries]
    assert replay(ChainState.genesis(), rows) == state
    with pytest.raises(IntegrityError, match="entry 3 where entry 2 should follow"):
        replay(ChainState.genesis(), [rows[0], rows[2]])
    with pytest.raises(IntegrityError, match="stored entry 2 cannot be read"):
        replay(ChainState.genesis(), [rows[0], (2, "{")])
    swapped = dataclasses.replace(entries[1], prev_hash="1" * 64)
    with pytest.raises(IntegrityError, match="stored entry 2 does not hash"):
        replay(ChainState.genesis(), [rows[0], (2, swapped.to_json())])
    relinked = dataclasses.replace(swapped, hash=swapped.compute_hash())
    with pytest.raises(IntegrityError, match="stored entry 2 does not link to entry 1"):
        replay(ChainState.genesis(), [rows[0], (2, relinked.to_json())])


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_mutated_witness_file_is_refused_never_crashes(
    tmp_path_factory: pytest.TempPathFactory, signer: CheckpointSigner, data: st.DataObject
) -> None:
    folder = tmp_path_factory.mktemp("witness")
    witness = HubWitness(folder / "witness.json")
    state = ChainState.genesis()
    for i in range(3):
        state = state.extended(f"{i:064x}")
    checkpoint = signer.checkpoint(
        log_id="bastion-audit:test", tree=state.tree, last_hash=state.last_hash, now=T0
    )
    witness.keep(state, checkpoint)
    original = witness.path.read_bytes()
    position = data.draw(st.integers(0, len(original) - 1))
    cut = data.draw(st.booleans())
    replacement = data.draw(st.binary(min_size=0 if cut else 1, max_size=8))
    mutated = original[:position] + replacement + (b"" if cut else original[position + 1 :])
    witness.path.write_bytes(mutated)
    try:
        loaded, refusal = witness.load(), ""
    except IntegrityError as exc:
        loaded, refusal = None, exc.message
    if loaded is None:
        assert "cannot be used" in refusal
    else:
        assert loaded[0].matches(loaded[1])


def test_without_a_witness_the_stored_head_is_taken_unless_it_is_at_odds_with_itself(
    database: Database, signer: CheckpointSigner, tmp_path: Path
) -> None:
    record_entries(_open(database, signer, None), 7)
    _rewrite(database, 3)  # a consistent rewrite, before any witness existed: taken as found
    trusting = _open(database, signer, tmp_path / "witness.json")
    assert SignedCheckpoint.from_json(trusting.checkpoint() or "").checkpoint.size == 7
    with database.session() as s:  # a head whose accumulator does not cover its seq
        s.execute(update(AuditHead).values(accumulator=MerkleAccumulator().to_json()))
    (tmp_path / "witness.json").unlink()
    reading = _open(database, signer, tmp_path / "witness.json")
    record_entries(reading, 1)  # read back from the first entry, which still chains: signs on
    assert SignedCheckpoint.from_json(reading.checkpoint() or "").checkpoint.size == 8
    assert _report(reading, database, signer) == []
