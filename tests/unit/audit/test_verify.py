"""verify_log on a signed log of 300 entries (a checkpoint every 25): each way of tampering
with it is detected and classified as docs/audit.md says."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from bastion.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditReport,
    CheckpointSigner,
    MerkleAccumulator,
    SignedCheckpoint,
    read_checkpoints,
    read_entries,
    verify_log,
    write_lines,
)
from bastion.audit._runs import MAX_RUNS
from bastion.audit._verify import MAX_PROBLEMS
from bastion.errors import IntegrityError, UsageError
from tests.unit.audit._log import START, SignedLog, build_log, make_entry, rechain, reseal


def check(
    log: SignedLog,
    entries: list[AuditEntry] | None = None,
    checkpoints: list[SignedCheckpoint] | None = None,
    **kwargs: SignedCheckpoint,
) -> AuditReport:
    return verify_log(
        log.entries if entries is None else entries,
        log.checkpoints if checkpoints is None else checkpoints,
        log.public_key,
        **kwargs,
    )


def only(report: AuditReport) -> tuple[str, int | None]:
    """The single problem's kind and seq (and the report must have exactly one)."""
    assert len(report.problems) == 1, [p.to_dict() for p in report.problems]
    assert not report.ok
    return report.problems[0].kind, report.problems[0].seq


def test_a_clean_log_verifies(log: SignedLog) -> None:
    report = check(log)
    assert report.ok
    assert report.problems == ()
    assert report.entries == 300
    assert report.checkpoints == 12
    assert report.checkpoints_verified == 12
    assert report.checkpointed == 300
    report.raise_for_problems()  # does not raise
    assert report.to_dict() == {
        "ok": True,
        "entries": 300,
        "checkpoints": 12,
        "checkpoints_verified": 12,
        "checkpointed": 300,
        "counts": {},
        "problems": [],
        "problems_omitted": 0,
    }


def test_a_log_that_grew_after_its_last_checkpoint_verifies(signer: CheckpointSigner) -> None:
    log = build_log(60, 25, signer)
    report = check(log, checkpoints=log.checkpoints[:2])
    assert report.ok
    assert report.checkpointed == 50
    assert report.entries == 60


def test_an_empty_log_verifies() -> None:
    report = verify_log([], [], ed25519.Ed25519PrivateKey.generate().public_key())
    assert report.ok
    assert report.entries == 0


def test_modified_content(log: SignedLog) -> None:
    entries = list(log.entries)
    entries[99] = replace(
        entries[99], outcome="allowed" if entries[99].outcome != "allowed" else "denied"
    )
    report = check(log, entries)
    assert only(report) == ("modified", 100)
    assert report.problems[0].position == 100
    assert "does not match its stored hash" in report.problems[0].message
    assert report.checkpointed == 300  # the stored hashes, hence the roots, are untouched


def test_modified_content_with_its_hash_recomputed(log: SignedLog) -> None:
    entries = list(log.entries)
    entries[99] = reseal(replace(entries[99], actor="mallory"))
    report = check(log, entries)
    assert only(report) == ("modified", 100)
    assert "modified and its hash recomputed" in report.problems[0].message
    assert report.checkpointed == 75


def test_modified_first_entry_with_its_hash_recomputed(log: SignedLog) -> None:
    entries = list(log.entries)
    entries[0] = reseal(replace(entries[0], actor="mallory"))
    assert only(check(log, entries)) == ("modified", 1)


def test_deleted_entry(log: SignedLog) -> None:
    entries = list(log.entries)
    del entries[99]
    report = check(log, entries)
    assert only(report) == ("deleted", 100)
    assert "entry 100 is missing" in report.problems[0].message


def test_deleted_range_and_deleted_head(log: SignedLog) -> None:
    entries = list(log.entries)
    del entries[99:120]
    report = check(log, entries)
    assert only(report) == ("deleted", 100)
    assert "entries 100..120 are missing" in report.problems[0].message
    assert only(check(log, log.entries[3:])) == ("deleted", 1)


def test_truncated_tail(log: SignedLog) -> None:
    report = check(log, log.entries[:290])
    assert only(report) == ("deleted", 291)
    assert "entries 291..300 were deleted from its end" in report.problems[0].message
    assert report.checkpointed == 275


def test_inserted_forged_entry_chained_to_its_predecessor(log: SignedLog) -> None:
    entries = list(log.entries)
    forged = make_entry(101, entries[99].hash, actor="mallory")
    entries.insert(100, forged)
    report = check(log, entries)
    assert only(report) == ("inserted", 101)
    assert report.problems[0].position == 101


