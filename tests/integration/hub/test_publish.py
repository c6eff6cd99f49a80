"""Publishing through the real hub: push, the catalogue, immutability, and admission.

A version is admitted only if its uploaded bytes match the signed manifest, the
signature comes from a key the namespace trusts, and the stored bytes scan clean.
Anything else is quarantined with its reasons, shown, never served, and can
never be pushed again under the same version.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Literal

import httpx
import pytest

import bastion
from bastion.client import Client
from tests.integration.hub.conftest import (
    RunningHub,
    assert_problem,
    open_upload,
    put_file,
    sign_beside,
    start_hub,
    upload_all,
    write_safe_model,
)


class _RunsACommand:
    """Pickles to ``os.system("true")``: what a malicious checkpoint does, with an inert payload.

    The file is only ever scanned; nothing here or in the hub loads it.
    """

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


def _malicious_model(folder: Path) -> Path:
    folder.mkdir()
    (folder / "model.pkl").write_bytes(pickle.dumps(_RunsACommand(), protocol=2))
    (folder / "config.json").write_text('{"architecture": "mlp"}')
    return folder


def test_push_publishes_and_the_catalogue_shows_it(
    admin: Client, med: str, safe_model: Path, signing_key: bastion.PrivateKey, tmp_path: Path
) -> None:
    pushed = admin.push(safe_model, "med/xray@1.0.0", key=signing_key)
    assert pushed["state"] == "published"
    assert pushed["reasons"] == []
    assert pushed["files"] == 3
    newer = write_safe_model(tmp_path / "newer", seed=1)
    admin.push(newer, "med/xray@1.1.0", key=signing_key)
    admin.set_alias("med/xray", "prod", "1.0.0")

    [model] = admin.models()
    assert model["name"] == "med/xray"
    assert model["versions"] == 2
    assert model["latest"] == "1.1.0"

    listed = {v["version"]: v for v in admin.versions("med/xray")}
    assert set(listed) == {"1.0.0", "1.1.0"}
    assert listed["1.0.0"]["aliases"] == ["prod"]
    assert listed["1.1.0"]["aliases"] == []
    assert {v["state"] for v in listed.values()} == {"published"}

    shown = admin.show("med/xray@1.0.0")
    assert shown["state"] == "published"
    assert shown["yanked"] is False
    assert shown["aliases"] == ["prod"]
    assert [(f["path"], f["size"]) for f in shown["files"]] == [
        ("config.json", (safe_model / "config.json").stat().st_size),
        ("model.safetensors", (safe_model / "model.safetensors").stat().st_size),
        ("sub/README.md", (safe_model / "sub" / "README.md").stat().st_size),
    ]
    [signer] = shown["signers"]
    assert signer["key_fingerprint"] == signing_key.public_key.fingerprint
    assert signer["algorithm"] == "ed25519"
    assert shown["scan"]["findings"] == []
    scanned = {s["path"]: s["format"] for s in shown["scan"]["scanned"]}
    assert scanned["model.safetensors"] == "safetensors"
    assert set(scanned) == {"config.json", "model.safetensors", "sub/README.md"}
    assert shown["root_digest"].startswith("sha256:")
    assert admin.show("med/xray:prod")["version"] == "1.0.0"


def test_a_version_cannot_be_pushed_twice(
    admin: Client,
    http: httpx.Client,
    med: str,
    safe_model: Path,
    signing_key: bastion.PrivateKey,
    tmp_path: Path,
) -> None:
    admin.push(safe_model, "med/xray@1.0.0", key=signing_key)
    first = admin.show("med/xray@1.0.0")["root_digest"]
    other = write_safe_model(tmp_path / "other", seed=7)
    with pytest.raises(bastion.ConflictError, match="immutable"):
        admin.push(other, "med/xray@1.0.0", key=signing_key)
    signed = sign_beside(other, signing_key)
    response = http.post("/api/v1/models/med/xray/versions", json=signed.start_body("1.0.0"))
    assert_problem(response, 409, "conflict")
    assert admin.show("med/xray@1.0.0")["root_digest"] == first
    assert [v["version"] for v in admin.versions("med/xray")] == ["1.0.0"]


def test_push_with_an_existing_signature(
    admin: Client, med: str, safe_model: Path, signing_key: bastion.PrivateKey, tmp_path: Path
) -> None:
    beside = tmp_path / "release.sig"
    bastion.sign(safe_model, signing_key, signature_path=beside)
    assert admin.push(safe_model, "med/xray@1.0.0", signature=beside)["state"] == "published"
    assert admin.show("med/xray@1.0.0")["signature"].encode() == beside.read_bytes()

    inside = write_safe_model(tmp_path / "inside", seed=3)
    bastion.sign(inside, signing_key)  # model.sig in the folder, left out of the manifest
    assert admin.push(inside, "med/xray@2.0.0")["state"] == "published"
    assert admin.show("med/xray@2.0.0")["signature"].encode() == (inside / "model.sig").read_bytes()
    assert "model.sig" not in {f["path"] for f in admin.show("med/xray@2.0.0")["files"]}

    unsigned = write_safe_model(tmp_path / "unsigned", seed=4)
    with pytest.raises(bastion.UsageError, match="no signature"):
        admin.push(unsigned, "med/xray@3.0.0")


@pytest.mark.parametrize("transport", ["hub", "uvicorn"])
def test_files_larger_than_a_batch_arrive_whole(
    transport: Literal["hub", "uvicorn"], signing_key: bastion.PrivateKey, tmp_path: Path
) -> None:
    """Uploads are received in 4 MiB batches: by the hub's transport, or by the route itself."""
    running, server, thread = start_hub(tmp_path / "hub-data", transport=transport)
    try:
        model = write_safe_model(tmp_path / "big", size=1500)  # 9 MB: two batches and a rest
        with running.client() as admin:
            admin.create_namespace("med", bastion.TrustPolicy.for_keys([signing_key.public_key]))
            pushed = admin.push(model, "med/big@1.0.0", key=signing_key)
            assert (pushed["state"], pushed["reasons"]) == ("published", [])
            admin.pull("med/big@1.0.0", tmp_path / "pulled")
        weights = "model.safetensors"
        assert (tmp_path / "pulled" / weights).read_bytes() == (model / weights).read_bytes()
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        running.services.hub.db.dispose()


