"""UpstreamClient against a small real aiohttp server on loopback, started in each test."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.crypto._tls import ensure_tls_material
from bastion.errors import InputError, UpstreamError, UsageError
from bastion.serving._oip_answer import parse_infer_answer
from bastion.serving._tensors import Datatype, ModelSignature, TensorSpec
from bastion.serving._upstream import UpstreamAnswer, UpstreamClient

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")

SIGNATURE = ModelSignature(
    (TensorSpec("x", Datatype.FP32, (-1, 2)),), (TensorSpec("y", Datatype.FP32, (-1,)),)
)
METADATA = SIGNATURE.to_metadata("m", ["1"], "onnxruntime")
ANSWER = {
    "model_name": "m",
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [1], "data": [2]}],
}
REQUEST = json.dumps(
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
).encode()
TRACEBACK = (
    'Traceback (most recent call last):\n  File "/srv/secret/model.py", line 9, in predict\n'
    "ValueError: the database password is hunter2\n" + "x" * 500
)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """A loopback aiohttp server answering every path with ``handler``; yields its URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def client_for(handler: Handler, **kwargs: Any) -> AsyncIterator[UpstreamClient]:
    async with serving(handler) as url, UpstreamClient(url, **kwargs) as client:
        yield client


def answering(
    status: int = 200, body: bytes | str = b"", content_type: str = "application/json"
) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        data = body.encode() if isinstance(body, str) else body
        return web.Response(status=status, body=data, content_type=content_type)

    return handler


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://triton:8000", "http://triton:8000"),
        ("HTTP://Triton:8000/", "http://triton:8000"),
        ("https://models.example.test/kserve/v1/", "https://models.example.test/kserve/v1"),
        ("http://[::1]:9000", "http://[::1]:9000"),
        ("http://triton:8000/a%20b/", "http://triton:8000/a%20b"),
    ],
)
def test_a_base_url_is_normalised(given: str, expected: str) -> None:
    assert UpstreamClient(given).base_url == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("ftp://triton:8000", "use http(s)://host"),
        ("triton:8000", "use http(s)://host"),
        ("http://", "use http(s)://host"),
        ("http://admin:secret@triton:8000", "without user name or password"),
        ("http://triton:8000/?model=x", "without a query or fragment"),
        ("http://triton:8000/#top", "without a query or fragment"),
        ("http://triton:99999", "does not parse"),
        ("http://triton:8000/a b", "without spaces"),
        ("http://tri ton:8000", "without spaces"),
        ("http://triton:8000/a\nb", "without spaces"),
    ],
)
def test_a_bad_base_url_is_refused(given: str, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)) as caught:
        UpstreamClient(given)
    assert "secret" not in caught.value.message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout": 0},
        {"timeout": float("inf")},
        {"timeout": True},
        {"max_connections": 0},
        {"max_answer_bytes": 1.5},
        {"ssl_context": ssl.create_default_context()},
    ],
)
def test_bad_settings_are_usage_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        UpstreamClient("http://triton:8000", **kwargs)


def test_nothing_is_sent_before_start() -> None:
    client = UpstreamClient(f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(UsageError, match=r"start\(\)"):
        run(client.infer("m", REQUEST, content_type="application/json"))


# -- the exchange ----------------------------------------------------------------------------


def test_infer_forwards_the_body_as_is_with_only_the_given_headers() -> None:
    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.method, request.raw_path, dict(request.headers), await request.read()))
        return web.Response(
            body=b'{"a":1}BIN',
            content_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": "7"},
        )

    async def scenario() -> UpstreamAnswer:
        async with client_for(handler) as client:
            return await client.infer(
                "team/cancer v2",
                REQUEST + b"\x00\x01",
                content_type="application/octet-stream",
                header_length=len(REQUEST),
                request_id="req-42",
            )

    answer = run(scenario())
    assert answer == UpstreamAnswer(200, b'{"a":1}BIN', "application/octet-stream", 7)
    [(method, path, headers, body)] = seen
    assert (method, path, body) == (
        "POST",
        "/v2/models/team%2Fcancer%20v2/infer",
        REQUEST + b"\0\1",
    )
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Inference-Header-Content-Length"] == str(len(REQUEST))
    assert headers["X-Request-ID"] == "req-42"
    assert not {"Authorization", "Cookie", "Proxy-Authorization"} & set(headers)