def test_inserted_forged_entry_that_chains_to_nothing(log: SignedLog) -> None:
    entries = list(log.entries)
    entries.insert(100, make_entry(101, "ab" * 32, actor="mallory"))
    assert only(check(log, entries)) == ("inserted", 101)
    entries = list(log.entries)
    entries.insert(100, make_entry(9999, "ab" * 32, actor="mallory"))
    report = check(log, entries)
    assert only(report) == ("inserted", 9999)
    assert "chains to no entry" in report.problems[0].message


def test_inserted_entry_with_a_garbage_hash(log: SignedLog) -> None:
    entries = list(log.entries)
    entries.insert(100, replace(make_entry(101, entries[99].hash, actor="x"), hash="cd" * 32))
    assert only(check(log, entries)) == ("inserted", 101)


def test_inserted_before_the_first_entry(log: SignedLog) -> None:
    entries = [make_entry(1, GENESIS_HASH, actor="mallory"), *log.entries]
    assert only(check(log, entries)) == ("inserted", 1)


def test_duplicated_entry(log: SignedLog) -> None:
    entries = list(log.entries)
    entries.insert(200, entries[149])
    assert only(check(log, entries)) == ("inserted", 150)


def test_swapped_neighbours(log: SignedLog) -> None:
    entries = list(log.entries)
    entries[99], entries[100] = entries[100], entries[99]
    kind, seq = only(check(log, entries))
    assert kind == "reordered"
    assert seq in (100, 101)


def test_swapped_distant_entries(log: SignedLog) -> None:
    entries = list(log.entries)
    entries[99], entries[149] = entries[149], entries[99]
    report = check(log, entries)
    assert [(p.kind, p.seq) for p in report.problems] == [("reordered", 100), ("reordered", 150)]
    assert {p.position for p in report.problems} == {100, 150}


def test_moved_block(log: SignedLog) -> None:
    entries = list(log.entries)
    block = entries[10:20]
    del entries[10:20]
    entries[200:200] = block
    report = check(log, entries)
    assert only(report) == ("reordered", 11)
    assert "entries 11..20 (positions 201..210)" in report.problems[0].message


def test_whole_chain_recomputed_after_a_change(log: SignedLog) -> None:
    entries = list(log.entries)
    entries[99] = replace(entries[99], actor="mallory")
    report = check(log, rechain(entries, 99))
    assert only(report) == ("modified", 76)
    assert "entries 76..300 were rewritten" in report.problems[0].message
    assert report.checkpointed == 75


def test_whole_chain_recomputed_after_a_deletion(log: SignedLog) -> None:
    entries = list(log.entries)
    del entries[99]
    report = check(log, rechain(entries, 99))
    assert [(p.kind, p.seq) for p in report.problems] == [("modified", 76), ("deleted", 300)]


def test_an_entry_appended_with_a_small_seq_does_not_hide_a_rewrite(log: SignedLog) -> None:
    # Entries 100.. rewritten, and a junk entry claiming seq 3 appended at the end: it
    # breaks the chain only at position 301, and the checkpoints up to 75 show that
    # nothing before them moved, so the mismatches from 100 on are still a rewrite.
    entries = list(log.entries)
    entries[99] = replace(entries[99], actor="mallory")
    entries = [*rechain(entries, 99), make_entry(3, "ab" * 32, actor="mallory")]
    report = check(log, entries)
    assert [(p.kind, p.seq, p.position) for p in report.problems] == [
        ("inserted", 3, 301),
        ("modified", 76, None),
    ]
    assert "entries 76..300 were rewritten" in report.problems[1].message


def test_a_block_moved_to_the_end_still_explains_the_roots_after_its_seq(log: SignedLog) -> None:
    # The seq of a moved block names where the stream was disturbed: no rewrite to report.
    entries = list(log.entries)
    block = entries[110:120]
    del entries[110:120]
    report = check(log, [*entries, *block])
    assert only(report) == ("reordered", 111)


def test_rechaining_without_a_change_is_harmless(log: SignedLog) -> None:
    assert check(log, rechain(log.entries, 0)).ok


def test_forged_checkpoint(log: SignedLog) -> None:
    checkpoints = list(log.checkpoints)
    checkpoints[3] = replace(
        checkpoints[3], checkpoint=replace(checkpoints[3].checkpoint, root="00" * 32)
    )
    report = check(log, checkpoints=checkpoints)
    assert only(report) == ("bad_signature", 100)
    assert "forged or altered" in report.problems[0].message
    assert report.checkpoints_verified == 11


def test_checkpoint_signed_by_another_key(log: SignedLog, other_signer: CheckpointSigner) -> None:
    checkpoints = list(log.checkpoints)
    cp = checkpoints[3].checkpoint
    checkpoints[3] = other_signer.sign(replace(cp, key_id=other_signer.key_id))
    report = check(log, checkpoints=checkpoints)
    assert only(report) == ("bad_signature", 100)
    assert "signed by another key" in report.problems[0].message


