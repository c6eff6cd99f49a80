"""Tampering with the hub's audit log, and ``bastion audit verify`` catching it.

A log of a few dozen entries is built once through real requests (a hub with a
checkpoint every 5 entries), then each test works on a copy of that data folder:
it edits the SQLite database the way someone with write access to it could, starts
a hub on the copy, and checks that ``bastion audit verify --json`` exits 1 and
names the right kind of problem at the right seq. The exported-files form
(``--entries/--checkpoints/--public-key``) is checked the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bastion
from bastion.audit import (
    AuditEntry,
    MerkleAccumulator,
    SignedCheckpoint,
    create_audit_key,
    load_audit_public_key,
    public_key_pem,
    verify_log,
)
from bastion.cli import main
from tests.integration.hub.conftest import RunningHub, start_hub, write_safe_model

EVERY = 5  # a signed checkpoint every 5 entries
DB = "hub.sqlite"


@dataclass(frozen=True)
class Pristine:
    data_dir: Path
    token: str
    entries: int


@contextlib.contextmanager
def running_hub(data_dir: Path, port: int | None = None) -> Iterator[RunningHub]:
    hub, server, thread = start_hub(data_dir, checkpoint_every=EVERY, port=port)
    try:
        yield hub
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        hub.services.hub.db.dispose()


def _build_log(hub: RunningHub, work: Path) -> None:
    """Real traffic: allowed, denied and failed requests of several kinds."""
    key = bastion.generate_key("ed25519")
    with hub.client() as admin:
        admin.create_namespace("med", bastion.TrustPolicy.for_keys([key.public_key]))
        admin.push(write_safe_model(work / "model"), "med/xray@1.0.0", key=key)
        admin.pull("med/xray@1.0.0", work / "pulled")
        admin.set_alias("med/xray", "prod", "1.0.0")
        reader = admin.create_api_key("reader", [("med", "consumer")])
        with hub.client(reader["token"]) as as_reader, contextlib.suppress(bastion.BastionError):
            as_reader.rotate_kek()  # denied
        with httpx.Client(base_url=hub.url) as anonymous:
            anonymous.post("/api/v1/namespaces", json={"name": "x", "trust_policy": ""})  # denied
        admin.yank("med/xray@1.0.0", "CVE-2026-0001")
        while len(hub.services.audit_reader.entries(limit=10_000)) < 41:
            made = admin.create_api_key("ci", [("med", "publisher")], expires_in_days=1)
            admin.revoke_api_key(made["id"])


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    root = tmp_path_factory.mktemp("audit-log")
    with running_hub(root / "hub") as hub:
        _build_log(hub, root)
        token = hub.admin_token
        entries = len(hub.services.audit_reader.entries(limit=10_000))
    return Pristine(root / "hub", token, entries)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pristine: Pristine) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("BASTION_TOKEN", pristine.token)
    for name in ("BASTION_URL", "BASTION_CA"):
        monkeypatch.delenv(name, raising=False)


def run_cli(*argv: str | os.PathLike[str]) -> tuple[int, Any, str]:
    """``bastion ... --json``: the exit code, the one JSON document on stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*(os.fspath(a) for a in argv), "--json"])
    return code, json.loads(out.getvalue()), err.getvalue()


def verify_hub(url: str, *extra: str) -> tuple[int, Any]:
    code, doc, _ = run_cli("audit", "verify", "--url", url, *extra)
    return code, doc


def problems(doc: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(p["kind"], p["seq"]) for p in doc["problems"]]


# tampering with the database ---------------------------------------------------------------


@contextlib.contextmanager
def database(data_dir: Path) -> Iterator[sqlite3.Connection]:
    with contextlib.closing(sqlite3.connect(data_dir / DB)) as db, db:
        yield db


def entry(db: sqlite3.Connection, seq: int) -> AuditEntry:
    (line,) = db.execute("SELECT line FROM audit_entries WHERE seq = ?", (seq,)).fetchone()
    return AuditEntry.from_json(line)