def test_connections_are_kept_alive_and_cookies_are_not_kept() -> None:
    peers: list[object] = []
    cookies: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        cookies.append(request.headers.get("Cookie"))
        response = web.json_response(ANSWER)
        response.set_cookie("session", "from-upstream")
        return response

    async def scenario() -> None:
        async with client_for(handler) as client:
            for _ in range(5):
                await client.infer("m", REQUEST, content_type="application/json")

    run(scenario())
    assert len(set(peers)) == 1
    assert cookies == [None] * 5


def test_metadata_and_readiness() -> None:
    async def handler(request: web.Request) -> web.Response:
        if request.path == "/v2/models/m":
            return web.json_response(METADATA)
        if request.path in ("/v2/health/ready", "/v2/models/m/ready"):
            return web.Response()
        return web.json_response({"error": "Model other not found"}, status=404)

    async def scenario() -> tuple[ModelSignature, bool, bool, bool]:
        async with client_for(handler) as client:
            return (
                await client.model_metadata("m"),
                await client.ready(),
                await client.model_ready("m"),
                await client.model_ready("other"),
            )

    assert run(scenario()) == (SIGNATURE, True, True, False)


def test_an_answer_parses_with_the_signature() -> None:
    async def scenario() -> UpstreamAnswer:
        async with client_for(answering(body=json.dumps(ANSWER))) as client:
            return await client.infer("m", REQUEST, content_type="application/json")

    answer = run(scenario())
    parsed = parse_infer_answer(answer.body, answer.content_type, answer.header_length, SIGNATURE)
    assert parsed.outputs["y"].tolist() == [2.0]


# -- failures --------------------------------------------------------------------------------


def test_a_refused_connection_is_an_upstream_error() -> None:
    async def scenario() -> tuple[bool, str]:
        async with UpstreamClient(f"http://127.0.0.1:{closed_port()}") as client:
            ready = await client.ready()
            with pytest.raises(UpstreamError) as caught:
                await client.infer("m", REQUEST, content_type="application/json")
            return ready, caught.value.message

    ready, message = run(scenario())
    assert not ready
    assert "cannot connect to the upstream server" in message
    assert "ConnectionRefusedError" in message


def test_a_slow_server_times_out() -> None:
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), timeout=5)
        return web.json_response(ANSWER)

    async def scenario() -> str:
        async with client_for(handler, timeout=0.2) as client:
            try:
                with pytest.raises(UpstreamError) as caught:
                    await client.infer("m", REQUEST, content_type="application/json")
            finally:
                release.set()
            return caught.value.message

    assert "did not answer within 0.2 s" in run(scenario())