def _assert_never_served(http: httpx.Client, admin: Client, ref: str, dest: Path) -> None:
    """Neither the SDK nor a raw request gets a byte of a quarantined version."""
    with pytest.raises(bastion.VerificationError):
        admin.pull(ref, dest)
    assert not dest.exists()
    assert list(dest.parent.glob(f".{dest.name}.pulling-*")) == []
    name, version = ref.split("@")
    response = http.get(f"/api/v1/models/{name}/versions/{version}/files/config.json")
    assert_problem(response, 422, "version_quarantined")


def test_untrusted_signer_is_quarantined_and_never_served(
    admin: Client,
    http: httpx.Client,
    med: str,
    safe_model: Path,
    signing_key: bastion.PrivateKey,
    tmp_path: Path,
) -> None:
    stranger = bastion.generate_key("ed25519")
    with pytest.raises(bastion.QuarantinedError, match="quarantined"):
        admin.push(safe_model, "med/xray@1.0.0", key=stranger)
    shown = admin.show("med/xray@1.0.0")
    assert shown["state"] == "quarantined"
    assert len(shown["reasons"]) == 1
    assert shown["reasons"][0].startswith("signature: ")
    assert [v["state"] for v in admin.versions("med/xray")] == ["quarantined"]
    assert admin.models()[0]["latest"] is None
    _assert_never_served(http, admin, "med/xray@1.0.0", tmp_path / "pulled")

    # Signed properly now, but the version is taken: it stays quarantined.
    with pytest.raises(bastion.ConflictError):
        admin.push(safe_model, "med/xray@1.0.0", key=signing_key)
    with pytest.raises(bastion.ConflictError):
        admin.push(safe_model, "med/xray@1.0.0", key=stranger)
    assert admin.show("med/xray@1.0.0")["state"] == "quarantined"


