"""A small HTTP/1.1 client for the upstream hot path: a keep-alive pool of asyncio connections.

In upstream mode every inference call crosses a second HTTP hop, and a general client pays
for its generality on each one: aiohttp's took about 0.5 ms of CPU per call here, more than
the gateway's own checks. :class:`Http1Pool` does what that hop needs and nothing more:

- one exchange at a time per connection, the whole request in one write;
- answers parsed by llhttp (``httptools``, which uvicorn uses to read requests);
- bodies bounded while they arrive, whether sized by ``Content-Length``, chunked or read
  until the connection closes; ``gzip`` and ``deflate`` decoded within the same bound, and
  a compressed stream that ends before its own end marker refused as an incomplete answer;
- connections kept alive when the answer allows it, at most ``max_connections`` open;
- no redirects, cookies, proxies or environment settings. The one retry: a request sent on
  a reused connection that the server closed before answering anything (an idle connection
  it had just dropped) is sent once more, on a new connection.

Failures are :class:`ConnectFailed` (no connection), :class:`ExchangeFailed` (the
connection broke or the answer is not HTTP) and :class:`AnswerTooLarge`; time limits are the
caller's (``asyncio.timeout`` around :meth:`Http1Pool.exchange`), and a connection whose
exchange is cancelled is closed, never reused.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from dataclasses import dataclass
from typing import cast

import httptools

__all__ = [
    "AnswerTooLarge",
    "ConnectFailed",
    "ExchangeFailed",
    "Http1Pool",
    "HttpAnswer",
]


class ConnectFailed(Exception):
    """No connection could be opened; ``os_error`` says why."""

    def __init__(self, os_error: OSError) -> None:
        super().__init__(str(os_error))
        self.os_error = os_error


class ExchangeFailed(Exception):
    """The connection broke during the exchange, or the answer was not valid HTTP."""

    def __init__(self, reason: str, *, answered: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        #: False when not one byte of the answer had arrived (the request may be sent again).
        self.answered = answered


class AnswerTooLarge(Exception):
    """The answer's body, decoded, is over the limit of the exchange."""


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A final answer: status, headers by lower-case name (repeats joined by ", "), body."""

    status: int
    headers: dict[str, str]
    body: bytes


class _Decoder:
    """Decodes a ``gzip`` or ``deflate`` body, never producing more than ``room`` bytes."""

    __slots__ = ("_fed", "_inflate")

    def __init__(self, encoding: str) -> None:
        # 47: a gzip or zlib header, detected; deflate is zlib-wrapped (RFC 9110 8.4.1.2).
        self._inflate = zlib.decompressobj(47 if encoding == "gzip" else 15)
        self._fed = False

    def feed(self, data: bytes, room: int) -> bytes:
        self._fed = True
        try:
            out = self._inflate.decompress(data, room + 1)
        except zlib.error as exc:
            raise ExchangeFailed(f"an encoded body that does not decode ({exc})") from exc
        if len(out) > room or self._inflate.unconsumed_tail:
            raise AnswerTooLarge
        return out

    def finish(self) -> None:
        """The body has ended: its encoded stream must have ended with it (an empty body may)."""
        if self._fed and not self._inflate.eof:
            raise ExchangeFailed("an encoded body that ends before its compressed stream does")


class _Connection(asyncio.Protocol):
    """One connection to the server; :meth:`exchange` sends a request and awaits its answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = False
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[HttpAnswer] | None = None
        self._limit = 0
        self._received = False
        self._out_of_step = False
        self._reset()

    def _reset(self) -> None:
        self._headers: dict[str, str] = {}
        self._chunks: list[bytes] = []
        self._size = 0
        self._interim = False
        self._complete = False
        self._until_close = False
        self._decoder: _Decoder | None = None

    # --- the exchange ------------------------------------------------------------------

    async def exchange(self, request: tuple[bytes, bytes], limit: int) -> HttpAnswer:
        """Send ``request`` (head, body) and wait for the final answer; see the module."""
        assert self.transport is not None
        assert self._answer is None
        loop = asyncio.get_running_loop()
        self._answer = loop.create_future()
        self._limit, self._received, self.reusable = limit, False, False
        self._out_of_step = False
        self._reset()
        try:
            self.transport.writelines(request)
            return await self._answer
        finally:
            self._answer = None

    def _settle(self, failure: BaseException | None = None) -> None:
        answer = self._answer
        if answer is None or answer.done():
            return
        if failure is not None:
            answer.set_exception(failure)
            return
        status = self._parser.get_status_code()
        answer.set_result(HttpAnswer(status, self._headers, b"".join(self._chunks)))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # --- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the interface without deriving from asyncio's classes.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._received = True
        if self._answer is None:  # nothing asked: a server talking out of turn
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            failure = exc.__context__
            if not isinstance(failure, (ExchangeFailed, AnswerTooLarge)):
                failure = ExchangeFailed(f"the answer could not be read ({failure!r})")
            self.close()
            self._settle(failure)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.close()
            self._settle(ExchangeFailed(f"an answer that is not valid HTTP/1.1 ({exc})"))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost settles the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._until_close and not self._complete:  # a body that ends with the connection
            self._complete = True
            try:
                if self._decoder is not None:
                    self._decoder.finish()
            except ExchangeFailed as failure:
                self._settle(failure)
                return
            self._settle()
            return
        why = "the connection closed before the answer ended"
        if exc is not None:
            why = f"the connection broke ({type(exc).__name__})"
        self._settle(ExchangeFailed(why, answered=self._received))

    # --- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:  # a second answer to one request: the connection is out of step
            self._out_of_step = True
        self._reset()

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        known = self._headers.get(key)
        self._headers[key] = text if known is None else f"{known}, {text}"

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # 100 Continue and the like: the final answer follows
            self._interim = True
            return
        length = self._headers.get("content-length")
        if length is not None and length.strip().isdigit() and int(length) > self._limit:
            raise AnswerTooLarge
        encoding = self._headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._decoder = _Decoder("deflate" if encoding == "deflate" else "gzip")
        elif encoding != "identity":
            raise ExchangeFailed(f"an answer in the unsupported content encoding {encoding!r}")
        chunked = "chunked" in self._headers.get("transfer-encoding", "").lower()
        self._until_close = length is None and not chunked and status not in (204, 304)

    def on_body(self, body: bytes) -> None:
        if self._interim or not body:
            return
        room = self._limit - self._size
        if self._decoder is not None:
            body = self._decoder.feed(body, room)
        elif len(body) > room:
            raise AnswerTooLarge
        self._size += len(body)
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._decoder is not None:
            self._decoder.finish()
        self._complete = True
        self.reusable = self._parser.should_keep_alive() and not self._out_of_step
        self._settle()


