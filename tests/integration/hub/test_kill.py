"""The hub process is killed (SIGKILL) in the middle of an upload, then restarted.

Nothing half-written may survive: after the restart the version is not listed and
can be pushed again, the blob store's ``partial/`` is empty (and a ``staging/``
folder an earlier version left is gone), the database holds no row of the
interrupted version, and the audit log still verifies.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

import bastion
from bastion.cli import main
from tests.integration.hub.conftest import ServeProcess, serve_process, write_safe_model

#: 2048 x 2048 float32: a 16 MiB weights file, enough to be caught in mid-stream.
SIDE = 2048
SENT_BEFORE_KILL = 6 << 20  # more than the server buffers before it writes (4 MiB)


def _rows(data_dir: Path, version: str) -> tuple[list[tuple[str, str]], int]:
    """The (version, state) rows of ``version`` and how many file rows they own."""
    with contextlib.closing(sqlite3.connect(data_dir / "hub.sqlite")) as db:
        versions = db.execute(
            "SELECT version, state FROM versions WHERE version = ?", (version,)
        ).fetchall()
        (files,) = db.execute(
            "SELECT count(*) FROM files WHERE version_id IN "
            "(SELECT id FROM versions WHERE version = ?)",
            (version,),
        ).fetchone()
    return versions, files


def _wait_for_partial_blob(partial: Path, server: ServeProcess) -> None:
    """Until the server has written part of the upload to disk (encrypted, under partial/)."""
    deadline = time.monotonic() + 30
    while not any(p.stat().st_size > 0 for p in partial.iterdir()):
        assert server.running(), server.output()
        if time.monotonic() > deadline:
            pytest.fail("the server never wrote any of the upload to partial/")
        time.sleep(0.02)


def _open_upload(server: ServeProcess, model: Path, version: str) -> tuple[str, dict[str, int]]:
    files = {
        p.relative_to(model).as_posix(): p.stat().st_size
        for p in sorted(model.rglob("*"))
        if p.is_file() and p.name != "model.sig"
    }
    response = httpx.post(
        f"{server.url}/api/v1/models/med/big/versions",
        headers={"authorization": f"Bearer {server.token}"},
        json={
            "version": version,
            "signature": base64.b64encode((model / "model.sig").read_bytes()).decode(),
            "files": files,
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["upload_id"]), files


def _send_part(server: ServeProcess, upload_id: str, path: Path, size: int) -> socket.socket:
    """Start a PUT of ``path`` declaring all its bytes, and send only the first part."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (
        f"PUT /api/v1/uploads/{upload_id}/files/{path.name} HTTP/1.1\r\n"
        f"host: 127.0.0.1:{server.port}\r\n"
        f"authorization: Bearer {server.token}\r\n"
        "content-type: application/octet-stream\r\n"
        f"content-length: {size}\r\n\r\n"
    )
    sock.sendall(head.encode())
    with path.open("rb") as f:
        sent = 0
        while sent < SENT_BEFORE_KILL:
            chunk = f.read(1 << 20)
            sock.sendall(chunk)
            sent += len(chunk)
    return sock


def test_a_killed_upload_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, token_file = tmp_path / "hub", tmp_path / "admin.token"
    key = bastion.generate_key("ed25519")
    model = write_safe_model(tmp_path / "big", size=SIDE)
    weights = model / "model.safetensors"
    assert weights.stat().st_size > 2 * SENT_BEFORE_KILL
    bastion.sign(model, key)

    with serve_process(data, token_file, insecure_http=True) as server:
        with bastion.Client(server.url, token=server.token) as admin:
            admin.create_namespace("med", bastion.TrustPolicy.for_keys([key.public_key]))
        upload_id, files = _open_upload(server, model, "1.0.0")
        sock = _send_part(server, upload_id, weights, files[weights.name])
        try:
            _wait_for_partial_blob(data / "store" / "partial", server)
            assert _rows(data, "1.0.0") == ([("1.0.0", "uploading")], len(files))
            server.kill()
        finally:
            sock.close()
        assert server.process.returncode == -9
    # what the kill left: a partial blob, an open upload; and, as an earlier version of
    # the hub could leave it, a staging folder holding a scan's plaintext
    assert any((data / "store" / "partial").iterdir())
    (data / "staging" / "killed-scan").mkdir(parents=True)
    (data / "staging" / "killed-scan" / "model.safetensors").write_bytes(b"plaintext")

    with serve_process(data, token_file, insecure_http=True) as server:
        assert "interrupted" in server.output()  # the operator is told what was dropped
        assert list((data / "store" / "partial").iterdir()) == []
        assert not (data / "staging").exists()
        assert _rows(data, "1.0.0") == ([], 0)
        with bastion.Client(server.url, token=server.token) as admin:
            with contextlib.suppress(bastion.NotFoundError):
                assert admin.versions("med/big") == []
            with pytest.raises(bastion.NotFoundError):
                admin.show("med/big@1.0.0")
            pushed = admin.push(model, "med/big@1.0.0")
            assert pushed["state"] == "published"
            admin.pull("med/big@1.0.0", tmp_path / "pulled")
        assert (tmp_path / "pulled" / weights.name).read_bytes() == weights.read_bytes()
        assert _rows(data, "1.0.0") == ([("1.0.0", "published")], len(files))
        blobs = [p for p in (data / "store" / "blobs").rglob("*") if p.is_file()]
        assert len(blobs) == len(files)  # no orphan of the killed upload

        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
        monkeypatch.setenv("BASTION_TOKEN", server.token)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["audit", "verify", "--url", server.url, "--json"])
        assert code == 0, err.getvalue()
        report = json.loads(out.getvalue())
        assert report["ok"] is True
        assert report["problems"] == []