def store(db: sqlite3.Connection, seq: int, e: AuditEntry) -> None:
    db.execute(
        "UPDATE audit_entries SET line = ?, actor = ?, outcome = ?, prev_hash = ?, hash = ? "
        "WHERE seq = ?",
        (e.to_json(), e.actor, e.outcome, e.prev_hash, e.hash, seq),
    )


def modify_entry(db: sqlite3.Connection) -> None:
    """Say a denied request was allowed; the stored hash is left as it was."""
    store(db, 12, dataclasses.replace(entry(db, 12), outcome="allowed", actor="key:mallory"))


def reseal_head(db: sqlite3.Connection) -> None:
    """Make the chain's head agree with the stored entries, as a careful forger would."""
    tree = MerkleAccumulator()
    last = ""
    for (line,) in db.execute("SELECT line FROM audit_entries ORDER BY seq"):
        last = AuditEntry.from_json(line).hash
        tree.append(bytes.fromhex(last))
    (top,) = db.execute("SELECT max(seq) FROM audit_entries").fetchone()
    db.execute(
        "UPDATE audit_head SET seq = ?, hash = ?, accumulator = ? WHERE id = 1",
        (top, last, tree.to_json()),
    )


def rewrite_chain(db: sqlite3.Connection) -> None:
    """Change entry 12 and recompute every hash after it, and the head: the chain is intact."""
    last = db.execute("SELECT max(seq) FROM audit_entries").fetchone()[0]
    prev = entry(db, 11).hash
    for seq in range(12, last + 1):
        e = dataclasses.replace(entry(db, seq), prev_hash=prev)
        if seq == 12:
            e = dataclasses.replace(e, actor="key:mallory")
        e = dataclasses.replace(e, hash=e.compute_hash())
        store(db, seq, e)
        prev = e.hash
    reseal_head(db)


def delete_entry(db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM audit_entries WHERE seq = 17")


def insert_forged(db: sqlite3.Connection) -> None:
    """A forged, well-formed entry chained to entry 12, slipped in before entry 13."""
    after = entry(db, 12)
    forged = AuditEntry.seal(
        prev_hash=after.hash,
        seq=13,
        time=after.time + timedelta(milliseconds=1),
        actor="key:mallory",
        action="kek.rotate",
        resource="/api/v1/admin/kek/rotate",
        outcome="allowed",
        source="127.0.0.1",
        request_id="forged0000000000",
        details={"method": "POST", "status": 200},
    )
    db.execute("UPDATE audit_entries SET seq = -(seq + 1) WHERE seq > 12")
    db.execute("UPDATE audit_entries SET seq = -seq WHERE seq < 0")
    time = db.execute("SELECT time FROM audit_entries WHERE seq = 12").fetchone()[0]
    db.execute(
        "INSERT INTO audit_entries (seq, time, actor, action, resource, outcome, source, "
        "request_id, line, prev_hash, hash) VALUES (13, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            time,
            forged.actor,
            forged.action,
            forged.resource,
            forged.outcome,
            forged.source,
            forged.request_id,
            forged.to_json(),
            forged.prev_hash,
            forged.hash,
        ),
    )
    reseal_head(db)


def swap_entries(db: sqlite3.Connection) -> None:
    first, second = entry(db, 20), entry(db, 21)
    store(db, 20, second)
    store(db, 21, first)


