"""The tamper-evident audit log: hash-chained entries, a Merkle tree, signed checkpoints.

A policy-layer package. The format, the Merkle tree, checkpoints and verification
hold no database, server or web code; :class:`AuditLog` (``_sql_log.py``) keeps the
log in the hub's database (``bastion.db``, the base layer) for the hub and the
gateway. See ``docs/audit.md``.
"""

from bastion.audit._checkpoint import Checkpoint, CheckpointSigner, SignedCheckpoint
from bastion.audit._entry import GENESIS_HASH, OUTCOMES, AuditEntry, Outcome
from bastion.audit._export import read_checkpoints, read_entries, write_lines
from bastion.audit._key import (
    audit_key_id,
    create_audit_key,
    load_audit_key,
    load_audit_public_key,
    load_or_create_audit_key,
    public_key_pem,
)
from bastion.audit._merkle import MerkleAccumulator, merkle_root
from bastion.audit._report import PROBLEM_KINDS, AuditProblem, AuditReport, ProblemKind
from bastion.audit._sql_log import AuditLog
from bastion.audit._verify import verify_log

__all__ = [
    "GENESIS_HASH",
    "OUTCOMES",
    "PROBLEM_KINDS",
    "AuditEntry",
    "AuditLog",
    "AuditProblem",
    "AuditReport",
    "Checkpoint",
    "CheckpointSigner",
    "MerkleAccumulator",
    "Outcome",
    "ProblemKind",
    "SignedCheckpoint",
    "audit_key_id",
    "create_audit_key",
    "load_audit_key",
    "load_audit_public_key",
    "load_or_create_audit_key",
    "merkle_root",
    "public_key_pem",
    "read_checkpoints",
    "read_entries",
    "verify_log",
    "write_lines",
]
