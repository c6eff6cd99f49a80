"""Storage through the real hub: encryption at rest, tampering, key rotation, a full disk.

Blobs are encrypted with a data key per file, wrapped by the keyring's current
key-encryption key; rotation re-wraps those keys without touching a blob. A
damaged blob fails the pull with nothing left behind, and a full disk answers
HTTP 507 and keeps nothing partial.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest
from sqlalchemy import select

import bastion
from bastion.client import Client
from bastion.crypto import DEFAULT_SEGMENT_SIZE, LocalKeyring, WrappedKey
from bastion.crypto._segments import HEADER_SIZE, TAG_SIZE
from bastion.db import FileRow
from bastion.registry import LocalBlobStore
from tests.integration.hub.conftest import (
    RunningHub,
    SignedModel,
    assert_problem,
    bearer,
    open_upload,
    sign_beside,
    upload_all,
    write_safe_model,
)

MARKER = b"BASTION-PLAINTEXT-MARKER-5f1c9e"


def _stored_files(hub: RunningHub) -> dict[str, tuple[str, str]]:
    """path -> (blob id, wrapped key) for every stored file."""
    with hub.services.hub.db.session() as s:
        return {
            f"{row.version_id}:{row.path}": (row.blob_id, row.wrapped_key or "")
            for row in s.scalars(select(FileRow))
        }


def _stored_blob(hub: RunningHub, name: str) -> Path:
    """The blob file holding the one stored file called ``name``."""
    [(blob_id, _)] = [v for k, v in _stored_files(hub).items() if k.endswith(f":{name}")]
    return hub.data_dir / "store" / "blobs" / blob_id[:2] / blob_id


def _drain(response: httpx.Response, into: bytearray) -> None:
    for chunk in response.iter_bytes():
        into += chunk


def _blob_digests(hub: RunningHub) -> dict[str, str]:
    root = hub.data_dir / "store"
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_nothing_on_disk_holds_plaintext(
    hub: RunningHub, admin: Client, med: str, signing_key: bastion.PrivateKey, tmp_path: Path
) -> None:
    model = write_safe_model(tmp_path / "model")
    (model / "notes.txt").write_bytes(MARKER * 50)
    weights = (model / "model.safetensors").read_bytes()
    admin.push(model, "med/xray@1.0.0", key=signing_key)
    # Admission scans the stored blobs in place: not even a quarantined version's
    # bytes are decrypted to disk for it.
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "notes.txt").write_bytes(MARKER * 50)
    (evil / "model.pkl").write_bytes(
        b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00true\x85R." + MARKER
    )
    with pytest.raises(bastion.QuarantinedError):
        admin.push(evil, "med/evil@1.0.0", key=signing_key)

    assert not (hub.data_dir / "staging").exists()
    on_disk = [p for p in hub.data_dir.rglob("*") if p.is_file()]
    blobs = [p for p in on_disk if "blobs" in p.parts]
    assert len(blobs) == 6  # every file of both versions is stored, encrypted
    for path in on_disk:
        data = path.read_bytes()
        assert MARKER not in data, path
        assert weights[1000:1064] not in data, path
    for path in blobs:
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_secrets_on_disk_are_private(hub: RunningHub) -> None:
    for name in ("keyring.json", "audit-key.pem"):
        assert (hub.data_dir / name).stat().st_mode & 0o777 == 0o600, name


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_blob_fails_the_pull_and_leaves_nothing(
    hub: RunningHub,
    admin: Client,
    http: httpx.Client,
    med: str,
    safe_model: Path,
    signing_key: bastion.PrivateKey,
    tmp_path: Path,
    damage: str,
) -> None:
    admin.push(safe_model, "med/xray@1.0.0", key=signing_key)
    blob = _stored_blob(hub, "config.json")
    data = bytearray(blob.read_bytes())
    if damage == "flip":
        data[-20] ^= 0x01  # inside the last segment's ciphertext
    else:
        del data[-7:]
    blob.write_bytes(bytes(data))

    dest = tmp_path / "pulled"
    with pytest.raises(bastion.IntegrityError):
        admin.pull("med/xray@1.0.0", dest)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub-data", "model"]

    # Not one byte of the damaged (single) segment is released to a raw request either.
    response = http.get("/api/v1/models/med/xray/versions/1.0.0/files/config.json")
    body = assert_problem(response, 500, "integrity_failed")
    assert "mlp" not in response.text
    assert body["detail"] == "the hub failed; see its log"
    # The undamaged files of the version still come out right.
    good = http.get("/api/v1/models/med/xray/versions/1.0.0/files/model.safetensors")
    assert good.content == (safe_model / "model.safetensors").read_bytes()


def test_a_damaged_later_segment_is_never_released(
    hub: RunningHub,
    admin: Client,
    http: httpx.Client,
    med: str,
    signing_key: bastion.PrivateKey,
    tmp_path: Path,
) -> None:
    model = write_safe_model(tmp_path / "model", size=600)  # 1.4 MB: two 1 MiB segments
    weights = (model / "model.safetensors").read_bytes()
    segment = hub.services.hub.limits.segment_size
    assert segment < len(weights) < 2 * segment
    admin.push(model, "med/xray@1.0.0", key=signing_key)
    blob = _stored_blob(hub, "model.safetensors")
    data = bytearray(blob.read_bytes())
    data[-30] ^= 0x80
    blob.write_bytes(bytes(data))

    dest = tmp_path / "pulled"
    with pytest.raises(bastion.BastionError):
        admin.pull("med/xray@1.0.0", dest)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub-data", "model"]

    received = bytearray()
    url = "/api/v1/models/med/xray/versions/1.0.0/files/model.safetensors"
    with http.stream("GET", url) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.HTTPError):
            _drain(response, received)
    assert received == weights[:segment]  # the intact first segment, nothing after it


def test_rotation_rewraps_every_data_key_and_no_blob(
    hub: RunningHub, admin: Client, med: str, signing_key: bastion.PrivateKey, tmp_path: Path
) -> None:
    admin.push(write_safe_model(tmp_path / "a", seed=1), "med/xray@1.0.0", key=signing_key)
    admin.push(write_safe_model(tmp_path / "b", seed=2), "med/xray@2.0.0", key=signing_key)
    before = _stored_files(hub)
    blobs_before = _blob_digests(hub)
    old_kek = hub.services.hub.keys.current_key_id
    assert {WrappedKey.from_text(w).kek_id for _, w in before.values()} == {old_kek}

    rotated = admin.rotate_kek()
    assert rotated["previous_kek"] == old_kek
    new_kek = rotated["current_kek"]
    assert new_kek != old_kek
    assert rotated["rewrapped"] == len(before) == 6

    after = _stored_files(hub)
    assert {k: b for k, (b, _) in after.items()} == {k: b for k, (b, _) in before.items()}
    assert {WrappedKey.from_text(w).kek_id for _, w in after.values()} == {new_kek}
    assert all(after[k][1] != before[k][1] for k in before)
    assert _blob_digests(hub) == blobs_before  # not one blob re-encrypted
    assert (hub.data_dir / "keyring.json").stat().st_mode & 0o777 == 0o600

    for version, seed in (("1.0.0", 1), ("2.0.0", 2)):
        dest = tmp_path / f"pulled-{version}"
        admin.pull(f"med/xray@{version}", dest)
        source = tmp_path / ("a" if seed == 1 else "b")
        assert (dest / "model.safetensors").read_bytes() == (
            source / "model.safetensors"
        ).read_bytes()

    # New pushes use the new key; rotating again re-wraps everything once more.
    admin.push(write_safe_model(tmp_path / "c", seed=3), "med/xray@3.0.0", key=signing_key)
    assert {WrappedKey.from_text(w).kek_id for _, w in _stored_files(hub).values()} == {new_kek}
    again = admin.rotate_kek()
    assert again["previous_kek"] == new_kek
    assert again["rewrapped"] == 9
    admin.pull("med/xray@1.0.0", tmp_path / "pulled-again")


# A full disk ------------------------------------------------------------------------------------

_ROOM = 2 << 20


class _CappedFile:
    """A blob file on a disk with ``_ROOM`` bytes in all: writes past it fail with ENOSPC."""

    def __init__(self, inner: BinaryIO, root: Path) -> None:
        self._inner = inner
        self._root = root

    def write(self, data: Any) -> int:
        used = sum(p.stat().st_size for p in self._root.rglob("*") if p.is_file())
        if used + len(data) > _ROOM:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _FullDiskStore(LocalBlobStore):
    """Stands in for a small file system where ``mount -t tmpfs`` is not permitted."""

    def writer(self, blob_id: str) -> Any:
        writer = super().writer(blob_id)
        writer._file = _CappedFile(writer._file, self.root)  # type: ignore[assignment]
        return writer


def _mount_tmpfs(where: Path) -> bool:
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={_ROOM},mode=0700", "tmpfs", str(where)],
            capture_output=True,
            check=False,
        )
    except OSError:
        return False
    return done.returncode == 0


@pytest.fixture
def small_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A data folder whose blob store sits on a real 2 MiB tmpfs.

    Where mounting is not permitted (no root, no mount namespace), the hub gets a
    LocalBlobStore subclass whose files fail with OSError(ENOSPC) past 2 MiB instead.
    """
    data_dir = tmp_path / "small-hub"
    store = data_dir / "store"
    store.mkdir(parents=True)
    mounted = _mount_tmpfs(store)
    if not mounted:
        monkeypatch.setattr("bastion.api._server.LocalBlobStore", _FullDiskStore)
    yield data_dir
    if mounted:
        subprocess.run(["umount", "-l", str(store)], capture_output=True, check=False)


