"""The hub's transport against a real uvicorn server on a loopback port, in a thread.

The served application echoes ``scope["extensions"]`` and counts its calls, so a
test can tell a request the transport refused from one the application answered.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bastion.api._transport import (
    HubHttpProtocol,
    HubServerConfig,
    TransportLimits,
    hub_server_config,
)
from bastion.crypto._tls_issue import issue_ca, issue_server
from bastion.errors import CertificateFormatError, InputError, UsageError

NOW = datetime.now(UTC)
#: Generous: how long a test waits for the server to answer or close.
PATIENCE = 15.0


@dataclass
class EchoApp:
    """Answers every request with its TLS extension (or null); records what it saw."""

    calls: int = 0
    disconnects: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.calls += 1
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects += 1
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        tls = scope.get("extensions", {}).get("tls")
        self.seen.append({"tls": tls, "path": scope["path"], "client": scope.get("client")})
        payload = json.dumps({"tls": tls, "body_bytes": len(body)}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(payload)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


@contextmanager
def serving(config: uvicorn.Config) -> Iterator[int]:
    """Run ``config`` on a free loopback port in a thread; the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the server stopped while starting"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


@contextmanager
def connect(port: int, context: ssl.SSLContext | None = None) -> Iterator[socket.socket]:
    """A connection to the test server, over TLS when ``context`` is given."""
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as raw:
        if context is None:
            yield raw
            return
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            yield conn


def exchange(port: int, data: bytes, context: ssl.SSLContext | None = None) -> bytes:
    """Send ``data`` on a new connection; everything received until the server closes."""
    with connect(port, context) as conn:
        conn.sendall(data)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
        return received


def get(port: int, path: str = "/", context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    response = exchange(
        port, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode(), context
    )
    return status_of(response), json.loads(response.partition(b"\r\n\r\n")[2] or b"null")


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response[9:12])


# Certificates ---------------------------------------------------------------------------------


