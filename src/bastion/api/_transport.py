"""The hub's HTTP transport: uvicorn with TLS 1.2+, optional client certificates, bounded heads.

:func:`hub_server_config` builds the :class:`HubServerConfig` that ``serve()``
runs. It keeps uvicorn's httptools parser, through :class:`HubHttpProtocol`,
which adds to it:

- the ASGI TLS extension (https://asgi.readthedocs.io/en/latest/specs/tls.html)
  in ``scope["extensions"]["tls"]`` on connections over TLS, with the verified
  client certificate, if one was presented, and Bastion's
  ``client_cert_sha256`` (hex SHA-256 of its DER);
- a bound on each request's head (request target plus header fields): over
  ``max_header_bytes`` or ``max_headers`` fields, the answer is 431 and the
  connection is closed before the application is called; bytes are counted as
  they arrive, so a header that never ends cannot grow memory past the bound
  (trailer fields of a chunked body share that bound);
- a head deadline against slow clients: a request line and headers not complete
  ``header_timeout`` seconds after the connection opened (first request) or the
  request's first byte (later ones) are answered 408 and the connection closed;
- a body idle deadline: when the application waits for body bytes and none
  arrive for ``body_idle_timeout`` seconds, the connection is closed (the
  application receives ``http.disconnect``);
- a response's head written together with its first body bytes
  (:mod:`bastion.api._joined_writes`): one TLS record and one ``send`` for a
  small answer, not two;
- inference calls the gate takes (:mod:`bastion.api._inference_gate`) answered
  without an ASGI cycle: the gate computes the whole answer, and it is written
  at once;
- request bodies in batches, for a route that asks: ``scope["extensions"]
  ["bastion.body_batches"]`` is a callable taking a size in bytes, after which each
  ``http.request`` event carries at least that many body bytes (a ``bytearray``)
  but the last. Bytes are gathered as they arrive, without waking the
  application for each read, and reading pauses while a whole batch waits to be
  taken; the body idle deadline still counts from the last byte that arrived.

Idle keep-alive connections are closed after uvicorn's ``timeout_keep_alive``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import ssl
from asyncio import TimerHandle, Transport
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import httptools
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from bastion.api._inference_gate import InferenceGate, Reply
from bastion.api._joined_writes import JoinedWrites
from bastion.api._problems import problem_bytes
from bastion.errors import CertificateFormatError, InputError, UsageError

if TYPE_CHECKING:
    from uvicorn._types import (
        ASGI3Application,
        ASGIReceiveCallable,
        ASGIReceiveEvent,
        ASGISendCallable,
        Scope,
    )

__all__ = ["HubHttpProtocol", "HubServerConfig", "TransportLimits", "hub_server_config"]

log = logging.getLogger(__name__)

#: ``tls_version`` values of the ASGI TLS extension (the TLS wire version numbers).
TLS_VERSIONS: Final = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
#: How long a refused connection keeps reading (and dropping) what the client still sends,
#: so that closing it does not reset the connection before the client read the answer.
_LINGER_SECONDS: Final = 2.0
#: uvicorn's answer to a failure that escapes the application.
_INTERNAL_ERROR: Final = Reply(
    500,
    [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21")],
    b"Internal Server Error",
)


@dataclass(frozen=True)
class TransportLimits:
    """Bounds on what one connection may cost the hub before the application sees a request."""

    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_idle_timeout: float = 60.0

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_headers", "header_timeout", "body_idle_timeout"):
            value = getattr(self, name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value <= 0:
                raise InputError(f"{name} must be a positive number, not {value!r}")
        for name in ("max_header_bytes", "max_headers"):
            if not isinstance(getattr(self, name), int):
                raise InputError(f"{name} must be a whole number")


class HubServerConfig(uvicorn.Config):
    """uvicorn's configuration for the hub: TLS 1.2 or newer, optional client certificates.

    ``client_ca`` (PEM, one or more CA certificates) makes the hub ask for a
    client certificate: the certificate stays optional (a caller may use a bearer
    credential instead), but one that does not verify against ``client_ca``
    fails the TLS handshake. ``limits`` bound each connection (see
    :class:`TransportLimits`); every other keyword is uvicorn's.
    """

    def __init__(
        self,
        app: Any,
        *,
        client_ca: Path | None = None,
        limits: TransportLimits | None = None,
        **options: Any,
    ) -> None:
        options.setdefault("http", HubHttpProtocol)
        super().__init__(app, **options)
        if client_ca is not None and not self.is_ssl:
            raise UsageError(
                "client certificates need TLS: give the server certificate and key as well "
                "as the client CA, or drop the client CA"
            )
        self.client_ca = client_ca
        self.transport_limits = limits or TransportLimits()
        self.server_cert_pem: str | None = None
        self.cipher_suite_ids: dict[str, int] = {}

    def load(self) -> None:
        super().load()
        if self.ssl is None:
            return
        self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ssl.options |= ssl.OP_NO_RENEGOTIATION
        if self.client_ca is not None:
            try:
                self.ssl.load_verify_locations(cafile=str(self.client_ca))
            except (OSError, ssl.SSLError) as exc:
                raise CertificateFormatError(
                    f"cannot load the client CA certificates from {self.client_ca}: {exc}; "
                    "give a readable PEM file holding one or more CA certificates"
                ) from exc
            self.ssl.verify_mode = ssl.CERT_OPTIONAL
        # The IANA number of each suite, for the TLS extension's ``cipher_suite``.
        self.cipher_suite_ids = {c["name"]: c["id"] & 0xFFFF for c in self.ssl.get_ciphers()}
        if self.ssl_certfile is not None:
            self.server_cert_pem = _first_certificate_pem(Path(self.ssl_certfile))


def _first_certificate_pem(path: Path) -> str | None:
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return None  # uvicorn loaded it already; the extension's server_cert is optional
    return certificates[0].public_bytes(Encoding.PEM).decode("ascii")


def hub_server_config(
    app: Any,
    *,
    host: str,
    port: int,
    ssl_certfile: str | Path | None = None,
    ssl_keyfile: str | Path | None = None,
    client_ca: Path | None = None,
    max_header_bytes: int = 16384,
    max_headers: int = 100,
    header_timeout: float = 10.0,
    body_idle_timeout: float = 60.0,
) -> HubServerConfig:
    """The configuration ``serve()`` runs: the hub's transport, quiet logs, no server header."""
    return HubServerConfig(
        app,
        host=host,
        port=port,
        ssl_certfile=None if ssl_certfile is None else str(ssl_certfile),
        ssl_keyfile=None if ssl_keyfile is None else str(ssl_keyfile),
        client_ca=client_ca,
        limits=TransportLimits(max_header_bytes, max_headers, header_timeout, body_idle_timeout),
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,  # the source address is the connection's; X-Forwarded-For is ignored
        timeout_keep_alive=30,
        http=HubHttpProtocol,
    )