def truncate_tail(db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM audit_entries WHERE seq > 30")


def forge_checkpoint(db: sqlite3.Connection) -> None:
    (body,) = db.execute("SELECT body FROM audit_checkpoints WHERE size = 10").fetchone()
    doc = json.loads(body)
    doc["root"] = "ab" * 32
    db.execute(
        "UPDATE audit_checkpoints SET body = ? WHERE size = 10",
        (json.dumps(doc, separators=(",", ":"), sort_keys=True),),
    )


#: case -> (tampering, the kind of problem, the seqs it may name). A swap of 20 and 21
#: may be named at either; a rewritten chain from the entry after the last checkpoint
#: that still matches (10).
CASES: dict[str, tuple[Callable[[sqlite3.Connection], None], str, tuple[int, ...]]] = {
    "modified entry": (modify_entry, "modified", (12,)),
    "rewritten chain": (rewrite_chain, "modified", (11,)),
    "deleted entry": (delete_entry, "deleted", (17,)),
    "inserted entry": (insert_forged, "inserted", (13,)),
    "swapped entries": (swap_entries, "reordered", (20, 21)),
    "truncated tail": (truncate_tail, "deleted", (31,)),
    "forged checkpoint": (forge_checkpoint, "bad_signature", (10,)),
}


@pytest.fixture
def copy(pristine: Pristine, tmp_path: Path) -> Path:
    target = tmp_path / "hub"
    shutil.copytree(pristine.data_dir, target)
    return target


@pytest.mark.usefixtures("env")
def test_an_untouched_log_verifies(copy: Path, pristine: Pristine) -> None:
    with running_hub(copy) as hub:
        code, doc = verify_hub(hub.url, "--no-witness")
    assert code == 0, doc
    assert doc["ok"] is True
    assert doc["problems"] == []
    assert doc["entries"] >= pristine.entries
    assert doc["checkpoints_verified"] == doc["checkpoints"] >= pristine.entries // EVERY


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize("case", sorted(CASES))
def test_tampering_is_named(case: str, copy: Path) -> None:
    tamper, kind, seqs = CASES[case]
    with database(copy) as db:
        tamper(db)
    with running_hub(copy) as hub:
        code, doc = verify_hub(hub.url, "--no-witness")
    assert code == 1, doc
    assert doc["ok"] is False
    assert any((kind, seq) in problems(doc) for seq in seqs), problems(doc)
    assert doc["counts"][kind] >= 1


@pytest.mark.usefixtures("env")
def test_an_unreadable_entry_is_tampering(copy: Path) -> None:
    with database(copy) as db:
        db.execute("UPDATE audit_entries SET line = 'not json at all' WHERE seq = 12")
    with running_hub(copy) as hub:
        code, doc = verify_hub(hub.url, "--no-witness")
    assert code == 1
    assert doc["ok"] is False
    assert doc["error"]["code"] == "integrity_failed"
    assert "entry 12" in doc["error"]["message"]


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "lines"])
def test_an_unreadable_entry_stops_an_export(copy: Path, as_json: bool) -> None:
    with database(copy) as db:
        db.execute("UPDATE audit_entries SET line = 'not json at all' WHERE seq = 12")
    out, err = io.StringIO(), io.StringIO()
    with running_hub(copy) as hub, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["audit", "export", "--url", hub.url, *(["--json"] if as_json else [])])
    assert code == 1, err.getvalue()
    message = json.loads(out.getvalue())["error"]["message"] if as_json else err.getvalue()
    assert "audit entry 12 as stored by the hub cannot be read" in message
    assert "Traceback" not in err.getvalue()
    if not as_json:  # the lines before it were written as they are stored
        assert [json.loads(line)["seq"] for line in out.getvalue().splitlines()] == [*range(1, 12)]


def _set_seq_in_line(db: sqlite3.Connection, row: int, seq: int) -> None:
    """Change the seq written inside a stored line; the row and its stored hash stay."""
    (line,) = db.execute("SELECT line FROM audit_entries WHERE seq = ?", (row,)).fetchone()
    db.execute(
        "UPDATE audit_entries SET line = ? WHERE seq = ?",
        (json.dumps({**json.loads(line), "seq": seq}, separators=(",", ":"), sort_keys=True), row),
    )