def test_a_5xx_traceback_is_logged_briefly_and_never_returned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> str:
        async with client_for(answering(500, TRACEBACK, "text/plain")) as client:
            with pytest.raises(UpstreamError) as caught:
                await client.infer("m", REQUEST, content_type="application/json")
            return caught.value.message

    with caplog.at_level(logging.WARNING, logger="bastion.serving._upstream"):
        message = run(scenario())
    assert "failed with status 500 for model 'm'" in message
    assert "Traceback" not in message
    assert "hunter2" not in message
    [record] = caplog.records
    assert "Traceback" in record.getMessage()
    assert "x" * 150 not in record.getMessage()  # only the first 200 characters


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        (400, '{"error": "shape [2, 29] does not fit"}', InputError, "shape [2, 29] does not fit"),
        (422, '{"detail": [{"loc": ["body"]}]}', InputError, "refused the request as invalid"),
        (400, json.dumps({"error": "e" * 201}), InputError, "refused the request as invalid"),
        (400, '{"error": "two\\nlines"}', InputError, "refused the request as invalid"),
        (400, "<html>bad</html>", InputError, "refused the request as invalid"),
        (404, '{"error": "Model m not found"}', UpstreamError, "no such model"),
        (401, "", UpstreamError, "credentials"),
        (429, "", UpstreamError, "overloaded"),
        (302, "", UpstreamError, "redirect"),
    ],
)
def test_refusals_say_whose_fault_they_are(
    status: int, body: str, error: type[Exception], message: str
) -> None:
    async def scenario() -> None:
        async with client_for(answering(status, body)) as client:
            await client.infer("m", REQUEST, content_type="application/json")

    with pytest.raises(error, match=re.escape(message)):
        run(scenario())


def test_redirects_are_not_followed() -> None:
    hits: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        if request.path == "/v2/models/m/infer":
            raise web.HTTPTemporaryRedirect("/elsewhere")
        return web.json_response(ANSWER)

    async def scenario() -> None:
        async with client_for(handler) as client:
            await client.infer("m", REQUEST, content_type="application/json")

    with pytest.raises(UpstreamError, match="follows none"):
        run(scenario())
    assert hits == ["/v2/models/m/infer"]


def test_an_oversized_answer_is_refused_with_or_without_a_length() -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(8):
            await response.write(b"x" * 512)
        await response.write_eof()
        return response

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(b"0" * 100_000),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )

    async def scenario(handler: Handler) -> None:
        async with client_for(handler, max_answer_bytes=1024) as client:
            await client.infer("m", REQUEST, content_type="application/json")

    for handler in (answering(body=b"x" * 1025), chunked, gzipped):
        with pytest.raises(UpstreamError, match="an answer over 1024 bytes"):
            run(scenario(handler))


def test_a_truncated_answer_is_an_upstream_error() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b'{"model_name": ')
        assert request.transport is not None
        request.transport.close()
        return response

    async def scenario() -> None:
        async with client_for(handler) as client:
            await client.infer("m", REQUEST, content_type="application/json")

    with pytest.raises(UpstreamError, match="exchange with the upstream server"):
        run(scenario())


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (answering(body=b"[[["), "invalid metadata for model 'm'"),
        (answering(body=json.dumps({"name": "m", "inputs": []})), "invalid metadata"),
        (answering(500, TRACEBACK), "failed with status 500"),
        (answering(400, '{"error": "Model m is not ready yet."}'), "Model m is not ready"),
    ],
)
def test_bad_metadata_is_an_upstream_error(handler: Handler, message: str) -> None:
    async def scenario() -> None:
        async with client_for(handler) as client:
            await client.model_metadata("m")

    with pytest.raises(UpstreamError, match=message):
        run(scenario())


def test_a_malformed_answer_is_an_upstream_error() -> None:
    async def bad_header(request: web.Request) -> web.Response:
        return web.Response(body=b"{}", headers={"Inference-Header-Content-Length": "two"})

    async def scenario(handler: Handler) -> UpstreamAnswer:
        async with client_for(handler) as client:
            return await client.infer("m", REQUEST, content_type="application/json")

    with pytest.raises(UpstreamError, match="invalid Inference-Header-Content-Length"):
        run(scenario(bad_header))
    answer = run(scenario(answering(body=b'{"model_name": "m", "outputs": "all"}')))
    with pytest.raises(UpstreamError, match="invalid inference answer"):
        parse_infer_answer(answer.body, answer.content_type, answer.header_length, SIGNATURE)


