"""A response's head leaves with its first body bytes: one write to the connection, not two."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from bastion.api._joined_writes import JoinedWrites
from bastion.api._transport import HubHttpProtocol, hub_server_config
from tests.unit.api.test_transport import PATIENCE, connect, read_response, serving


@dataclass
class FakeTransport:
    writes: list[bytes] = field(default_factory=list)
    closed: bool = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


@dataclass
class FakeCycle:
    response_started: bool = False


def joined() -> tuple[JoinedWrites, FakeTransport, FakeCycle]:
    transport, cycle = FakeTransport(), FakeCycle()
    return JoinedWrites(transport, cycle), transport, cycle  # type: ignore[arg-type]


def test_the_head_waits_for_the_first_body_bytes_and_later_writes_pass() -> None:
    writes, transport, cycle = joined()
    cycle.response_started = True
    writes.write(b"HEAD\r\n\r\n")
    assert transport.writes == []
    writes.write(b"body-1")
    writes.write(b"body-2")
    assert transport.writes == [b"HEAD\r\n\r\nbody-1", b"body-2"]
    writes.flush()  # nothing held: nothing written twice
    assert transport.writes == [b"HEAD\r\n\r\nbody-1", b"body-2"]


def test_an_interim_answer_before_the_response_is_never_held() -> None:
    writes, transport, cycle = joined()
    writes.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    cycle.response_started = True
    writes.write(b"HEAD")
    writes.write(b"")  # an empty body still releases the head
    assert transport.writes[1:] == [b"HEAD"]


def test_a_head_without_body_leaves_on_flush_or_close() -> None:
    writes, transport, cycle = joined()
    cycle.response_started = True
    writes.write(b"HEAD")
    writes.flush()
    assert transport.writes == [b"HEAD"]
    other, second, started = joined()
    started.response_started = True
    other.write(b"HEAD")
    other.close()
    assert second.writes == [b"HEAD"]
    assert second.closed
    assert other.is_closing()  # anything else is the connection's


class RecordingProtocol(HubHttpProtocol):
    """The hub's protocol, with every write to the connection recorded."""

    seen: ClassVar[list[bytes]] = []

    def connection_made(self, transport: Any) -> None:
        inner_write = transport.write

        class Recorded:
            def __getattr__(self, name: str) -> Any:
                return getattr(transport, name)

            def write(self, data: bytes) -> None:
                RecordingProtocol.seen.append(bytes(data))
                inner_write(data)

        super().connection_made(Recorded())  # type: ignore[arg-type]


async def answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body", False):
        pass
    if scope["path"] == "/stream":  # the head, then body parts a loop turn apart
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b'{"answer":42}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def port() -> Any:
    config = hub_server_config(answer, host="127.0.0.1", port=0)
    config.http = RecordingProtocol
    RecordingProtocol.seen = []
    with serving(config) as bound:
        yield bound


def test_a_small_answer_is_one_write(port: int) -> None:
    with connect(port) as conn:
        conn.sendall(b"POST /infer HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}")
        response = read_response(conn)
    assert response.endswith(b'\r\n\r\n{"answer":42}')
    [write] = RecordingProtocol.seen
    assert write.startswith(b"HTTP/1.1 200 OK\r\n")
    assert write.endswith(b'{"answer":42}')


def test_a_head_answer_on_a_kept_alive_connection_is_sent_at_once(port: int) -> None:
    with connect(port) as conn:
        conn.sendall(b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        conn.sendall(b"GET /y HTTP/1.1\r\nHost: t\r\n\r\n")  # the connection still serves
        assert read_response(conn).endswith(b'{"answer":42}')


def test_a_client_waiting_for_100_continue_gets_it_before_sending_its_body(port: int) -> None:
    with connect(port) as conn:
        conn.sendall(
            b"POST /infer HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
        )
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += conn.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.sendall(b"{}")
        rest = interim.partition(b"\r\n\r\n")[2]
        while not rest.endswith(b'{"answer":42}'):
            chunk = conn.recv(65536)
            assert chunk, "the connection closed before the answer"
            rest += chunk
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")


def test_a_streamed_answer_arrives_whole_and_in_order(port: int) -> None:
    with connect(port) as conn:
        conn.settimeout(PATIENCE)
        conn.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n"
    assert RecordingProtocol.seen[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert RecordingProtocol.seen[0].endswith(b"4\r\none,\r\n")  # the head, with its first part
