"""``bastion audit verify|export``: check the hub's tamper-evident log, or copy it out.

``verify`` reads every entry and checkpoint from the hub (or from exported
files), checks the hash chain, the signed checkpoints and the Merkle roots,
and compares with the checkpoint this client witnessed last time (kept under
``$XDG_CONFIG_HOME/bastion/witness/``), so a log rolled back is caught too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from bastion.cli._hub import add_hub_options, open_client
from bastion.cli._output import add_json_flag, emit, note

if TYPE_CHECKING:
    from bastion.audit import AuditEntry, SignedCheckpoint
    from bastion.client import Client

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("audit", help="verify or export the hub's audit log")
    actions = p.add_subparsers(dest="audit_action", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify",
        help="detect modified, deleted, inserted or reordered entries and a rolled-back log",
        description="Exit 0: intact; 1: tampering found (each problem is listed).",
    )
    verify.add_argument("--entries", help="verify an exported file of entries instead of the hub")
    verify.add_argument("--checkpoints", help="with --entries: the exported checkpoints")
    verify.add_argument("--public-key", help="with --entries: the hub's audit public key (PEM)")
    verify.add_argument(
        "--witness",
        help="with --entries: a checkpoint seen before, that the log must extend (a witness "
        "file saved by verify, or a line of an earlier checkpoint export)",
    )
    verify.add_argument(
        "--no-witness", action="store_true", help="do not compare with or update the witness"
    )
    export = actions.add_parser("export", help="print the entries as JSON lines on stdout")
    export.add_argument("--since", help="only entries at or after this date/time (ISO 8601)")
    export.add_argument(
        "--checkpoints-out", help="also write the signed checkpoints (JSON lines) to this file"
    )
    for q in (verify, export):
        add_hub_options(q)
        add_json_flag(q)
        q.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.audit_action == "export":
        return _export(args)
    return _verify(args)


def _export(args: argparse.Namespace) -> int:
    from bastion.errors import UsageError

    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since)
        except ValueError as exc:
            raise UsageError(f"--since {args.since!r} is not an ISO 8601 date or time") from exc
    with open_client(args) as client:
        # Checkpoints first: the entries fetched after them cover every checkpoint, so the
        # two files verify together although the log grows while it is being exported.
        checkpoints = client.audit_checkpoints() if args.checkpoints_out else []
        lines = _readable_lines(client.audit_lines(since=since))
        if args.json:
            print(json.dumps({"entries": [json.loads(line) for line in lines]}, indent=2))
        else:
            count = 0
            for line in lines:
                sys.stdout.write(line + "\n")
                count += 1
            note(f"exported {count} audit entries")
    if args.checkpoints_out:
        _write_text(args.checkpoints_out, "".join(c + "\n" for c in checkpoints))
    return 0


def _write_text(path: str, text: str) -> None:
    from bastion.errors import InputError

    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {path!r}: {exc.strerror}") from exc


def _verify(args: argparse.Namespace) -> int:
    from bastion._files import read_input
    from bastion.audit import (
        load_audit_public_key,
        read_checkpoints,
        read_entries,
        verify_log,
    )
    from bastion.errors import IntegrityError, UsageError

    witness_file: Path | None = None
    refusal: str | None = None
    if args.entries or args.checkpoints or args.public_key:
        if not (args.entries and args.checkpoints and args.public_key):
            raise UsageError("--entries, --checkpoints and --public-key go together")
        public_key = load_audit_public_key(read_input(args.public_key, "public key", limit=1 << 16))
        # Without one, an export cut short with its checkpoints cut too cannot be told apart.
        witnessed = _given_witness(args.witness) if args.witness else None
        with _open(args.checkpoints, "checkpoint export") as stream:
            checkpoints = read_checkpoints(stream)
        with _open(args.entries, "audit log export") as stream:
            report = verify_log(read_entries(stream), checkpoints, public_key, witnessed=witnessed)
        key_id = None
    elif args.witness:
        raise UsageError(
            "--witness goes with --entries; verifying the hub, this client keeps its own witness"
        )
    else:
        with open_client(args) as client:
            key = client.audit_key()
            key_id = key["key_id"]
            public_key = load_audit_public_key(key["public_key"].encode())
            checkpoints, refusal = _checkpoints_to_head(client)
            witnessed = None
            if not args.no_witness:
                witness_file = _witness_path(client.url)
                witnessed = _load_witness(witness_file, key_id)
            report = verify_log(
                _stored_entries(client.audit_lines()), checkpoints, public_key, witnessed=witnessed
            )
    body: dict[str, Any] = report.to_dict()
    if refusal is not None:
        if report.ok:
            raise IntegrityError(
                f"the hub cannot return the checkpoint of its log's head ({refusal}): its "
                "stored audit log was altered or corrupted; keep a copy of the database and "
                "investigate"
            )
        body["hub_refusal"] = refusal
    if report.ok and witness_file is not None and checkpoints:
        _save_witness(witness_file, key_id, checkpoints[-1].to_json())
        body["witness"] = str(witness_file)
    lines = [f"audit log {'intact' if report.ok else 'TAMPERED'}: " + _summary(body)]
    lines += [f"  {p['kind']} at seq {p.get('seq')}: {p['message']}" for p in body["problems"]]
    if refusal is not None:
        lines.append(f"  the hub refuses to sign its head: {refusal}")
    emit(args, body, "\n".join(lines))
    return 0 if report.ok else 1


def _summary(body: dict[str, Any]) -> str:
    parts = [f"{k.replace('_', ' ')} {v}" for k, v in body.items() if isinstance(v, int)]
    return ", ".join(parts)


@contextmanager
def _open(path: str, what: str) -> Iterator[BinaryIO]:
    from bastion.errors import InputError, PathNotFoundError

    try:
        stream = Path(path).open("rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        raise PathNotFoundError(f"the {what} {path!r} does not exist") from None
    except OSError as exc:
        raise InputError(f"cannot read the {what} {path!r}: {exc.strerror}") from exc
    with stream:
        yield stream


def _stored_entries(lines: Iterable[str]) -> Iterator[AuditEntry]:
    """The hub's entries; one it cannot even parse was altered in its database (exit 1)."""
    for position, line in enumerate(lines, 1):
        yield _stored_entry(position, line)