@pytest.mark.usefixtures("env")
def test_pages_follow_the_rows_not_the_seqs_written_in_them(copy: Path) -> None:
    # Rows 10 and 11 (the end of the first page of 10 and the start of the next) claim seq 1:
    # a reader that paged by the claimed seq read rows 2..11 again and again.
    with database(copy) as db:
        _set_seq_in_line(db, 10, 1)
        _set_seq_in_line(db, 11, 1)
        stored = [line for (line,) in db.execute("SELECT line FROM audit_entries ORDER BY seq")]
    with running_hub(copy) as hub, hub.client() as client:
        key = load_audit_public_key(client.audit_key()["public_key"].encode())
        checkpoints = [SignedCheckpoint.from_json(c) for c in client.audit_checkpoints()]
        # each page asked for is audited: the log grows by one entry a page as it is read
        lines = list(itertools.islice(client.audit_lines(page=10), 2 * len(stored)))
    assert lines[: len(stored)] == stored
    assert len(stored) < len(lines) <= len(stored) + len(stored) // 10 + 1
    report = verify_log([AuditEntry.from_json(line) for line in lines], checkpoints, key)
    assert problems(report.to_dict()) == [("modified", 10), ("modified", 11)]


@pytest.mark.usefixtures("env")
def test_an_unreadable_checkpoint_of_the_head_is_tampering(copy: Path) -> None:
    with running_hub(copy) as hub:
        hub.services.audit_reader.checkpoint()  # the head is signed; verify will not re-sign it
    with database(copy) as db:
        db.execute(
            "UPDATE audit_checkpoints SET body = 'garbage' "
            "WHERE size = (SELECT seq FROM audit_head WHERE id = 1)"
        )
    with running_hub(copy) as hub:
        code, doc = verify_hub(hub.url, "--no-witness")
    assert code == 1, doc
    assert doc["error"]["code"] == "integrity_failed"
    assert "as stored by the hub cannot be read" in doc["error"]["message"]


@pytest.mark.usefixtures("env")
def test_a_restored_older_database_is_a_rollback(copy: Path, pristine: Pristine) -> None:
    with running_hub(copy) as hub:
        port = int(hub.url.rsplit(":", 1)[1])
        with hub.client(pristine.token) as admin:
            for _ in range(2 * EVERY):
                admin.create_api_key("later", [("med", "consumer")], expires_in_days=1)
        code, doc = verify_hub(hub.url)  # the client witnesses the newest checkpoint
        assert code == 0, doc
        witnessed = doc["entries"]
    assert witnessed > pristine.entries + 2 * EVERY - 1
    for suffix in ("", "-wal", "-shm"):  # put the older database file back
        (copy / f"{DB}{suffix}").unlink(missing_ok=True)
        older = pristine.data_dir / f"{DB}{suffix}"
        if older.exists():
            shutil.copy2(older, copy / f"{DB}{suffix}")
    with running_hub(copy, port=port) as hub:  # the same URL: the same witness
        code, doc = verify_hub(hub.url)
        assert code == 1, doc
        # The client's witness and the hub's own are the same checkpoint, which the older
        # log falls short of: its entries after the older head are gone.
        assert [kind for kind, _ in problems(doc)] == ["deleted"], problems(doc)
        assert all((seq or 0) > pristine.entries for _, seq in problems(doc))
        assert "see its log" in doc["hub_refusal"]  # it will not sign the older head
        # The older log is consistent in itself; the checkpoint the hub kept in its own
        # witness file, not in the database, still tells.
        code, alone = verify_hub(hub.url, "--no-witness")
        assert code == 1, alone
        assert [kind for kind, _ in problems(alone)] == ["deleted"], problems(alone)


@pytest.mark.usefixtures("env")
def test_a_rewritten_log_with_its_checkpoints_deleted_is_still_caught(copy: Path) -> None:
    with database(copy) as db:
        rewrite_chain(db)
        db.execute("DELETE FROM audit_checkpoints")
    with running_hub(copy) as hub:
        code, doc = verify_hub(hub.url, "--no-witness")
        assert code == 1, doc
        assert [kind for kind, _ in problems(doc)] == ["modified"]
        assert "see its log" in doc["hub_refusal"]  # it will not sign the rewritten head
        with hub.client() as admin, pytest.raises(bastion.IntegrityError):
            admin.audit_checkpoint()
    assert "audit-witness.json" in os.listdir(copy)


