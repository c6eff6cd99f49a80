"""A response's head and its first body bytes, written to the connection together.

uvicorn writes a response's head as soon as the application starts the response, and
its body when it comes. Over TLS each write is a record of its own and a ``send`` of
its own, and the client is woken twice: for a small answer (an inference), that second
record costs about a fifth of the whole transport's time. :class:`JoinedWrites` stands
between one response cycle and the connection and holds the head back until the first
body bytes (for an answer without any, until the response is complete or the
connection closes), so both leave in one record.
"""

from __future__ import annotations

from asyncio import Transport
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

__all__ = ["JoinedWrites"]


class JoinedWrites:
    """The connection as one response cycle writes to it; anything else goes straight through.

    Only the first write after the cycle started its response is held: the ``100
    Continue`` interim answer, written before, is never delayed.
    """

    __slots__ = ("_cycle", "_head_seen", "_held", "transport")

    def __init__(self, transport: Transport, cycle: RequestResponseCycle) -> None:
        self.transport = transport
        self._cycle = cycle
        self._held: bytes | None = None
        self._head_seen = False

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif not self._head_seen and self._cycle.response_started:
            self._head_seen = True
            self._held = data
            return
        self.transport.write(data)

    def flush(self) -> None:
        """Write the head still held, if any."""
        if self._held is not None:
            data, self._held = self._held, None
            self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...
        return getattr(self.transport, name)