@pytest.fixture
def full_disk_hub(small_store: Path, hub_with: Callable[..., RunningHub]) -> RunningHub:
    return hub_with(data_dir=small_store)


def test_a_full_disk_answers_507_and_keeps_nothing(
    full_disk_hub: RunningHub, signing_key: bastion.PrivateKey, tmp_path: Path
) -> None:
    hub = full_disk_hub
    big = write_safe_model(tmp_path / "big", size=1024)  # 4 MiB of weights, 2 MiB of disk
    with hub.client() as admin:
        admin.create_namespace("med", bastion.TrustPolicy.for_keys([signing_key.public_key]))
        with pytest.raises(bastion.StorageFullError, match="disk space"):
            admin.push(big, "med/xray@1.0.0", key=signing_key)
        with pytest.raises(bastion.NotFoundError):
            admin.show("med/xray@1.0.0")
        left = [p for p in (hub.data_dir / "store").rglob("*") if p.is_file()]
        assert left == []

        # The space is free again: a model that fits is published.
        small = write_safe_model(tmp_path / "small", seed=1)
        assert admin.push(small, "med/xray@1.0.0", key=signing_key)["state"] == "published"
        admin.pull("med/xray@1.0.0", tmp_path / "pulled")

    with httpx.Client(
        base_url=hub.url, headers={"authorization": f"Bearer {hub.admin_token}"}
    ) as h:
        lines = h.get("/api/v1/audit/entries").text.splitlines()
    assert any('"storage_full"' in line and '"upload.file"' in line for line in lines)