def test_rewrite_covered_by_checkpoints_the_attacker_signed_with_another_key(
    log: SignedLog, other_signer: CheckpointSigner
) -> None:
    entries = list(log.entries)
    entries[99] = replace(entries[99], actor="mallory")
    entries = rechain(entries, 99)
    tree = MerkleAccumulator()
    for e in entries:
        tree.append(bytes.fromhex(e.hash))
    forged = other_signer.checkpoint(
        log_id="hub-test", tree=tree, last_hash=entries[-1].hash, now=START + timedelta(hours=1)
    )
    report = check(log, entries, [*log.checkpoints[:3], forged])
    assert [p.kind for p in report.problems] == ["bad_signature"]
    # Without the genuine later checkpoints the rewrite itself is out of reach; with a
    # witnessed one it is a rollback.
    report = check(log, entries, [*log.checkpoints[:3], forged], witnessed=log.checkpoints[-1])
    assert sorted(p.kind for p in report.problems) == ["bad_signature", "rolled_back"]


def test_rolled_back_to_an_older_state(log: SignedLog) -> None:
    # The whole database restored from an older backup: entries and checkpoints agree
    # with each other, but not with a checkpoint a client witnessed before.
    report = check(log, log.entries[:200], log.checkpoints[:8], witnessed=log.checkpoints[-1])
    assert only(report) == ("rolled_back", 201)
    assert "covers 300 entries" in report.problems[0].message
    assert check(log, log.entries[:200], log.checkpoints[:8]).ok  # what nobody witnessed


def test_a_rollback_padded_with_a_forged_high_seq_still_shows(log: SignedLog) -> None:
    # Rolled back to 200 entries, then an entry claiming seq 9999 appended: the log now
    # reads as 201..9998 deleted, which the witnessed checkpoint no longer needs to tell.
    entries = [*log.entries[:200], make_entry(9999, log.entries[199].hash, actor="mallory")]
    report = check(log, entries, log.checkpoints[:8], witnessed=log.checkpoints[-1])
    assert only(report) == ("deleted", 201)
    assert "entries 201..9998 are missing" in report.problems[0].message


def test_rolled_back_and_rewritten_since(log: SignedLog, signer: CheckpointSigner) -> None:
    # Restored to 200 entries, then the hub went on recording different entries and
    # signing checkpoints with its own key: a fork the witnessed checkpoint exposes.
    forked = build_log(300, 25, signer)
    entries = list(log.entries[:200])
    for seq in range(201, 301):
        entries.append(make_entry(seq, entries[-1].hash, actor="someone-else"))
    tree = MerkleAccumulator()
    checkpoints = list(log.checkpoints[:8])
    for e in entries:
        tree.append(bytes.fromhex(e.hash))
        if e.seq > 200 and e.seq % 25 == 0:
            checkpoints.append(
                signer.checkpoint(
                    log_id="hub-test",
                    tree=tree,
                    last_hash=e.hash,
                    now=START + timedelta(hours=1, seconds=e.seq),
                )
            )
    assert check(forked, entries, checkpoints).ok  # consistent with itself
    report = check(forked, entries, checkpoints, witnessed=log.checkpoints[-1])
    assert only(report) == ("rolled_back", 300)
    assert "rolled back and rewritten" in report.problems[0].message


def test_a_witnessed_checkpoint_the_log_extends_is_fine(log: SignedLog) -> None:
    assert check(log, witnessed=log.checkpoints[4]).ok
    assert check(log, witnessed=log.checkpoints[-1]).ok


def test_a_witnessed_checkpoint_that_does_not_verify(
    log: SignedLog, other_signer: CheckpointSigner
) -> None:
    theirs = other_signer.sign(replace(log.checkpoints[2].checkpoint, key_id=other_signer.key_id))
    assert only(check(log, witnessed=theirs)) == ("bad_signature", 75)


def test_a_witnessed_checkpoint_of_another_log(log: SignedLog, signer: CheckpointSigner) -> None:
    other = build_log(30, 30, signer, log_id="other-hub")
    kind, _ = only(check(log, witnessed=other.checkpoints[0]))
    assert kind == "bad_checkpoint"


def test_stored_checkpoints_deleted_after_one_was_witnessed(log: SignedLog) -> None:
    report = check(log, checkpoints=log.checkpoints[:8], witnessed=log.checkpoints[-1])
    assert only(report) == ("bad_checkpoint", 300)
    assert "newer checkpoints were deleted" in report.problems[0].message


def test_checkpoints_that_shrink(log: SignedLog) -> None:
    checkpoints = list(log.checkpoints)
    checkpoints[4], checkpoints[5] = checkpoints[5], checkpoints[4]
    report = check(log, checkpoints=checkpoints)
    assert only(report) == ("bad_checkpoint", 125)
    assert "smaller than" in report.problems[0].message


