"""Publishing at its edges: names that look alike, bundles in other encodings, and races
between two requests on one upload or one new model. Each case once failed with a 500, a
lost upload or a false conflict."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import unicodedata
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

import bastion
from bastion.client import Client
from bastion.registry import _publish
from tests.integration.hub.conftest import (
    RunningHub,
    SignedModel,
    assert_problem,
    bearer,
    open_upload,
    put_file,
    sign_beside,
    upload_all,
    write_safe_model,
)

WEIGHTS = "model.safetensors"


def test_names_that_differ_only_in_unicode_normalisation_are_refused(
    http: httpx.Client, med: str, signing_key: bastion.PrivateKey, tmp_path: Path
) -> None:
    model = write_safe_model(tmp_path / "m")
    composed = unicodedata.normalize("NFC", "caf\u00e9.json")
    decomposed = unicodedata.normalize("NFD", composed)
    (model / composed).write_text('{"a": 1}')
    (model / decomposed).write_text('{"a": 2}')
    signed = sign_beside(model, signing_key)
    opened = http.post("/api/v1/models/med/uni/versions", json=signed.start_body("1.0"))
    problem = assert_problem(opened, 400, "bad_input")
    assert "Unicode normalisation" in problem["detail"]


def test_a_declared_name_that_is_not_unicode_text_is_bad_input(
    http: httpx.Client, med: str, signing_key: bastion.PrivateKey, tmp_path: Path
) -> None:
    signed = sign_beside(write_safe_model(tmp_path / "m"), signing_key)
    body = signed.start_body("1.0")
    body["files"] = {"a\ud800.json": 3}  # JSON can carry a lone surrogate; no file name can
    content = json.dumps(body).encode()  # ASCII, the surrogate as the escape \ud800
    opened = http.post(
        "/api/v1/models/med/m/versions",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert "not valid Unicode text" in assert_problem(opened, 400, "bad_input")["detail"]


def test_a_signature_in_utf16_is_refused_before_it_is_stored(
    http: httpx.Client, med: str, signing_key: bastion.PrivateKey, tmp_path: Path
) -> None:
    # json.loads reads UTF-16 too: such a version published, then could never be shown.
    signed = sign_beside(write_safe_model(tmp_path / "m"), signing_key)
    utf16 = dataclasses.replace(signed, signature=signed.signature.decode().encode("utf-16"))
    opened = http.post("/api/v1/models/med/m/versions", json=utf16.start_body("1.0"))
    assert "not UTF-8 JSON" in assert_problem(opened, 400, "bundle_invalid")["detail"]
    assert http.get("/api/v1/models/med/m/versions/1.0").status_code == 404


def test_an_abort_while_a_file_arrives_answers_that_put_with_404(
    hub: RunningHub, http: httpx.Client, med: str, signing_key: bastion.PrivateKey, tmp_path: Path
) -> None:
    model = write_safe_model(tmp_path / "m", size=512)
    signed = sign_beside(model, signing_key)
    upload = open_upload(http, "med/m", "1.0", signed)
    data = (model / WEIGHTS).read_bytes()
    half_sent, aborted = threading.Event(), threading.Event()

    def body() -> Iterator[bytes]:
        yield data[: len(data) // 2]
        half_sent.set()
        aborted.wait(10)
        yield data[len(data) // 2 :]

    answers: list[httpx.Response] = []

    def put() -> None:
        with httpx.Client(base_url=hub.url, headers=bearer(hub.admin_token), timeout=30) as c:
            answers.append(
                c.put(
                    f"/api/v1/uploads/{upload}/files/{WEIGHTS}",
                    content=body(),
                    headers={"content-length": str(len(data))},
                )
            )

    thread = threading.Thread(target=put)
    thread.start()
    assert half_sent.wait(10)
    time.sleep(0.3)  # the first half is in the hub's hands
    assert http.delete(f"/api/v1/uploads/{upload}").status_code == 204
    aborted.set()
    thread.join(30)
    assert "aborted or expired" in assert_problem(answers[0], 404, "not_found")["detail"]
    store = hub.data_dir / "store"
    assert list((store / "partial").iterdir()) == []
    assert [p for p in (store / "blobs").rglob("*") if p.is_file()] == []


def _upload_the_rest(http: httpx.Client, upload: str, signed: SignedModel) -> None:
    for name in signed.files:
        if name != WEIGHTS:
            data = (signed.folder / name).read_bytes()
            assert put_file(http, upload, name, data).status_code == 201


def test_a_file_finished_by_another_put_meanwhile_keeps_the_blob_it_named(
    hub: RunningHub,
    http: httpx.Client,
    admin: Client,
    med: str,
    signing_key: bastion.PrivateKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two PUTs of one file (a client's retry): the first finishes between the second's
    # reading the file's row and naming a new blob in it, which once lost the upload.
    signed = sign_beside(write_safe_model(tmp_path / "m"), signing_key)
    upload = open_upload(http, "med/m", "1.0", signed)
    publisher = hub.services.publisher
    first = publisher.target(upload, WEIGHTS)
    sink = publisher.sink(first)
    sink.write((signed.folder / WEIGHTS).read_bytes())
    stored = sink.finish()
    fresh_id = _publish.new_blob_id

    def first_finishes_meanwhile() -> str:
        monkeypatch.setattr(_publish, "new_blob_id", fresh_id)
        publisher.stored(first, stored)
        return fresh_id()

    monkeypatch.setattr(_publish, "new_blob_id", first_finishes_meanwhile)
    with pytest.raises(bastion.ConflictError, match="uploaded already"):
        publisher.target(upload, WEIGHTS)
    _upload_the_rest(http, upload, signed)
    assert http.post(f"/api/v1/uploads/{upload}/commit").json()["state"] == "published"
    admin.pull("med/m@1.0", tmp_path / "pulled")
    assert (tmp_path / "pulled" / WEIGHTS).read_bytes() == (signed.folder / WEIGHTS).read_bytes()


def test_two_first_pushes_of_one_model_both_open(
    http: httpx.Client,
    med: str,
    signing_key: bastion.PrivateKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The second push looks the model up before the first has created it, and creates it
    # after: its insert fails, which was once answered as "this version exists already".
    signed = sign_beside(write_safe_model(tmp_path / "m"), signing_key)
    open_upload(http, "med/fresh", "1.0", signed)
    looked_up = _publish._existing_model
    calls: list[int] = []

    def not_there_yet(*args: object) -> int | None:
        calls.append(1)
        return None if len(calls) == 1 else looked_up(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_publish, "_existing_model", not_there_yet)
    opened = http.post("/api/v1/models/med/fresh/versions", json=signed.start_body("2.0"))
    assert opened.status_code == 201, opened.text
    assert len(calls) == 2


def test_an_expired_upload_takes_no_file_and_cannot_be_committed(
    hub: RunningHub,
    http: httpx.Client,
    med: str,
    signing_key: bastion.PrivateKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signed = sign_beside(write_safe_model(tmp_path / "m"), signing_key)
    upload = open_upload(http, "med/m", "1.0", signed)
    upload_all(http, upload, signed)
    publisher = hub.services.publisher
    started = publisher.hub.now()
    later = dataclasses.replace(
        publisher.hub, now=lambda: started + publisher.hub.limits.upload_ttl + timedelta(1)
    )
    monkeypatch.setattr(publisher, "hub", later)
    assert_problem(http.post(f"/api/v1/uploads/{upload}/commit"), 404, "not_found")
    assert http.get("/api/v1/models/med/m/versions/1.0").status_code == 404


def test_a_failed_pull_leaves_no_folder_it_made(
    admin: Client, med: str, signing_key: bastion.PrivateKey, tmp_path: Path
) -> None:
    model = write_safe_model(tmp_path / "m")
    admin.push(model, "med/m@1.0", key=signing_key)
    admin.yank("med/m@1.0", "withdrawn")
    with pytest.raises(bastion.VersionYankedError):
        admin.pull("med/m@1.0", tmp_path / "out" / "deep" / "dest")
    assert not (tmp_path / "out").exists()