@pytest.mark.parametrize("where", ["first", "last"])
def test_a_blob_damaged_before_its_commit_quarantines_the_version(
    hub: RunningHub,
    admin: Client,
    http: httpx.Client,
    med: str,
    signing_key: bastion.PrivateKey,
    tmp_path: Path,
    where: str,
) -> None:
    """The scan reads the stored bytes; one that fails authentication there is a reason
    to quarantine, whatever the scan threshold: a scan of damaged bytes proves nothing."""
    signed = sign_beside(write_safe_model(tmp_path / "model", size=600), signing_key)
    upload = open_upload(http, "med/xray", "1.0.0", signed)
    upload_all(http, upload, signed)
    blob = _stored_blob(hub, "model.safetensors")
    data = bytearray(blob.read_bytes())
    data[100 if where == "first" else -30] ^= 0x01  # the safetensors header, or the last segment
    blob.write_bytes(bytes(data))

    response = http.post(f"/api/v1/uploads/{upload}/commit")
    assert_problem(response, 422, "version_quarantined")
    shown = admin.show("med/xray@1.0.0")
    assert shown["state"] == "quarantined"
    assert any(
        r.startswith("storage: 'model.safetensors' cannot be read back") for r in shown["reasons"]
    ), shown["reasons"]


class _FailingSyncStore(LocalBlobStore):
    """A store whose disk reports a write error when a commit waits for it, once."""

    failures = 1

    def sync(self, blob_ids: Any) -> None:
        if type(self).failures:
            type(self).failures -= 1
            raise bastion.StorageFullError(
                "the hub's blob store is out of disk space; nothing was kept"
            )
        super().sync(blob_ids)


