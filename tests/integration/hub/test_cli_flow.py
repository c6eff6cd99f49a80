"""The hub's command line end to end, against ``bastion serve`` running as a real process.

The server runs as a child process with TLS on (its generated CA in ``DATA/tls``);
every client command runs in-process through ``bastion.cli.main``, so its stdout
(one JSON document with ``--json``) and its exit code are checked exactly as a
script would see them.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bastion.cli import main
from tests.integration.hub.conftest import ServeProcess, serve_process, write_safe_model

PASSPHRASE = "correct horse battery staple"


@dataclass
class Cli:
    """Runs ``bastion ...`` in-process and hands back what a shell would see."""

    capsys: pytest.CaptureFixture[str]

    def run(self, *argv: str | os.PathLike[str]) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main([os.fspath(a) for a in argv])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str | os.PathLike[str], expect: int = 0) -> Any:
        """Run with ``--json``: exactly one JSON document on stdout, the expected exit code."""
        code, out, err = self.run(*argv, "--json")
        assert code == expect, f"exit {code}, expected {expect}; stderr: {err}"
        return json.loads(out)  # raises if stdout holds anything but one document

    def fails(self, *argv: str | os.PathLike[str], exit_code: int, code: str) -> str:
        """Run with ``--json``, expecting a documented failure; the error's message."""
        doc = self.json(*argv, expect=exit_code)
        assert doc["ok"] is False
        assert doc["error"]["code"] == code, doc
        return str(doc["error"]["message"])


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("BASTION_KEY_PASSPHRASE", PASSPHRASE)
    for name in ("BASTION_URL", "BASTION_TOKEN", "BASTION_CA"):
        monkeypatch.delenv(name, raising=False)
    return Cli(capsys)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One server for the module (starting one takes seconds); tests use their own namespaces."""
    root = tmp_path_factory.mktemp("serve")
    with serve_process(root / "hub", root / "admin.token") as running:
        yield running


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "model.sig"
    }


def test_serve_keeps_the_admin_token_out_of_its_output(server: ServeProcess) -> None:
    assert stat.S_IMODE(server.token_file.stat().st_mode) == 0o600
    token = server.token
    assert token.startswith("bst_")
    output = server.output()
    assert token not in output
    assert token.split("_", 2)[2] not in output  # not even the secret part (bst_<id>_<secret>)
    assert "CA fingerprint" in output  # what the operator does need is printed
    ca_key = server.ca.with_name("ca.key")
    assert stat.S_IMODE(ca_key.stat().st_mode) == 0o600


def test_the_whole_flow_through_the_command_line(
    server: ServeProcess, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    model = write_safe_model(work / "xray-model")
    expected = _tree(model)

    login = cli.json("login", server.url, "--token-file", server.token_file, "--ca", server.ca)
    assert login["ok"] is True
    assert login["name"] == "bootstrap-admin"
    saved = Path(login["saved"])
    assert saved.is_relative_to(tmp_path / "config")
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert server.token not in json.dumps(login)

    key = cli.json("keygen", "--type", "ed25519", "--out", work / "keys" / "release")
    assert key["encrypted"] is True
    policy = cli.json(
        "trust", "init", "--out", work / "trust.toml", "--public-key", key["public_key"]
    )
    assert policy["keys"] == [key["fingerprint"]]

    ns = cli.json("namespace", "create", "med", "--trust", work / "trust.toml")
    assert ns["name"] == "med"

    pushed = cli.json("push", model, "med/xray@1.2.0", "--sign-with", key["private_key"])
    assert pushed["ok"] is True
    assert pushed["state"] == "published"
    assert pushed["files"] == len(expected)
    assert pushed["bytes"] == sum(len(v) for v in expected.values())
    # versions are immutable: the same push again is a conflict
    cli.fails(
        "push", model, "med/xray@1.2.0", "--sign-with", key["private_key"],
        exit_code=2, code="conflict",
    )  # fmt: skip

    models = [m for m in cli.json("models", "ls")["models"] if m["name"].startswith("med/")]
    assert [(m["name"], m["versions"], m["latest"]) for m in models] == [("med/xray", 1, "1.2.0")]
    versions = cli.json("versions", "ls", "med/xray")["versions"]
    assert [(v["version"], v["state"], v["yanked"]) for v in versions] == [
        ("1.2.0", "published", False)
    ]
    shown = cli.json("show", "med/xray@1.2.0")
    assert shown["state"] == "published"
    assert shown["root_digest"]
    assert sorted(f["path"] for f in shown["files"]) == sorted(expected)
    assert [s["key_fingerprint"] for s in shown["signers"]] == [key["fingerprint"]]
    assert shown["scan"]["findings"] == [] or all(
        f["severity"] in ("info",) for f in shown["scan"]["findings"]
    )

    alias = cli.json("alias", "set", "med/xray", "prod", "1.2.0")
    assert (alias["alias"], alias["version"], alias["previous"]) == ("prod", "1.2.0", None)

    pulled = cli.json("pull", "med/xray:prod", work / "out")
    assert pulled["ref"] == "med/xray@1.2.0"
    assert pulled["yanked"] is False
    assert pulled["root_digest"] == shown["root_digest"]
    assert _tree(work / "out") == expected

    yanked = cli.json("yank", "med/xray@1.2.0", "--reason", "CVE-X")
    assert yanked["reason"] == "CVE-X"
    message = cli.fails(
        "pull", "med/xray@1.2.0", work / "refused", exit_code=2, code="version_yanked"
    )
    assert "allow" in message.lower()
    assert not (work / "refused").exists()
    assert not [p for p in work.iterdir() if p.name.startswith(".refused")]
    again = cli.json("pull", "med/xray@1.2.0", work / "anyway", "--allow-yanked")
    assert again["yanked"] is True
    assert _tree(work / "anyway") == expected

    ci = cli.json("tokens", "create", "ci", "--role", "consumer", "--namespace", "med")
    assert ci["token"].startswith("bst_")
    assert ci["roles"] == [{"namespace": "med", "role": "consumer"}]
    listed = cli.json("tokens", "ls")["keys"]
    assert ci["token"] not in json.dumps(listed)
    assert ci["id"] in {k["id"] for k in listed}
    with monkeypatch.context() as as_ci:
        as_ci.setenv("BASTION_TOKEN", ci["token"])
        assert cli.json("show", "med/xray@1.2.0")["yanked"] is True  # it may read
        cli.fails(
            "push", model, "med/xray@1.3.0", "--sign-with", key["private_key"],
            exit_code=4, code="forbidden",
        )  # fmt: skip

    rotated = cli.json("keys", "rotate")
    assert rotated["current_kek"] != rotated["previous_kek"]
    assert rotated["rewrapped"] == len(expected)
    # the data keys were re-wrapped, not the data re-encrypted: a pull still verifies
    cli.json("pull", "med/xray@1.2.0", work / "after-rotation", "--allow-yanked")
    assert _tree(work / "after-rotation") == expected

    code, out, err = cli.run("audit", "export", "--since", "2026-01-01")
    assert code == 0, err
    entries = [json.loads(line) for line in out.splitlines()]
    actions = [e["action"] for e in entries]
    for action in (
        "namespace.create",
        "version.push",
        "upload.file",
        "upload.commit",
        "alias.set",
        "version.pull",
        "version.yank",
        "apikey.create",
        "kek.rotate",
    ):
        assert action in actions
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    denied_pull = [
        e for e in entries if e["action"] == "version.pull" and e["outcome"] != "allowed"
    ]
    assert denied_pull  # the refused pull of the yanked version is on record too
    assert all(ci["token"] not in line for line in out.splitlines())
    code, out, _ = cli.run("audit", "export", "--since", "2999-01-01")
    assert (code, out) == (0, "")

    verified = cli.json("audit", "verify")
    assert verified["ok"] is True
    assert verified["problems"] == []
    assert verified["entries"] >= len(entries)
    assert verified["checkpoints_verified"] >= 1

    # a signing key that others may read is used, with a warning on stderr
    Path(key["private_key"]).chmod(0o644)
    code, out, err = cli.run(
        "push", model, "med/other@1.0.0", "--sign-with", key["private_key"], "--json"
    )
    assert code == 0, err
    assert json.loads(out)["state"] == "published"
    assert "is accessible to group or others (mode 0644)" in err


def test_a_reader_key_cannot_push(
    server: ServeProcess, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = write_safe_model(tmp_path / "model")
    cli.json("login", server.url, "--token-file", server.token_file, "--ca", server.ca)
    key = cli.json("keygen", "--type", "ecdsa-p256", "--out", tmp_path / "release")
    cli.json("trust", "init", "--out", tmp_path / "trust.toml", "--public-key", key["public_key"])
    cli.json("namespace", "create", "team", "--trust", tmp_path / "trust.toml")
    reader = cli.json("tokens", "create", "ci", "--role", "consumer", "--namespace", "team")

    monkeypatch.setenv("BASTION_TOKEN", reader["token"])  # the environment beats the login file
    assert cli.json("models", "ls") == {"models": []}  # med/xray, if pushed, is not its to see
    cli.fails(
        "push", model, "team/xray@1.0.0", "--sign-with", key["private_key"],
        exit_code=4, code="forbidden",
    )  # fmt: skip
    cli.fails("tokens", "ls", exit_code=4, code="forbidden")
    cli.fails("keys", "rotate", exit_code=4, code="forbidden")

    monkeypatch.setenv("BASTION_TOKEN", "bst_nosuchkey00000_" + "x" * 43)
    cli.fails("models", "ls", exit_code=4, code="unauthenticated")
    monkeypatch.delenv("BASTION_TOKEN")
    assert cli.json("versions", "ls", "team/xray", expect=2)["error"]["code"] == "not_found"


def test_the_environment_works_without_login(
    server: ServeProcess, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_URL", server.url)
    monkeypatch.setenv("BASTION_TOKEN", server.token)
    monkeypatch.setenv("BASTION_CA", str(server.ca))
    assert isinstance(cli.json("models", "ls")["models"], list)
    cli.json("keygen", "--out", tmp_path / "k")
    cli.json("trust", "init", "--out", tmp_path / "t.toml", "--public-key", tmp_path / "k.pub")
    assert cli.json("namespace", "create", "env", "--trust", tmp_path / "t.toml")["name"] == "env"
    assert "env" in [n["name"] for n in cli.json("namespace", "ls")["namespaces"]]
    assert not (tmp_path / "config" / "bastion" / "login.json").exists()

    monkeypatch.delenv("BASTION_CA")  # the hub's certificate is not trusted any more
    message = cli.fails("models", "ls", exit_code=5, code="hub_unavailable")
    assert "certificate" in message
    assert "--ca" in message or "BASTION_CA" in message
    code, _, err = cli.run("models", "ls")
    assert code == 5
    assert "certificate" in err


def test_login_without_the_ca_is_refused(server: ServeProcess, cli: Cli) -> None:
    message = cli.fails(
        "login", server.url, "--token-file", server.token_file, exit_code=5, code="hub_unavailable"
    )
    assert "certificate" in message
    assert not Path(os.environ["XDG_CONFIG_HOME"], "bastion", "login.json").exists()


def test_no_hub_configured_is_a_usage_error(cli: Cli) -> None:
    message = cli.fails("models", "ls", exit_code=2, code="usage")
    assert "BASTION_URL" in message


def test_an_unreachable_hub_exits_5(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        monkeypatch.setenv("BASTION_TOKEN", "bst_x_y")
        url = f"https://127.0.0.1:{port}"
        message = cli.fails("models", "ls", "--url", url, exit_code=5, code="hub_unavailable")
    assert url in message


def test_insecure_http_is_refused_off_loopback(tmp_path: Path) -> None:
    data = tmp_path / "data"
    everywhere = "0.0.0.0"  # noqa: S104 (the point: plain HTTP on every interface)
    argv = [sys.executable, "-m", "bastion", "serve", "--data-dir", str(data), "--insecure-http"]
    result = subprocess.run(
        [*argv, "--host", everywhere, "--port", "18443"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "loopback" in result.stderr
    assert not data.exists()  # refused before anything was created


def _tls_context(ca: Path, newest: ssl.TLSVersion) -> ssl.SSLContext:
    with warnings.catch_warnings():  # naming TLS 1.0/1.1 is deprecated, which is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=str(ca))
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL offer the old protocols
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = newest
    return context


def _handshake(port: int, context: ssl.SSLContext) -> str | None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.version()


def _local_openssl_speaks_tls11(server: ServeProcess) -> bool:
    """Whether this machine's OpenSSL completes a TLS 1.1 handshake with a willing server."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        willing = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        willing.load_cert_chain(
            server.ca.with_name("server.crt"), server.ca.with_name("server.key")
        )
        willing.set_ciphers("DEFAULT:@SECLEVEL=0")
        willing.minimum_version = ssl.TLSVersion.TLSv1
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        conn, _ = listener.accept()
        try:
            with willing.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        old = _tls_context(server.ca, ssl.TLSVersion.TLSv1_1)
        return _handshake(listener.getsockname()[1], old) == "TLSv1.1"
    except (ssl.SSLError, OSError):
        return False
    finally:
        thread.join(timeout=10)
        listener.close()


def test_the_server_refuses_tls_older_than_1_2(server: ServeProcess) -> None:
    # The same client settings with TLS 1.2 allowed get through: only the version differs.
    assert _handshake(server.port, _tls_context(server.ca, ssl.TLSVersion.TLSv1_2)) == "TLSv1.2"
    if _local_openssl_speaks_tls11(server):
        with pytest.raises(ssl.SSLError):
            _handshake(server.port, _tls_context(server.ca, ssl.TLSVersion.TLSv1_1))
    else:  # this OpenSSL cannot offer TLS 1.1 at all: check the server's own context
        from bastion.api._transport import hub_server_config

        async def app(scope: object, receive: object, send: object) -> None:
            raise AssertionError("never called")

        config = hub_server_config(
            app,
            host="127.0.0.1",
            port=0,
            ssl_certfile=server.ca.with_name("server.crt"),
            ssl_keyfile=server.ca.with_name("server.key"),
        )
        config.load()
        assert config.ssl is not None
        assert config.ssl.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server.running()  # a refused handshake does not hurt the server
