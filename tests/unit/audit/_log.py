"""Building signed audit logs for the tests, and re-chaining them the way an attacker would."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import ed25519

from bastion.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditLog,
    CheckpointSigner,
    MerkleAccumulator,
    SignedCheckpoint,
)

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ACTIONS = ("version.push", "version.pull", "namespace.create", "key.create", "version.yank")


def make_entry(seq: int, prev_hash: str, *, actor: str | None = None) -> AuditEntry:
    """A plausible entry; the same seq always gives the same content."""
    return AuditEntry.seal(
        prev_hash=prev_hash,
        seq=seq,
        time=START + timedelta(seconds=seq),
        actor=actor or f"key-{seq % 7}",
        action=ACTIONS[seq % len(ACTIONS)],
        resource=f"med/xray@1.{seq % 5}.0",
        outcome="denied" if seq % 11 == 0 else "allowed",
        source=f"10.0.0.{seq % 250}",
        request_id=f"req-{seq:06d}",
        details={"bytes": seq * 1024, "digest_ok": True, "tags": ["a", seq % 3]},
    )


def rechain(entries: Sequence[AuditEntry], start: int = 0) -> list[AuditEntry]:
    """Recompute seqs, prev_hashes and hashes from index ``start`` on (an attacker's rewrite)."""
    out = list(entries[:start])
    for index in range(start, len(entries)):
        prev = out[-1].hash if out else GENESIS_HASH
        e = entries[index]
        out.append(
            AuditEntry.seal(
                prev_hash=prev,
                seq=index + 1,
                time=e.time,
                actor=e.actor,
                action=e.action,
                resource=e.resource,
                outcome=e.outcome,
                source=e.source,
                request_id=e.request_id,
                details=e.details,
            )
        )
    return out


def reseal(entry: AuditEntry) -> AuditEntry:
    """The same entry with its hash recomputed over its (altered) content."""
    return replace(entry, hash=entry.compute_hash())


@dataclass
class SignedLog:
    entries: list[AuditEntry]
    checkpoints: list[SignedCheckpoint]
    signer: CheckpointSigner

    @property
    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self.signer.public_key


def build_log(
    size: int, every: int, signer: CheckpointSigner, *, log_id: str = "hub-test"
) -> SignedLog:
    """``size`` entries with a checkpoint signed after every ``every``-th (and at the end)."""
    entries: list[AuditEntry] = []
    checkpoints: list[SignedCheckpoint] = []
    tree = MerkleAccumulator()
    for seq in range(1, size + 1):
        entry = make_entry(seq, entries[-1].hash if entries else GENESIS_HASH)
        entries.append(entry)
        tree.append(bytes.fromhex(entry.hash))
        if seq % every == 0 or seq == size:
            checkpoints.append(
                signer.checkpoint(
                    log_id=log_id,
                    tree=tree,
                    last_hash=entry.hash,
                    now=START + timedelta(seconds=seq, milliseconds=500),
                )
            )
    return SignedLog(entries, checkpoints, signer)


def record_entries(
    log: AuditLog, count: int, *, actor: str = "key-1", action: str = "version.pull"
) -> None:
    """``count`` entries appended through ``log`` (resources med/xray@1.0.0, 1.0.1, ...)."""
    for i in range(count):
        log.record(
            actor=actor,
            action=action,
            resource=f"med/xray@1.0.{i}",
            outcome="allowed",
            source="10.0.0.1",
            request_id=f"req-{i}",
            details={"i": i},
        )