def test_a_commit_whose_blobs_cannot_reach_the_disk_keeps_nothing(
    tmp_path: Path,
    hub_with: Callable[..., RunningHub],
    monkeypatch: pytest.MonkeyPatch,
    signing_key: bastion.PrivateKey,
) -> None:
    """Files are written without waiting for the disk as they arrive; the commit waits.
    When that fails, the data may already be lost, so the upload is dropped, not retried."""
    monkeypatch.setattr(_FailingSyncStore, "failures", 1)
    monkeypatch.setattr("bastion.api._server.LocalBlobStore", _FailingSyncStore)
    hub = hub_with()
    model = write_safe_model(tmp_path / "model")
    with hub.client() as admin:
        admin.create_namespace("med", bastion.TrustPolicy.for_keys([signing_key.public_key]))
        with pytest.raises(bastion.StorageFullError, match="disk space"):
            admin.push(model, "med/xray@1.0.0", key=signing_key)
        with pytest.raises(bastion.NotFoundError):
            admin.show("med/xray@1.0.0")
        assert [p for p in (hub.data_dir / "store").rglob("*") if p.is_file()] == []
        # Nothing is stuck half-committed: the same version can be pushed again.
        assert admin.push(model, "med/xray@1.0.0", key=signing_key)["state"] == "published"
        admin.pull("med/xray@1.0.0", tmp_path / "pulled")


@contextlib.contextmanager
def _clients(hub: RunningHub) -> Iterator[tuple[Client, httpx.Client]]:
    """The SDK and a plain HTTP client, both holding the admin key."""
    headers = bearer(hub.admin_token)
    with hub.client() as admin, httpx.Client(base_url=hub.url, headers=headers) as http:
        yield admin, http


def _uploaded(
    admin: Client, http: httpx.Client, signed: SignedModel, key: bastion.PrivateKey
) -> str:
    """An upload of ``signed`` as med/xray@1.0.0 with every file in, not committed yet."""
    admin.create_namespace("med", bastion.TrustPolicy.for_keys([key.public_key]))
    upload = open_upload(http, "med/xray", "1.0.0", signed)
    upload_all(http, upload, signed)
    return upload


class _KeyServiceDown(LocalKeyring):
    """A keyring that cannot unwrap, as an external key service that is down fails."""

    failures = 0

    def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes:
        if type(self).failures:
            type(self).failures -= 1
            raise bastion.KeyringError(f"key service {SECRET_HOST} did not answer")
        return super().unwrap(wrapped, context=context)


SECRET_HOST = "kms.internal.example:7443"