def test_checkpoints_dated_backwards(log: SignedLog, signer: CheckpointSigner) -> None:
    checkpoints = list(log.checkpoints)
    cp = checkpoints[5].checkpoint
    checkpoints[5] = signer.sign(replace(cp, time=cp.time - timedelta(hours=1)))
    assert only(check(log, checkpoints=checkpoints)) == ("bad_checkpoint", 150)


def test_two_checkpoints_of_one_size_that_disagree(
    log: SignedLog, signer: CheckpointSigner
) -> None:
    checkpoints = list(log.checkpoints)
    cp = checkpoints[5].checkpoint
    checkpoints.insert(6, signer.sign(replace(cp, root="11" * 32)))
    report = check(log, checkpoints=checkpoints)
    assert report.counts() == {"bad_checkpoint": 1, "modified": 1}
    assert "forked" in report.problems[0].message


def test_a_checkpoint_of_another_log_mixed_in(log: SignedLog, signer: CheckpointSigner) -> None:
    other = build_log(30, 30, signer, log_id="other-hub")
    kind, _ = only(check(log, checkpoints=[*log.checkpoints, other.checkpoints[0]]))
    assert kind == "bad_checkpoint"


def test_a_checkpoint_of_size_zero(signer: CheckpointSigner) -> None:
    log = build_log(5, 5, signer)
    empty = signer.checkpoint(
        log_id="hub-test", tree=MerkleAccumulator(), last_hash=GENESIS_HASH, now=START
    )
    assert check(log, checkpoints=[empty, *log.checkpoints]).ok
    wrong = signer.sign(replace(empty.checkpoint, last_hash="ab" * 32))
    assert only(check(log, checkpoints=[wrong, *log.checkpoints])) == ("bad_checkpoint", 0)


def test_several_problems_are_all_reported_in_seq_order(log: SignedLog) -> None:
    entries = list(log.entries)
    entries[9] = replace(entries[9], actor="mallory")  # modified (content only)
    del entries[49]  # deleted
    entries[199], entries[200] = entries[200], entries[199]  # reordered (positions shift)
    report = check(log, entries)
    assert [p.kind for p in report.problems] == ["modified", "deleted", "reordered"]
    assert [p.seq for p in report.problems][:2] == [10, 50]
    with pytest.raises(IntegrityError, match="3 problem"):
        report.raise_for_problems()


def test_problems_are_capped(signer: CheckpointSigner) -> None:
    log = build_log(MAX_PROBLEMS + 200, 10_000, signer)
    entries = [replace(e, actor="mallory") for e in log.entries]
    report = check(log, entries)
    assert len(report.problems) == MAX_PROBLEMS
    assert report.problems_omitted == 200
    assert report.to_dict()["problems_omitted"] == 200


def test_a_log_in_pieces_is_classified_up_to_a_limit(signer: CheckpointSigner) -> None:
    log = build_log(MAX_RUNS + 500, 100_000, signer)
    report = check(log, list(reversed(log.entries)))
    assert not report.ok
    assert len(report.problems) <= MAX_PROBLEMS
    assert any(f"more than {MAX_RUNS} times" in p.message for p in report.problems)


def _stream(count: int) -> Iterator[AuditEntry]:
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        entry = make_entry(seq, prev)
        prev = entry.hash
        yield entry


def test_memory_stays_bounded_however_long_the_log() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    tracemalloc.start()
    try:
        report = verify_log(_stream(4000), [], key.public_key())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok
    assert report.entries == 4000
    # 4000 entries held at once would take several megabytes.
    assert peak < 1_000_000


def test_verify_refuses_wrong_argument_types(log: SignedLog) -> None:
    with pytest.raises(UsageError, match="AuditEntry"):
        verify_log([log.entries[0].to_json()], [], log.public_key)  # type: ignore[list-item]
    with pytest.raises(UsageError, match="SignedCheckpoint"):
        verify_log([], [log.checkpoints[0].to_json()], log.public_key)  # type: ignore[list-item]
    with pytest.raises(UsageError, match="Ed25519"):
        verify_log([], [], log.public_key.public_bytes_raw())  # type: ignore[arg-type]


def test_export_round_trip_and_streaming_verify(log: SignedLog) -> None:
    entries_file, checkpoints_file = io.BytesIO(), io.BytesIO()
    assert write_lines(log.entries, entries_file) == 300
    assert write_lines(log.checkpoints, checkpoints_file) == 12
    assert entries_file.getvalue().count(b"\n") == 300
    entries_file.seek(0)
    checkpoints_file.seek(0)
    checkpoints = read_checkpoints(checkpoints_file)
    assert checkpoints == log.checkpoints
    report = verify_log(read_entries(entries_file), checkpoints, log.public_key)
    assert report.ok
    assert report.entries == 300