@pytest.mark.usefixtures("env")
def test_a_corrupt_or_foreign_witness_is_not_trusted(copy: Path) -> None:
    from bastion.cli.audit import _witness_path

    with running_hub(copy) as hub:
        code, doc = verify_hub(hub.url)
        assert code == 0, doc
        witness = _witness_path(hub.url)
        saved = json.loads(witness.read_text())
        witness.write_text(json.dumps({**saved, "key_id": "sha256:" + "0" * 64}))
        code, doc = verify_hub(hub.url)  # the hub's audit key is not the one witnessed
        assert code == 1
        assert doc["error"]["code"] == "integrity_failed"
        witness.write_bytes(b"\x00garbage")
        code, doc = verify_hub(hub.url)
        assert code == 2
        assert doc["error"]["code"] == "bad_input"
        assert "delete it" in doc["error"]["message"]
        code, doc = verify_hub(hub.url, "--no-witness")
        assert code == 0, doc


# exported files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    entries: bytes
    checkpoints: bytes
    public_key: bytes


@pytest.fixture(scope="module")
def exported(pristine: Pristine, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    root = tmp_path_factory.mktemp("export")
    shutil.copytree(pristine.data_dir, root / "hub")
    saved = {k: os.environ.get(k) for k in ("BASTION_TOKEN", "XDG_CONFIG_HOME")}
    os.environ.update(BASTION_TOKEN=pristine.token, XDG_CONFIG_HOME=str(root / "config"))
    try:
        with running_hub(root / "hub") as hub:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(
                    ["audit", "export", "--url", hub.url, "--checkpoints-out", str(root / "cp")]
                )
            assert code == 0, err.getvalue()
            with hub.client(pristine.token) as admin:
                key = admin.audit_key()["public_key"].encode()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return Exported(out.getvalue().encode(), (root / "cp").read_bytes(), key)


def verify_files(
    folder: Path,
    exported: Exported,
    entries: bytes | None = None,
    key: bytes | None = None,
    *,
    checkpoints: bytes | None = None,
    witness: bytes | None = None,
) -> tuple[int, Any]:
    (folder / "entries.jsonl").write_bytes(exported.entries if entries is None else entries)
    (folder / "checkpoints.jsonl").write_bytes(
        exported.checkpoints if checkpoints is None else checkpoints
    )
    (folder / "audit.pub").write_bytes(exported.public_key if key is None else key)
    witnessed: list[object] = []
    if witness is not None:
        (folder / "witness.json").write_bytes(witness)
        witnessed = ["--witness", folder / "witness.json"]
    code, doc, _ = run_cli(
        "audit",
        "verify",
        "--entries",
        folder / "entries.jsonl",
        "--checkpoints",
        folder / "checkpoints.jsonl",
        "--public-key",
        folder / "audit.pub",
        *witnessed,
    )
    return code, doc


def test_an_export_cut_short_with_its_checkpoints_is_a_rollback_to_a_witness(
    exported: Exported, tmp_path: Path
) -> None:
    # Cut both files back to an earlier checkpoint: consistent, unless a checkpoint seen
    # before says the log was longer. The file mode had no way to give one.
    checkpoints = exported.checkpoints.splitlines()
    kept = json.loads(checkpoints[0])["size"]
    entries = b"".join(line + b"\n" for line in exported.entries.splitlines()[:kept])
    cut = checkpoints[0] + b"\n"
    code, doc = verify_files(tmp_path, exported, entries=entries, checkpoints=cut)
    assert code == 0, doc  # nothing in the files themselves shows the cut
    last = checkpoints[-1]
    for witness in (last, json.dumps({"key_id": None, "checkpoint": last.decode()}).encode()):
        code, doc = verify_files(
            tmp_path, exported, entries=entries, checkpoints=cut, witness=witness
        )
        assert code == 1, doc
        assert "rolled_back" in {kind for kind, _ in problems(doc)}
    code, doc = verify_files(tmp_path, exported, witness=checkpoints[0])
    assert code == 0, doc  # the whole export extends an earlier checkpoint
    code, doc = verify_files(tmp_path, exported, witness=b"not a checkpoint")
    assert code == 2
    assert "neither a witness file" in doc["error"]["message"]


def test_exported_files_verify(exported: Exported, tmp_path: Path, pristine: Pristine) -> None:
    lines = exported.entries.splitlines()
    assert len(lines) >= pristine.entries
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, len(lines) + 1))
    assert len(exported.checkpoints.splitlines()) >= pristine.entries // EVERY
    code, doc = verify_files(tmp_path, exported)
    assert code == 0, doc
    assert doc["checkpoints_verified"] == doc["checkpoints"] >= 1
    assert doc["entries"] == len(lines)