def test_a_file_changed_after_signing_is_quarantined(
    admin: Client,
    http: httpx.Client,
    med: str,
    safe_model: Path,
    signing_key: bastion.PrivateKey,
    tmp_path: Path,
) -> None:
    signed = sign_beside(safe_model, signing_key)
    upload = open_upload(http, "med/xray", "1.0.0", signed)
    for name in signed.files:
        data = (safe_model / name).read_bytes()
        if name == "config.json":  # same size, different bytes: the client cannot see it
            tampered = data.replace(b"mlp", b"cnn")
            assert len(tampered) == len(data)
            assert tampered != data
            data = tampered
        assert put_file(http, upload, name, data).status_code == 201
    body = assert_problem(http.post(f"/api/v1/uploads/{upload}/commit"), 422, "version_quarantined")
    assert "config.json" in body["detail"]

    shown = admin.show("med/xray@1.0.0")
    assert shown["state"] == "quarantined"
    [reason] = shown["reasons"]
    assert reason.startswith("signature: ")
    assert "1 modified (config.json)" in reason
    with pytest.raises(bastion.QuarantinedError):
        admin.pull("med/xray@1.0.0", tmp_path / "pulled")
    _assert_never_served(http, admin, "med/xray@1.0.0", tmp_path / "pulled")
    with pytest.raises(bastion.ConflictError):
        admin.push(safe_model, "med/xray@1.0.0", key=signing_key)
    assert admin.show("med/xray@1.0.0")["state"] == "quarantined"


def test_a_malicious_pickle_signed_by_a_trusted_key_is_quarantined(
    hub: RunningHub,
    admin: Client,
    http: httpx.Client,
    med: str,
    signing_key: bastion.PrivateKey,
    tmp_path: Path,
) -> None:
    evil = _malicious_model(tmp_path / "evil")
    with pytest.raises(bastion.QuarantinedError, match=r"scan: .*pickle"):
        admin.push(evil, "med/evil@1.0.0", key=signing_key)
    shown = admin.show("med/evil@1.0.0")
    assert shown["state"] == "quarantined"
    [reason] = shown["reasons"]
    assert reason.startswith("scan: ")
    # The signature itself was fine: the signer is recorded, the scan said no.
    assert [s["key_fingerprint"] for s in shown["signers"]] == [signing_key.public_key.fingerprint]
    findings = shown["scan"]["findings"]
    assert findings
    assert {f["path"] for f in findings} == {"model.pkl"}
    assert shown["scan"]["max_severity"] == "critical"
    assert any("system" in f["message"] for f in findings)
    assert str(hub.data_dir) not in str(shown["scan"])  # no server path leaks out
    _assert_never_served(http, admin, "med/evil@1.0.0", tmp_path / "pulled")
    with pytest.raises(bastion.ConflictError):
        admin.push(evil, "med/evil@1.0.0", key=signing_key)
    assert admin.show("med/evil@1.0.0")["state"] == "quarantined"


@pytest.mark.parametrize("malicious", [False, True])
def test_a_commit_writes_no_file(
    hub: RunningHub,
    http: httpx.Client,
    med: str,
    signing_key: bastion.PrivateKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    malicious: bool,
) -> None:
    """Admission scans the stored blobs in place: no plaintext is written for the scan,
    for a version that is published or one that is quarantined."""
    folder = _malicious_model(tmp_path / "m") if malicious else write_safe_model(tmp_path / "m")
    signed = sign_beside(folder, signing_key)
    upload = open_upload(http, "med/xray", "1.0.0", signed)
    upload_all(http, upload, signed)

    written: list[str] = []
    real_open = os.open

    def recording_open(path: str | os.PathLike[str], flags: int, *args: object) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            written.append(os.fspath(path))
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", recording_open)
    response = http.post(f"/api/v1/uploads/{upload}/commit")
    monkeypatch.undo()
    assert response.status_code == (422 if malicious else 200), response.text
    data_dir = str(hub.data_dir.resolve())
    assert [w for w in written if os.path.realpath(w).startswith(data_dir)] == []
    assert not (hub.data_dir / "staging").exists()