@pytest.mark.parametrize(
    ("model", "request_id", "content_type", "header_length"),
    [
        ("", None, "application/json", None),
        ("m", "a\r\nX-Evil: 1", "application/json", None),
        ("m", None, "application/json\r\nX-Evil: 1", None),
        ("m", None, "application/octet-stream", len(REQUEST) + 1),
        ("m", None, "application/octet-stream", -1),
    ],
)
def test_bad_arguments_and_header_injection_are_refused(
    model: str, request_id: str | None, content_type: str, header_length: int | None
) -> None:
    async def scenario() -> None:
        async with client_for(answering(body=json.dumps(ANSWER))) as client:
            await client.infer(
                model,
                REQUEST,
                content_type=content_type,
                header_length=header_length,
                request_id=request_id,
            )

    with pytest.raises(UsageError):
        run(scenario())


# -- the connection pool, against a raw server that says exactly what a test wants ----------

#: A server's answer to one request: the bytes to write, then whether to close the connection.
Script = Callable[[int, int], tuple[bytes, bool]]


@asynccontextmanager
async def raw_serving(script: Script) -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback TCP server; ``script(connection, request)`` answers each request read.

    Yields the URL and, per connection, the number of requests it read.
    """
    counts: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = len(counts)
        counts.append(0)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
                counts[number] += 1
                data, close = script(number, counts[number])
                writer.write(data)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", counts
    finally:
        server.close()


def ok(body: bytes = b'{"model_name":"m","outputs":[]}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def _infer_raw(
    script: Script, times: int = 1, **kwargs: Any
) -> tuple[list[bytes], list[int]]:
    async with raw_serving(script) as (url, counts), UpstreamClient(url, **kwargs) as client:
        bodies = []
        for _ in range(times):
            answer = await client.infer("m", REQUEST, content_type="application/json")
            bodies.append(answer.body)
        return bodies, counts


def test_an_idle_connection_the_server_dropped_is_retried_once_on_a_new_one() -> None:
    def script(connection: int, request: int) -> tuple[bytes, bool]:
        if connection == 0 and request == 2:
            return b"", True  # the keep-alive connection closes as the request arrives
        return ok(), False

    bodies, counts = run(_infer_raw(script, times=3))
    assert len(bodies) == 3
    assert counts == [2, 2]  # the dropped request went again, on the second connection


def test_a_new_connection_closed_without_an_answer_is_not_retried() -> None:
    def script(connection: int, request: int) -> tuple[bytes, bool]:
        return b"", True

    with pytest.raises(UpstreamError, match="closed before the answer ended"):
        run(_infer_raw(script))


@pytest.mark.parametrize(
    ("answer", "body", "connections"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
         b"abcde", 1),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final"), b"final", 1),
        (ok(b"short", b"Connection: close\r\n"), b"short", 3),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", b"until the end", 3),
        (b"HTTP/1.0 200 OK\r\nContent-Encoding: gzip\r\n\r\n" + gzip.compress(b"whole"),
         b"whole", 3),
        (ok(b"", b"Content-Encoding: gzip\r\n"), b"", 1),
    ],
    ids=["chunked", "interim-100", "connection-close", "until-close", "gzip-until-close",
         "gzip-empty"],
)  # fmt: skip
def test_answers_are_read_however_their_length_is_told(
    answer: bytes, body: bytes, connections: int
) -> None:
    def script(connection: int, request: int) -> tuple[bytes, bool]:
        return answer, b"Connection: close" in answer or answer.startswith(b"HTTP/1.0")

    bodies, counts = run(_infer_raw(script, times=3))
    assert bodies == [body] * 3
    assert len(counts) == connections


#: A gzip stream cut short: its framing says it is whole, its own end never comes.
_TRUNCATED_GZIP = gzip.compress(b'{"model_name":"m","outputs":[]}' * 20)[:-12]


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nnotgz",
        ok(_TRUNCATED_GZIP, b"Content-Encoding: gzip\r\n"),
        b"HTTP/1.0 200 OK\r\nContent-Encoding: gzip\r\n\r\n" + _TRUNCATED_GZIP,
    ],
    ids=["not-http", "two-lengths", "unknown-encoding", "bad-gzip", "truncated-gzip",
         "truncated-gzip-until-close"],
)  # fmt: skip
def test_an_answer_that_is_not_http_is_an_upstream_error(answer: bytes) -> None:
    def script(connection: int, request: int) -> tuple[bytes, bool]:
        return answer, answer.startswith(b"HTTP/1.0")

    with pytest.raises(UpstreamError, match=r"exchange with the upstream server .* failed"):
        run(_infer_raw(script))


def test_at_most_max_connections_are_opened_and_every_call_is_answered() -> None:
    active: list[int] = []
    peak: list[int] = [0]

    async def handler(request: web.Request) -> web.Response:
        active.append(1)
        peak[0] = max(peak[0], len(active))
        await asyncio.sleep(0.02)
        active.pop()
        return web.json_response(ANSWER)

    async def scenario() -> list[UpstreamAnswer]:
        async with client_for(handler, max_connections=2) as client:
            calls = [client.infer("m", REQUEST, content_type="application/json") for _ in range(8)]
            return await asyncio.gather(*calls)

    answers = run(scenario())
    assert [a.status for a in answers] == [200] * 8
    assert peak[0] == 2


def test_a_timed_out_exchange_closes_its_connection() -> None:
    def script(connection: int, request: int) -> tuple[bytes, bool]:
        return (b"", False) if connection == 0 else (ok(), False)

    async def scenario() -> list[int]:
        async with raw_serving(script) as (url, counts):
            async with UpstreamClient(url, timeout=0.2) as client:
                with pytest.raises(UpstreamError, match="did not answer within"):
                    await client.infer("m", REQUEST, content_type="application/json")
                await client.infer("m", REQUEST, content_type="application/json")
            return counts

    assert run(scenario()) == [1, 1]  # the second call went out on a new connection


@settings(max_examples=60, deadline=None)
@given(answer=st.binary(max_size=300), close=st.booleans())
def test_any_bytes_from_the_server_give_an_answer_or_an_upstream_error(
    answer: bytes, close: bool
) -> None:
    def script(connection: int, request: int) -> tuple[bytes, bool]:
        return answer, close

    try:
        bodies, _ = run(_infer_raw(script, timeout=0.5, max_answer_bytes=256))
    except UpstreamError:
        return
    assert len(bodies[0]) <= 256


def test_the_pool_works_on_uvloop_as_the_server_runs_it() -> None:
    import uvloop

    def script(connection: int, request: int) -> tuple[bytes, bool]:
        if connection == 0 and request == 2:
            return b"", True
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", False

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        bodies, counts = runner.run(_infer_raw(script, times=3))
    assert bodies == [b"ok"] * 3
    assert counts == [2, 2]


def test_an_https_upstream_is_verified_against_the_given_ca(tmp_path: Path) -> None:
    tls = ensure_tls_material(tmp_path / "tls")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tls.server_cert, tls.server_key)
    paths: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                paths.append(head.split(b" ")[1])
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                writer.write(ok(json.dumps(ANSWER).encode()))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def scenario(context: ssl.SSLContext) -> UpstreamAnswer:
        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        try:
            url = f"https://localhost:{port}/kserve"
            async with UpstreamClient(url, ssl_context=context) as client:
                await client.infer("m", REQUEST, content_type="application/json")
                return await client.infer("m", REQUEST, content_type="application/json")
        finally:
            server.close()

    trusting = ssl.create_default_context(cafile=str(tls.ca_cert))
    answer = run(scenario(trusting))
    assert json.loads(answer.body) == ANSWER
    assert paths == [b"/kserve/v2/models/m/infer"] * 2
    with pytest.raises(UpstreamError, match=r"cannot connect .*SSLCertVerificationError"):
        run(scenario(ssl.create_default_context()))  # the system's CAs do not know this one