def tls_extension(
    transport: Transport, server_cert_pem: str | None, cipher_suite_ids: dict[str, int]
) -> dict[str, Any] | None:
    """The ASGI TLS extension for a connection; None when it is not over TLS."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = None
    if ssl_object.context.verify_mode != ssl.CERT_NONE:  # otherwise nothing was verified
        der = ssl_object.getpeercert(binary_form=True)
    cipher = ssl_object.cipher()
    extension: dict[str, Any] = {
        "server_cert": server_cert_pem,
        "client_cert_chain": [],
        "client_cert_name": None,
        "client_cert_error": None,
        "client_cert_sha256": None,
        "tls_version": TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": cipher_suite_ids.get(cipher[0]) if cipher else None,
    }
    if der:
        certificate = x509.load_der_x509_certificate(der)
        extension["client_cert_chain"] = [ssl.DER_cert_to_PEM_cert(der)]
        extension["client_cert_name"] = certificate.subject.rfc4514_string()
        extension["client_cert_sha256"] = hashlib.sha256(der).hexdigest()
    return extension


class _HeadRefused(Exception):
    """Raised inside a parser callback to stop parsing a request head over its bounds."""


class HubHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the TLS extension, head bounds and deadlines."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits: TransportLimits = getattr(config, "transport_limits", TransportLimits())
        self.tls: dict[str, Any] | None = None
        self.phase: Literal["idle", "head", "body"] = "idle"  # of the request being received
        self.head_bytes = 0  # request target and fields, counted by the parser callbacks
        self.head_fields = 0
        self.raw_head_bytes = 0  # whole chunks received while the head was incomplete
        self.stray_bytes = 0  # received in the body phase without any body byte in them
        self.messages_begun = 0  # in the chunk being parsed
        self.body_seen = False  # in the chunk being parsed
        self.refused = False
        self.head_refusal: str | None = None
        self.head_timer: TimerHandle | None = None
        self.linger_timer: TimerHandle | None = None
        self.writes: JoinedWrites | None = None  # the running response cycle's
        self.body_at = 0.0  # when body bytes last arrived (the loop's clock)
        self.batched: RequestResponseCycle | None = None  # whose body goes out in batches
        self.batch_size = 0
        self.batch_timer: TimerHandle | None = None

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        try:
            self.tls = tls_extension(
                transport,
                getattr(self.config, "server_cert_pem", None),
                getattr(self.config, "cipher_suite_ids", {}),
            )
        except ValueError:
            log.warning("closed a connection whose client certificate could not be read")
            transport.abort()
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self.head_timer, self.linger_timer, self.batch_timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.linger_timer = self.batch_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self.refused:
            return  # lingering after a refusal: drop what the client still sends
        phase_before = self.phase
        self.messages_begun = 0
        self.body_seen = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self.head_refusal is not None:
                self._refuse(431, self.head_refusal)
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        self._bound_unparsed(data, phase_before)

    def _bound_unparsed(self, data: bytes, phase_before: str) -> None:
        """Bound what the parser holds but has not handed over: a header still being received."""
        if self.phase == "head" and self.messages_begun <= int(phase_before == "idle"):
            # All of this chunk belongs to the unfinished head (a chunk that also carried
            # an earlier request is left to the callbacks' count).
            self.raw_head_bytes += len(data)
            if self.raw_head_bytes > self.limits.max_header_bytes:
                self._refuse(431, self._too_large_detail())
        elif self.phase == "body" and phase_before == "body" and not self.body_seen:
            # Chunk-size lines and trailer fields: a trailer that never ends is cut off too.
            self.stray_bytes += len(data)
            if self.stray_bytes > self.limits.max_header_bytes:
                self._refuse(431, "the request's trailer fields are too large")

    # Parser callbacks -------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.messages_begun += 1
        self.phase = "head"
        self.head_bytes = self.raw_head_bytes = self.head_fields = 0
        if self.head_timer is None:
            self._arm_head_timer()
        if self.tls is not None:
            # A copy per request: what one request's handler changes, the next does not see.
            extension: dict[object, object] = dict(self.tls.items())
            extension["client_cert_chain"] = list(self.tls["client_cert_chain"])
            self.scope["extensions"] = {"tls": extension}

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # Trailer fields come here too: they share the head's budget.
        self.head_fields += 1
        if self.head_fields > self.limits.max_headers:
            self.head_refusal = (
                f"the request has more than {self.limits.max_headers} header fields; "
                "send fewer headers"
            )
            raise _HeadRefused
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.phase = "body"
        self.stray_bytes = 0
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.body_seen = True
        self.stray_bytes = 0
        cycle = self.cycle
        if cycle is not self.batched:
            super().on_body(body)
        elif not cycle.response_complete:
            self.body_at = self.loop.time()
            cycle.body += body
            if len(cycle.body) >= self.batch_size:  # a whole batch: hand it over, read no more
                self.flow.pause_reading()
                cycle.message_event.set()

    def on_message_complete(self) -> None:
        self.phase = "idle"
        super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        gate: InferenceGate | None = getattr(app, "gate", None)
        scope: Any = cycle.scope  # uvicorn's typed scope; the gate reads it as Starlette's
        deployment = None if gate is None else gate.takes(scope)
        if gate is not None and deployment is not None:
            self.writes = None
            task = self.loop.create_task(self._answer_directly(cycle, app, gate, deployment))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)
            return
        self.writes = JoinedWrites(self.transport, cycle)
        cycle.transport = self.writes  # type: ignore[assignment]
        scope.setdefault("extensions", {})["bastion.body_batches"] = partial(
            self._batch_body, cycle
        )  # offered to what runs through ASGI: the gate's calls read no bodies in batches
        super()._start_asgi_task(cycle, self._with_body_deadline(cycle, app))

    async def _answer_directly(
        self, cycle: RequestResponseCycle, app: ASGI3Application, gate: InferenceGate, name: str
    ) -> None:
        """Serve an inference call through the gate, its whole answer written at once.

        This is uvicorn's response cycle without ASGI's messages: the same 500 for a failure
        that escapes the gate, the same keep-alive, and the next pipelined request started
        once the answer is written.
        """
        scope: Any = cycle.scope
        scope["app"] = app
        receive: Any = self._receive_within_deadline(cycle)
        alone = len(self.tasks) == 1  # this one: no other request here to share a worker's wake
        try:
            reply = await gate.answer(scope, receive, name, alone=alone)
        except BaseException as exc:
            self.logger.error("Exception in the inference gate", exc_info=exc)
            reply = _INTERNAL_ERROR
            cycle.keep_alive = False
        try:
            if cycle.flow.write_paused and not cycle.disconnected:
                await cycle.flow.drain()
            if not cycle.disconnected:
                self._write_reply(cycle, reply)
        finally:
            cycle.on_response = lambda: None

    def _write_reply(self, cycle: RequestResponseCycle, reply: Reply) -> None:
        """Write ``reply``'s head and body in one write and complete the cycle.

        Its headers were all built by the gate (a caller's request id only once checked),
        so they are not scanned for line breaks again.
        """
        cycle.response_started = True
        cycle.waiting_for_100_continue = False
        if cycle.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d', get_client_addr(cycle.scope), cycle.scope["method"],
                get_path_with_query_string(cycle.scope), cycle.scope["http_version"], reply.status,
            )  # fmt: skip
        parts = [STATUS_LINE[reply.status]]
        for name, value in self.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        for name, value in reply.headers:
            parts += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", reply.body)
        self.transport.write(b"".join(parts))
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            self.transport.close()
        cycle.on_response()

    def on_response_complete(self) -> None:
        if self.writes is not None:  # a HEAD answer's head: nothing followed it
            self.writes.flush()
            self.writes = None
        self.batched = None
        super().on_response_complete()

    # Bounds -----------------------------------------------------------------------------------

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > self.limits.max_header_bytes:
            self.head_refusal = self._too_large_detail()
            raise _HeadRefused

    def _too_large_detail(self) -> str:
        return (
            f"the request line and headers are larger than {self.limits.max_header_bytes} "
            "bytes; send shorter headers"
        )

    def _arm_head_timer(self) -> None:
        self.head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if not self.transport.is_closing():
            log.info("closed a connection from %s: request head too slow", self.client)
            self._refuse(
                408,
                f"the request line and headers did not arrive within "
                f"{self.limits.header_timeout:g} seconds; send the whole request head at once",
            )

    def _refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` with a problem body outside the application, then close."""
        self.refused = True
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        if self.phase == "body" or (self.cycle is not None and not self.cycle.response_complete):
            # Mid-body, or a response is being written: no second answer can be sent.
            self.transport.close()
            return
        self.transport.write(_problem_response(status, detail, self.server_state.default_headers))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.flow.resume_reading()
            self.linger_timer = self.loop.call_later(_LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    def _with_body_deadline(
        self, cycle: RequestResponseCycle, app: ASGI3Application
    ) -> ASGI3Application:
        """``app``, whose waits for body bytes end the connection after the idle deadline."""

        async def app_with_body_deadline(
            scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
        ) -> None:
            await app(scope, self._receive_within_deadline(cycle), send)

        return app_with_body_deadline

    def _receive_within_deadline(self, cycle: RequestResponseCycle) -> ASGIReceiveCallable:
        """``cycle``'s receive, ending the connection when body bytes stop arriving."""

        async def receive_within_deadline() -> ASGIReceiveEvent:
            if cycle is self.batched:
                return await self._receive_batch(cycle)
            if not cycle.more_body or cycle.body or cycle.disconnected or cycle.response_complete:
                return await cycle.receive()
            timer = self.loop.call_later(self.limits.body_idle_timeout, self._body_stalled, cycle)
            try:
                return await cycle.receive()
            finally:
                timer.cancel()

        return receive_within_deadline

    # Bodies in batches -----------------------------------------------------------------------

    def _batch_body(self, cycle: RequestResponseCycle, size: int) -> None:
        """Hand ``cycle``'s body to the application ``size`` bytes at a time from now on."""
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"a body batch is a positive number of bytes, not {size!r}")
        if not cycle.response_complete and not cycle.disconnected:
            self.batched = cycle
            self.batch_size = size

    async def _receive_batch(self, cycle: RequestResponseCycle) -> ASGIReceiveEvent:
        """The next ``batch_size`` body bytes (or the rest), as one ``http.request`` event.

        Once the whole body was handed over, this is uvicorn's receive: it waits for the
        response to complete or the client to leave.
        """
        if not cycle.more_body or _ended(cycle):
            return await cycle.receive()
        if cycle.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            cycle.waiting_for_100_continue = False
        event = cycle.message_event
        while cycle.more_body and len(cycle.body) < self.batch_size and not _ended(cycle):
            self.flow.resume_reading()
            self.body_at = self.loop.time()  # the wait starts now
            self.batch_timer = self.loop.call_later(
                self.limits.body_idle_timeout, self._batch_idle, cycle
            )
            try:
                await event.wait()
            finally:
                if self.batch_timer is not None:
                    self.batch_timer.cancel()
                    self.batch_timer = None
            event.clear()
        if _ended(cycle):
            return {"type": "http.disconnect"}
        batch: Any = cycle.body  # a bytearray where ASGI says bytes: the batch is not copied
        cycle.body = bytearray()
        return {"type": "http.request", "body": batch, "more_body": cycle.more_body}

    def _batch_idle(self, cycle: RequestResponseCycle) -> None:
        """The body idle deadline of a batch: from the last byte that arrived, not the wait."""
        left = self.body_at + self.limits.body_idle_timeout - self.loop.time()
        if left > 0:
            self.batch_timer = self.loop.call_later(left, self._batch_idle, cycle)
        else:
            self.batch_timer = None
            self._body_stalled(cycle)

    def _body_stalled(self, cycle: RequestResponseCycle) -> None:
        log.info("closed a connection from %s: request body stalled", self.client)
        cycle.disconnected = True
        cycle.message_event.set()
        self.transport.close()


def _ended(cycle: RequestResponseCycle) -> bool:
    """Whether ``cycle``'s client left or its answer was sent: no more body is wanted."""
    return cycle.disconnected or cycle.response_complete


def _problem_response(
    status: int, detail: str, default_headers: list[tuple[bytes, bytes]]
) -> bytes:
    code = {408: "request_timeout", 431: "headers_too_large"}[status]
    body = problem_bytes(status, code, detail)
    lines: list[bytes] = [STATUS_LINE[status]]
    headers: list[tuple[bytes, bytes]] = [
        *default_headers,
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-store"),
        (b"connection", b"close"),
    ]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    return b"".join([*lines, b"\r\n", body])