def test_a_commit_whose_keys_cannot_be_unwrapped_quarantines_nothing(
    tmp_path: Path,
    hub_with: Callable[..., RunningHub],
    monkeypatch: pytest.MonkeyPatch,
    signing_key: bastion.PrivateKey,
) -> None:
    """Quarantine is final, so only damage earns it: a key store that fails for now is
    answered 503, the upload is kept for another commit, and nothing of the failure's
    detail reaches the caller."""
    monkeypatch.setattr("bastion.api._server.LocalKeyring", _KeyServiceDown)
    hub = hub_with()
    signed = sign_beside(write_safe_model(tmp_path / "model"), signing_key)
    with _clients(hub) as (admin, http):
        upload = _uploaded(admin, http, signed, signing_key)
        monkeypatch.setattr(_KeyServiceDown, "failures", 1)
        response = http.post(f"/api/v1/uploads/{upload}/commit")
        assert_problem(response, 503, "hub_unavailable")
        assert SECRET_HOST not in response.text
        assert "keyring" not in response.text
        assert http.post(f"/api/v1/uploads/{upload}/commit").json()["state"] == "published"

        # Through the SDK: the push fails, drops its upload, and the same push then works.
        model = write_safe_model(tmp_path / "second", seed=1)
        monkeypatch.setattr(_KeyServiceDown, "failures", 1)
        with pytest.raises(bastion.HubUnavailableError, match="push again"):
            admin.push(model, "med/xray@2.0.0", key=signing_key)
        with pytest.raises(bastion.NotFoundError):
            admin.show("med/xray@2.0.0")
        assert admin.push(model, "med/xray@2.0.0", key=signing_key)["state"] == "published"
        admin.pull("med/xray@2.0.0", tmp_path / "pulled")


class _FlakyDisk(LocalBlobStore):
    """A store whose disk fails reads of the first of several segments while ``armed``."""

    armed = False

    def open(self, blob_id: str) -> BinaryIO:
        return _FlakyFile(super().open(blob_id))  # type: ignore[return-value]


class _FlakyFile:
    _FIRST = range(HEADER_SIZE, HEADER_SIZE + DEFAULT_SEGMENT_SIZE + TAG_SIZE)

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        # A blob of one segment is read whole when it is opened; only later reads matter.
        self._several = os.fstat(inner.fileno()).st_size > self._FIRST.stop

    def read(self, size: int = -1) -> bytes:
        if _FlakyDisk.armed and self._several and self._inner.tell() in self._FIRST:
            raise OSError(errno.EIO, "Input/output error")
        return self._inner.read(size)

    def __enter__(self) -> _FlakyFile:
        return self

    def __exit__(self, *_: object) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_commit_whose_disk_fails_a_read_during_the_scan_quarantines_nothing(
    tmp_path: Path,
    hub_with: Callable[..., RunningHub],
    monkeypatch: pytest.MonkeyPatch,
    signing_key: bastion.PrivateKey,
) -> None:
    """The scanner counts a file it could not read as not scanned; the hub must not judge a
    version by that when the disk failed for a moment, so the commit is answered 503."""
    monkeypatch.setattr("bastion.api._server.LocalBlobStore", _FlakyDisk)
    monkeypatch.setattr(_FlakyDisk, "armed", False)
    hub = hub_with()
    # Two segments: the last is read when the blob is opened, the first by the scan.
    signed = sign_beside(write_safe_model(tmp_path / "model", size=600), signing_key)
    with _clients(hub) as (admin, http):
        upload = _uploaded(admin, http, signed, signing_key)
        monkeypatch.setattr(_FlakyDisk, "armed", True)
        response = http.post(f"/api/v1/uploads/{upload}/commit")
        assert_problem(response, 503, "hub_unavailable")
        assert "Input/output" not in response.text
        monkeypatch.setattr(_FlakyDisk, "armed", False)
        assert http.post(f"/api/v1/uploads/{upload}/commit").json()["state"] == "published"
        admin.pull("med/xray@1.0.0", tmp_path / "pulled")
    assert (tmp_path / "pulled" / "model.safetensors").read_bytes() == (
        signed.folder / "model.safetensors"
    ).read_bytes()


def test_the_hub_signs_checkpoints_on_its_own_when_entries_are_added(
    hub_with: Callable[..., RunningHub],
) -> None:
    running = hub_with(checkpoint_seconds=0.2, checkpoint_every=1000)
    with running.client() as client:
        client.namespaces()  # a read: not audited
        client.create_api_key("ci", [("*", "consumer")])  # audited: one more entry
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            lines = client.audit_checkpoints()
            if lines and json.loads(lines[-1])["size"] >= 2:
                break
            time.sleep(0.1)
        sizes = [json.loads(line)["size"] for line in client.audit_checkpoints()]
    assert max(sizes, default=0) >= 2  # bootstrap + the key, signed without being asked
    assert sizes == sorted(set(sizes))  # a quiet log is not signed again and again