class Http1Pool:
    """Connections to one server (``host``, ``port``; TLS with ``ssl_context``), reused."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
    ) -> None:
        self.host, self.port = host, port
        self._ssl = ssl_context
        self._max = max_connections
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._closed = False

    async def exchange(self, request: tuple[bytes, bytes], limit: int) -> HttpAnswer:
        """The final answer to ``request`` (head, body), its body at most ``limit`` bytes."""
        for attempt in (1, 2):
            connection, reused = await self._acquire()
            try:
                answer = await connection.exchange(request, limit)
            except ExchangeFailed as exc:
                self._discard(connection)
                if reused and not exc.answered and attempt == 1:
                    continue  # the server dropped an idle connection: once more, on a new one
                raise
            except BaseException:
                self._discard(connection)
                raise
            if connection.reusable and not connection.closed and not self._closed:
                self._release(connection)
            else:
                self._discard(connection)
            return answer
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _acquire(self) -> tuple[_Connection, bool]:
        while True:
            if self._closed:
                raise ExchangeFailed("the client is closed", answered=False)
            while self._idle:
                connection = self._idle.pop()  # the most recently used: the warmest
                if not connection.closed:
                    return connection, True
                self._open -= 1
            if self._open < self._max:
                return await self._connect(), False
            waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():  # handed over as we were cancelled
                    given = waiter.result()
                    if given is not None:
                        self._release(given)
                    else:
                        self._wake(None)
                raise
            if handed is not None:
                return handed, True
            # None: a connection was closed; there is room to open one now

    async def _connect(self) -> _Connection:
        self._open += 1
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                _Connection,
                self.host,
                self.port,
                ssl=self._ssl,
                server_hostname=self.host if self._ssl is not None else None,
            )
        except OSError as exc:
            self._open -= 1
            self._wake(None)
            raise ConnectFailed(exc) from exc
        except BaseException:
            self._open -= 1
            self._wake(None)
            raise
        return connection

    def _release(self, connection: _Connection) -> None:
        if self._wake(connection):
            return
        self._idle.append(connection)

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open -= 1
        self._wake(None)

    def _wake(self, handed: _Connection | None) -> bool:
        """Give ``handed`` (or, with None, room for a new connection) to the first waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(handed)
                return True
        return False

    def close(self) -> None:
        """Close every idle connection; those in use close when their exchange ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
            self._open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