def _edit(exported: Exported, change: Callable[[list[bytes]], list[bytes]]) -> bytes:
    return b"".join(line + b"\n" for line in change(exported.entries.splitlines()))


def _flip_outcome(lines: list[bytes]) -> list[bytes]:
    doc = json.loads(lines[11])
    doc["outcome"] = "denied" if doc["outcome"] == "allowed" else "allowed"
    lines[11] = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    return lines


FILE_CASES: dict[str, tuple[Callable[[list[bytes]], list[bytes]], str, tuple[int, ...]]] = {
    "modified line": (_flip_outcome, "modified", (12,)),
    "deleted line": (lambda lines: lines[:16] + lines[17:], "deleted", (17,)),
    "swapped lines": (
        lambda lines: [*lines[:19], lines[20], lines[19], *lines[21:]],
        "reordered",
        (20, 21),
    ),
    "cut tail": (lambda lines: lines[:30], "deleted", (31,)),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_tampered_exports_are_named(case: str, exported: Exported, tmp_path: Path) -> None:
    change, kind, seqs = FILE_CASES[case]
    code, doc = verify_files(tmp_path, exported, entries=_edit(exported, change))
    assert code == 1, doc
    assert any((kind, seq) in problems(doc) for seq in seqs), problems(doc)


def test_exports_checked_with_another_key_fail(exported: Exported, tmp_path: Path) -> None:
    other = public_key_pem(create_audit_key(tmp_path / "other-audit.pem"))
    code, doc = verify_files(tmp_path, exported, key=other)
    assert code == 1
    assert {kind for kind, _ in problems(doc)} == {"bad_signature"}


def test_exported_files_go_together(exported: Exported, tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_bytes(exported.entries)
    code, doc, err = run_cli("audit", "verify", "--entries", tmp_path / "e.jsonl")
    assert code == 2
    assert doc["error"]["code"] == "usage"
    assert "--checkpoints" in err
    code, doc, _ = run_cli(
        "audit",
        "verify",
        "--entries",
        tmp_path / "missing.jsonl",
        "--checkpoints",
        tmp_path / "e.jsonl",
        "--public-key",
        tmp_path / "e.jsonl",
    )
    assert code == 2
    assert doc["error"]["code"] in ("path_not_found", "bad_input", "key_invalid")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_exports_never_crash(exported: Exported, data: st.DataObject) -> None:
    """Random byte edits: a clean report or a clean error, never a crash or a false pass."""
    original = exported.entries
    edits = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(original) - 1), st.integers(0, 255)),
            min_size=1,
            max_size=4,
        )
    )
    mutated = bytearray(original)
    for at, value in edits:
        mutated[at] = value
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(original))))
    if cut is not None:
        mutated = mutated[:cut]
    with tempfile.TemporaryDirectory() as folder:
        code, doc = verify_files(Path(folder), exported, entries=bytes(mutated))
    assert code in (0, 1, 2), doc
    if code == 0:  # only an edit that leaves every entry as it was may pass
        assert [json.loads(x) for x in bytes(mutated).splitlines()] == [
            json.loads(x) for x in original.splitlines()
        ]
    elif code == 2:
        assert doc["error"]["code"] in ("bad_input",)
    else:
        assert doc["problems"]