@dataclass
class Pki:
    folder: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client: x509.Certificate
    foreign_cert: Path
    foreign_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _issue_client(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, name: str
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Clinic"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=5))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key = issue_ca(NOW)
    server_cert, server_key = issue_server(
        ca_cert, ca_key, (x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1")),), NOW
    )
    client_cert, client_key = _issue_client(ca_cert, ca_key, "trainer-7")
    other_ca, other_key = issue_ca(NOW)
    foreign_cert, foreign_key = _issue_client(other_ca, other_key, "intruder")
    return Pki(
        folder=folder,
        ca=_write_cert(folder / "ca.crt", ca_cert),
        server_cert=_write_cert(folder / "server.crt", server_cert),
        server_key=_write_key(folder / "server.key", server_key),
        client_cert=_write_cert(folder / "client.crt", client_cert),
        client_key=_write_key(folder / "client.key", client_key),
        client=client_cert,
        foreign_cert=_write_cert(folder / "foreign.crt", foreign_cert),
        foreign_key=_write_key(folder / "foreign.key", foreign_key),
    )


def client_context(
    pki: Pki, version: ssl.TLSVersion | None = None, cert: tuple[Path, Path] | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if version is not None:
        with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point of the test
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = context.maximum_version = version
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer old protocols
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


def tls_config(app: EchoApp, pki: Pki, *, client_ca: bool = False) -> HubServerConfig:
    return hub_server_config(
        app,
        host="127.0.0.1",
        port=0,
        ssl_certfile=pki.server_cert,
        ssl_keyfile=pki.server_key,
        client_ca=pki.ca if client_ca else None,
    )


# TLS ------------------------------------------------------------------------------------------


def test_hub_config_keeps_the_httptools_parser_and_quiet_defaults() -> None:
    config = hub_server_config(EchoApp(), host="127.0.0.1", port=8443)
    config.load()
    assert issubclass(config.http_protocol_class, HttpToolsProtocol)
    assert config.http_protocol_class is HubHttpProtocol
    assert (config.server_header, config.access_log, config.log_config) == (False, False, None)
    assert config.timeout_keep_alive == 30
    assert config.transport_limits == TransportLimits(16384, 100, 10.0, 60.0)


def _permissive(_config: uvicorn.Config, default: Any) -> ssl.SSLContext:
    """A server context that would accept TLS 1.0 and 1.1 on its own."""
    context: ssl.SSLContext = default()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def test_tls_1_1_is_refused(pki: Pki) -> None:
    old_client = client_context(pki, ssl.TLSVersion.TLSv1_1)
    files: dict[str, Any] = {
        "ssl_certfile": str(pki.server_cert),
        "ssl_keyfile": str(pki.server_key),
    }
    control = uvicorn.Config(EchoApp(), log_config=None, ssl_context_factory=_permissive, **files)
    with serving(control) as port:
        assert get(port, context=old_client)[0] == 200  # this client can speak TLS 1.1
    for config in (
        tls_config(EchoApp(), pki),
        HubServerConfig(EchoApp(), log_config=None, ssl_context_factory=_permissive, **files),
    ):
        with serving(config) as port, pytest.raises(ssl.SSLError):
            get(port, context=old_client)


@pytest.mark.parametrize(
    ("version", "wire"),
    [(ssl.TLSVersion.TLSv1_2, 0x0303), (ssl.TLSVersion.TLSv1_3, 0x0304)],
    ids=["tls1.2", "tls1.3"],
)
def test_tls_1_2_and_1_3_are_accepted_and_described(
    pki: Pki, version: ssl.TLSVersion, wire: int
) -> None:
    app = EchoApp()
    with serving(tls_config(app, pki)) as port:
        status, body = get(port, context=client_context(pki, version))
    assert status == 200
    tls = body["tls"]
    assert tls["tls_version"] == wire
    assert isinstance(tls["cipher_suite"], int)
    assert 0 < tls["cipher_suite"] <= 0xFFFF
    assert tls["client_cert_chain"] == []
    assert tls["client_cert_name"] is None
    assert tls["client_cert_sha256"] is None
    assert tls["client_cert_error"] is None
    server_der = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    assert x509.load_pem_x509_certificate(tls["server_cert"].encode()) == server_der


def test_plain_http_has_no_tls_extension() -> None:
    app = EchoApp()
    with serving(hub_server_config(app, host="127.0.0.1", port=0)) as port:
        status, body = get(port)
    assert (status, body["tls"]) == (200, None)


def test_forwarding_headers_do_not_change_the_source_address() -> None:
    app = EchoApp()
    head = (
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.9\r\n"
        b"X-Forwarded-Proto: https\r\nForwarded: for=203.0.113.9\r\nConnection: close\r\n\r\n"
    )
    with serving(hub_server_config(app, host="127.0.0.1", port=0)) as port:
        assert status_of(exchange(port, head)) == 200
    assert app.seen[0]["client"][0] == "127.0.0.1"


def test_client_ca_without_a_certificate_still_serves(pki: Pki) -> None:
    app = EchoApp()
    with serving(tls_config(app, pki, client_ca=True)) as port:
        status, body = get(port, context=client_context(pki))
    assert status == 200
    assert body["tls"]["client_cert_chain"] == []
    assert body["tls"]["client_cert_name"] is None


def test_verified_client_certificate_reaches_the_scope(pki: Pki) -> None:
    app = EchoApp()
    context = client_context(pki, cert=(pki.client_cert, pki.client_key))
    with serving(tls_config(app, pki, client_ca=True)) as port:
        status, body = get(port, context=context)
    assert status == 200
    tls = body["tls"]
    der = pki.client.public_bytes(serialization.Encoding.DER)
    assert [ssl.PEM_cert_to_DER_cert(pem) for pem in tls["client_cert_chain"]] == [der]
    assert tls["client_cert_name"] == "CN=trainer-7,O=Clinic"
    assert tls["client_cert_sha256"] == hashlib.sha256(der).hexdigest()


def test_client_certificate_is_ignored_when_no_client_ca_is_set(pki: Pki) -> None:
    app = EchoApp()
    context = client_context(pki, cert=(pki.client_cert, pki.client_key))
    with serving(tls_config(app, pki)) as port:
        status, body = get(port, context=context)
    assert status == 200
    assert body["tls"]["client_cert_chain"] == []


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
def test_client_certificate_from_another_ca_fails_the_handshake(
    pki: Pki, version: ssl.TLSVersion
) -> None:
    app = EchoApp()
    context = client_context(pki, cert=(pki.foreign_cert, pki.foreign_key))
    context.minimum_version = context.maximum_version = version
    with serving(tls_config(app, pki, client_ca=True)) as port:
        # TLS 1.3 clients finish their side first: the refusal may surface on the first read.
        with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
            get(port, context=context)
        assert get(port, context=client_context(pki))[0] == 200  # the server is still up
    assert app.calls == 1


def test_client_ca_needs_tls_and_a_readable_ca(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="need TLS"):
        hub_server_config(EchoApp(), host="127.0.0.1", port=0, client_ca=pki.ca)
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("not a certificate\n")
    config = hub_server_config(
        EchoApp(),
        host="127.0.0.1",
        port=0,
        ssl_certfile=pki.server_cert,
        ssl_keyfile=pki.server_key,
        client_ca=bad,
    )
    with pytest.raises(CertificateFormatError, match="client CA"):
        config.load()


@pytest.mark.parametrize(
    "limits",
    [
        {"max_header_bytes": 0},
        {"max_headers": -1},
        {"header_timeout": 0.0},
        {"body_idle_timeout": float("nan")},
        {"max_headers": 1.5},
        {"max_header_bytes": True},
    ],
)
def test_limits_must_be_positive_numbers(limits: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        TransportLimits(**limits)


# Bounded heads and deadlines ------------------------------------------------------------------


def limited_config(app: EchoApp, **limits: Any) -> HubServerConfig:
    options = {"header_timeout": 0.5, "body_idle_timeout": 0.5, **limits}
    return hub_server_config(app, host="127.0.0.1", port=0, **options)


def assert_problem(response: bytes, status: int, code: str) -> None:
    assert status_of(response) == status
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"\r\nconnection: close" in head.lower()
    assert b"content-type: application/problem+json" in head.lower()
    problem = json.loads(body)
    assert (problem["status"], problem["code"]) == (status, code)
    assert problem["type"] == f"urn:bastion:problem:{code}"
    assert problem["detail"]


def test_too_many_headers_get_431_without_calling_the_app() -> None:
    app = EchoApp()
    headers = "".join(f"X-Filler-{i}: {i}\r\n" for i in range(200))
    with serving(limited_config(app)) as port:
        response = exchange(port, f"GET / HTTP/1.1\r\nHost: t\r\n{headers}\r\n".encode())
        assert_problem(response, 431, "headers_too_large")
        assert get(port)[0] == 200
    assert app.calls == 1


def test_one_huge_header_gets_431_without_calling_the_app() -> None:
    app = EchoApp()
    huge = "a" * (20 * 1024)
    with serving(limited_config(app)) as port:
        response = exchange(port, f"GET / HTTP/1.1\r\nHost: t\r\nX-Big: {huge}\r\n\r\n".encode())
        assert_problem(response, 431, "headers_too_large")
        assert get(port)[0] == 200
    assert app.calls == 1


def test_endless_header_is_refused_while_it_streams() -> None:
    """A header that never ends is refused once past the bound, not read to its end."""
    app = EchoApp()
    unfinished = b"GET / HTTP/1.1\r\nHost: t\r\nX-Endless: " + b"b" * (64 * 1024)
    with serving(limited_config(app, header_timeout=60.0)) as port:
        assert_problem(exchange(port, unfinished), 431, "headers_too_large")
    assert app.calls == 0


def test_endless_trailer_is_cut_off() -> None:
    """Trailer fields are buffered by the parser like headers: one that never ends is cut off."""
    app = EchoApp()
    chunked = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    with serving(limited_config(app, header_timeout=60.0, body_idle_timeout=60.0)) as port:
        with connect(port) as conn:
            conn.sendall(chunked)
            time.sleep(0.2)  # the head and the first chunk arrive on their own
            conn.sendall(b"0\r\nX-Trailer: " + b"t" * (64 * 1024))
            assert conn.recv(65536) == b""  # closed without an answer: it was mid-body
        assert get(port)[0] == 200
    assert app.disconnects == 1


def test_chunked_bodies_with_small_trailers_are_served() -> None:
    app = EchoApp()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in [b"a" * 5000] * 40)
    request = (
        b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunks
        + b"0\r\nX-Checksum: 1234\r\n\r\n"
    )
    with serving(limited_config(app)) as port:
        response = exchange(port, request)
    assert status_of(response) == 200
    assert json.loads(response.partition(b"\r\n\r\n")[2])["body_bytes"] == 200_000


def test_headers_under_the_limit_and_big_bodies_are_served() -> None:
    app = EchoApp()
    big = "c" * (12 * 1024)
    body = b"x" * 300_000
    with serving(limited_config(app)) as port:
        response = exchange(
            port, f"GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\nConnection: close\r\n\r\n".encode()
        )
        assert status_of(response) == 200
        post = (
            b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
            % len(body)
        )
        response = exchange(port, post + body)
        assert status_of(response) == 200
        assert json.loads(response.partition(b"\r\n\r\n")[2])["body_bytes"] == len(body)


def test_pipelined_requests_are_not_mistaken_for_one_big_head() -> None:
    app = EchoApp()
    one = b"GET /p HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"p" * 200 + b"\r\n\r\n"
    last = b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    with serving(limited_config(app)) as port, connect(port) as conn:
        # 23 KiB of small requests, and the start of one more, in one write; then its end.
        conn.sendall(one * 100 + last[:20])
        time.sleep(0.2)
        conn.sendall(last[20:])
        response = b""
        while chunk := conn.recv(65536):
            response += chunk
    assert response.count(b"HTTP/1.1 200 OK") == 101
    assert app.calls == 101


def test_slow_loris_head_gets_408_and_the_server_stays_up() -> None:
    app = EchoApp()
    with serving(limited_config(app)) as port:
        with connect(port) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")  # ... and the rest never comes
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
        assert_problem(received, 408, "request_timeout")
        assert get(port)[0] == 200
    assert app.calls == 1


def read_response(conn: socket.socket) -> bytes:
    """One response with a Content-Length body, read from a kept-alive connection."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += conn.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def test_keep_alive_idle_is_not_a_slow_head_but_a_slow_second_head_is() -> None:
    app = EchoApp()
    request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    with serving(limited_config(app)) as port, connect(port) as conn:
        conn.sendall(request)
        assert status_of(read_response(conn)) == 200
        time.sleep(1.0)  # idle between requests, twice the head deadline: still open
        conn.sendall(request)
        assert status_of(read_response(conn)) == 200
        conn.sendall(b"GET / HTTP/1.1\r\n")  # a third request that stalls in its head
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    assert_problem(received, 408, "request_timeout")
    assert app.calls == 2


def test_silent_connection_gets_408() -> None:
    with serving(limited_config(EchoApp())) as port, connect(port) as conn:
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    assert_problem(received, 408, "request_timeout")


def test_stalled_body_closes_the_connection_and_the_app_sees_a_disconnect() -> None:
    app = EchoApp()
    with serving(limited_config(app)) as port:
        with connect(port) as conn:
            conn.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly-a-bit")
            assert conn.recv(65536) == b""  # closed, no answer
        assert get(port)[0] == 200
    assert app.disconnects == 1
    assert app.calls == 2


def drip(port: int, path: str, until: bytes) -> bytes:
    """POST 10 body bytes to ``path``, one every 0.1 s; what came back, up to ``until``.

    1 s in all: twice the 0.5 s deadline of ``limited_config``, never 0.5 s without a byte.
    """
    with connect(port) as conn:
        conn.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n".encode())
        for _ in range(10):
            time.sleep(0.1)
            conn.sendall(b"x")
        answer = b""
        while until not in answer and (chunk := conn.recv(65536)):
            answer += chunk
        return answer


def test_a_body_that_keeps_arriving_is_served_however_long_it_takes() -> None:
    """The deadline is for a wait with nothing arriving, not for the whole body."""
    app = EchoApp()
    with serving(limited_config(app)) as port:  # 0.5 s without a byte closes the connection
        answer = drip(port, "/", b"body_bytes")
        assert status_of(answer) == 200
        assert b'"body_bytes": 10' in answer
        # A later wait that lasts the whole deadline still closes the connection.
        with connect(port) as conn:
            conn.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nx")
            time.sleep(0.3)
            conn.sendall(b"y")
            assert conn.recv(65536) == b""
    assert app.disconnects == 1


def first_answer(port: int, data: bytes) -> bytes:
    """Send ``data``; what came back up to the end of the first response head, or until closed."""
    with connect(port) as conn:
        conn.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received and (chunk := conn.recv(65536)):
            received += chunk
        return received


def test_arbitrary_request_heads_get_an_http_answer() -> None:
    with serving(limited_config(EchoApp(), max_header_bytes=1024, max_headers=8)) as port:

        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(head=st.binary(max_size=2048) | st.text(max_size=2048).map(str.encode))
        def answered(head: bytes) -> None:
            response = first_answer(port, head + b"\r\n\r\n")
            if response:  # closing without a word is allowed (a body that never came)
                assert status_of(response) in {200, 400, 408, 431}

        answered()
        assert get(port)[0] == 200


# Bodies in batches ----------------------------------------------------------------------------


@dataclass
class BatchApp:
    """Asks for its request bodies in batches of ``size`` bytes (on paths under /batched).

    Answers with the body's SHA-256 and the size of each ``http.request`` event.
    """

    size: int
    disconnects: int = 0
    errors: list[str] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"].startswith("/batched"):
            try:
                scope["extensions"]["bastion.body_batches"](self.size)
            except ValueError as exc:
                self.errors.append(str(exc))
        digest, sizes = hashlib.sha256(), []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects += 1
                return
            body = message.get("body", b"")
            digest.update(body)
            sizes.append(len(body))
            if not message.get("more_body", False):
                break
        payload = json.dumps({"sha256": digest.hexdigest(), "sizes": sizes}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(payload)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def post(path: str, body: bytes, *, chunked: bool = False, close: bool = True) -> bytes:
    """A POST of ``body`` to ``path``, sized by Content-Length or sent in 7,000-byte chunks."""
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\n" + ("Connection: close\r\n" if close else "")
    if not chunked:
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    pieces = [body[i : i + 7000] for i in range(0, len(body), 7000)]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + framed + b"0\r\n\r\n"


def answers(received: bytes) -> list[dict[str, Any]]:
    """The JSON bodies of the responses in ``received``, in order."""
    found = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        found.append(json.loads(rest[:length]))
        received = rest[length:]
    return found


def assert_batched(answer: dict[str, Any], body: bytes, size: int) -> None:
    """The body arrived whole, every event but the last holding at least ``size`` bytes."""
    assert answer["sha256"] == hashlib.sha256(body).hexdigest()
    sizes = answer["sizes"]
    assert sum(sizes) == len(body)
    assert all(n >= size for n in sizes[:-1]), sizes
    assert len(sizes) <= len(body) // size + 2, sizes


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_asked_for_in_batches_arrives_whole_in_batches(chunked: bool) -> None:
    body = bytes(range(256)) * 4000 + b"tail"  # 1,024,004 bytes: at least 16 reads of 64 KiB
    app = BatchApp(size=256 * 1024)
    with serving(limited_config(app)) as port:
        (batched,) = answers(exchange(port, post("/batched", body, chunked=chunked)))
        (plain,) = answers(exchange(port, post("/plain", body, chunked=chunked)))
    assert_batched(batched, body, app.size)
    assert len(batched["sizes"]) <= 5
    # Without asking, the same body comes in uvicorn's small pieces.
    assert plain["sha256"] == batched["sha256"]
    assert len(plain["sizes"]) > 5


def test_batches_over_tls(pki: Pki) -> None:
    body = b"\x00\xff" * 700_001
    app = BatchApp(size=300_000)
    config = hub_server_config(
        app,
        host="127.0.0.1",
        port=0,
        ssl_certfile=pki.server_cert,
        ssl_keyfile=pki.server_key,
    )
    with serving(config) as port:
        (answer,) = answers(exchange(port, post("/batched", body), client_context(pki)))
    assert_batched(answer, body, app.size)


def test_a_batched_request_leaves_the_next_on_its_connection_unbatched() -> None:
    first, second = b"a" * 200_000, b"b" * 4000
    app = BatchApp(size=150_000)
    with serving(limited_config(app)) as port, connect(port) as conn:
        conn.sendall(post("/batched", first, close=False))
        received = b""
        while b"sha256" not in received:
            received += conn.recv(65536)
        request = post("/plain", second)
        conn.sendall(request[:-3000])
        for start in (-3000, -2000, -1000):  # the rest in pieces, each a read of its own
            time.sleep(0.1)
            conn.sendall(request[start : start + 1000 or None])
        while chunk := conn.recv(65536):
            received += chunk
    one, two = answers(received)
    assert_batched(one, first, app.size)
    assert two["sha256"] == hashlib.sha256(second).hexdigest()
    assert len(two["sizes"]) > 1  # the pieces as they came: no batches were asked for


def test_a_batched_body_that_keeps_arriving_is_served_however_long_it_takes() -> None:
    app = BatchApp(size=1 << 20)  # far more than is sent: the wait spans the whole body
    with serving(limited_config(app)) as port:  # 0.5 s without a byte closes the connection
        assert answers(drip(port, "/batched", b"sha256"))[0]["sizes"] == [10]
        # Bytes that stop arriving close the connection a deadline after the last of them.
        with connect(port) as conn:
            conn.sendall(b"POST /batched HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n")
            for _ in range(4):
                time.sleep(0.2)
                conn.sendall(b"x")
            stopped = time.monotonic()
            assert conn.recv(65536) == b""  # closed, no answer
            assert time.monotonic() - stopped >= 0.4
    assert app.disconnects == 1


def test_a_batched_body_waits_for_100_continue() -> None:
    body = b"c" * 100_000
    app = BatchApp(size=40_000)
    head = b"POST /batched HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
    with serving(limited_config(app)) as port, connect(port) as conn:
        conn.sendall(head + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += conn.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.sendall(body)
        received = interim.partition(b"\r\n\r\n")[2]
        while chunk := conn.recv(65536):
            received += chunk
    assert_batched(answers(received)[0], body, app.size)


@pytest.mark.parametrize("size", [0, -1, 1.5, "4096"])
def test_a_batch_is_a_positive_number_of_bytes(size: Any) -> None:
    app = BatchApp(size=size)
    with serving(limited_config(app)) as port:
        (answer,) = answers(exchange(port, post("/batched", b"body")))
    assert answer["sizes"] == [4]  # the body as it came, unbatched
    assert len(app.errors) == 1
    assert "positive number of bytes" in app.errors[0]


def test_arbitrary_bodies_and_batch_sizes_arrive_whole() -> None:
    app = BatchApp(size=1)
    with serving(limited_config(app, body_idle_timeout=5.0)) as port:

        @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(
            body=st.binary(max_size=3000).map(lambda b: b * 40),
            size=st.integers(min_value=1, max_value=150_000),
            chunked=st.booleans(),
            cuts=st.lists(st.integers(min_value=0, max_value=130_000), max_size=4),
        )
        def arrives(body: bytes, size: int, chunked: bool, cuts: list[int]) -> None:
            app.size = size
            request = post("/batched", body, chunked=chunked)
            with connect(port) as conn:
                start = 0
                for cut in sorted(cuts):  # the request in pieces, each a read of its own
                    conn.sendall(request[start:cut])
                    start = max(start, cut)
                    time.sleep(0.01)
                conn.sendall(request[start:])
                received = b""
                while chunk := conn.recv(65536):
                    received += chunk
            (answer,) = answers(received)
            assert_batched(answer, body, size)

        arrives()
    assert app.errors == []