def _readable_lines(lines: Iterable[str]) -> Iterator[str]:
    """The hub's lines as stored, each checked to be an entry (exit 1 at the first that is not)."""
    for position, line in enumerate(lines, 1):
        _stored_entry(position, line)
        yield line


def _stored_entry(position: int, line: str) -> AuditEntry:
    from bastion.audit import AuditEntry
    from bastion.errors import InputError, IntegrityError

    try:
        return AuditEntry.from_json(line)
    except InputError as exc:
        raise IntegrityError(
            f"audit entry {position} as stored by the hub cannot be read ({exc.message}): "
            "the log was altered or corrupted; keep a copy of the database and investigate"
        ) from exc


def _checkpoints_to_head(client: Client) -> tuple[list[SignedCheckpoint], str | None]:
    """The hub's checkpoints once it has signed its head, and why it would not, if it would not.

    A hub refuses when the head's stored checkpoint cannot be read (the list then names
    which one it is) or when the stored log does not extend the history it signed; the
    checkpoints it serves then include the last one it did sign, so the check goes on.
    """
    from bastion.errors import IntegrityError

    refusal = None
    try:
        client.audit_checkpoint()
    except IntegrityError as exc:
        refusal = exc.message
    return _stored_checkpoints(client.audit_checkpoints()), refusal


def _stored_checkpoints(lines: Iterable[str]) -> list[SignedCheckpoint]:
    from bastion.audit import SignedCheckpoint
    from bastion.errors import InputError, IntegrityError

    out = []
    for number, line in enumerate(lines, 1):
        try:
            out.append(SignedCheckpoint.from_json(line))
        except InputError as exc:
            raise IntegrityError(
                f"audit checkpoint #{number} as stored by the hub cannot be read ({exc.message}): "
                "the log was altered or corrupted; keep a copy of the database and investigate"
            ) from exc
    return out


def _witness_path(url: str) -> Path:
    from bastion.client import config_dir

    name = hashlib.sha256(url.encode()).hexdigest()[:32]
    return config_dir() / "witness" / f"{name}.json"


def _load_witness(path: Path, key_id: str) -> SignedCheckpoint | None:
    from bastion._files import read_input
    from bastion.audit import SignedCheckpoint
    from bastion.errors import InputError, IntegrityError

    if not path.exists():
        return None
    try:
        body = json.loads(read_input(path, "witness file", limit=1 << 16))
        if not isinstance(body, dict) or not isinstance(body.get("checkpoint"), str):
            raise ValueError("not a witness document")
        witnessed = SignedCheckpoint.from_json(body["checkpoint"])
    except (ValueError, InputError) as exc:
        raise InputError(
            f"the witness file {path} is corrupt; delete it and verify again (this forgets the "
            "checkpoint witnessed last time)"
        ) from exc
    if body.get("key_id") != key_id:
        raise IntegrityError(
            "the hub's audit key changed since this client last verified its log "
            f"({body.get('key_id')} -> {key_id}); if that was intended, verify with --no-witness "
            f"and delete {path}"
        )
    return witnessed


def _given_witness(path: str) -> SignedCheckpoint:
    """The checkpoint in a witness file that verify saved, or in one checkpoint line."""
    from bastion._files import read_input
    from bastion.audit import SignedCheckpoint
    from bastion.errors import InputError

    text = read_input(path, "witness", limit=1 << 16).decode("utf-8", "replace").strip()
    try:
        body = json.loads(text)
        line = body["checkpoint"] if isinstance(body, dict) and "checkpoint" in body else text
        if not isinstance(line, str):
            raise ValueError("the witness's checkpoint is not text")
        return SignedCheckpoint.from_json(line)
    except (ValueError, InputError) as exc:
        raise InputError(
            f"the witness {path!r} is neither a witness file saved by bastion audit verify nor "
            "one signed checkpoint line; give one of those"
        ) from exc


def _save_witness(path: Path, key_id: str | None, checkpoint: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key_id": key_id, "checkpoint": checkpoint}))
    os.replace(tmp, path)
