"""uvicorn as the server runs it: h11 with a header-read timeout, keep-alive and connection limits.

uvicorn times out idle kept-alive connections but not a request still arriving: a client that
sends half a request line or half its headers and then waits (slowloris) holds its connection,
and a slot of `limit_concurrency`, for ever. `TimedH11Protocol` closes a connection whose
request line and headers have not all arrived within `header_timeout` seconds of its first byte
(or of the connection opening), with a 408. The body has its own limit, in `BodyLimitMiddleware`.

Every connection also gets TCP_NODELAY (`disable_nagle`): a stream is many small writes, and with
Nagle's algorithm on (asyncio leaves it on) each one after the first waited for the client's ACK
of the one before, which a kept-alive client delays by up to 40 ms. That was the "fixed 45 ms"
before the first token of every request after a connection's first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from scratchlm.server.app import ServerSettings
from scratchlm.server.openai import error_body


def disable_nagle(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY on a TCP transport's socket (a no-op for other sockets, or if refused)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for each request's line and headers."""

    header_timeout: float = 10.0  # set per server by `timed_protocol`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        disable_nagle(transport)
        super().connection_made(transport)
        self._arm()  # a client that connects and sends nothing is timed too

    def data_received(self, data: bytes) -> None:
        if self.header_timer is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the request line and headers are all in

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Part of a pipelined next request may already wait in h11's buffer, with no data to come.
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self.header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_too_slow(self) -> None:
        self.header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        # h11 cannot answer a request it has not parsed: the 408 goes out as raw bytes.
        body = json.dumps(
            error_body(
                f"the request line and headers did not arrive within {self.header_timeout:g} s",
                "invalid_request_error",
                code="request_timeout",
            )
        ).encode()
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self.transport.close()


def timed_protocol(header_timeout: float) -> type[TimedH11Protocol]:
    """The protocol class for one server (uvicorn instantiates it per connection)."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"header_timeout": header_timeout})


def uvicorn_config(app: FastAPI, log_level: str = "info", **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration for an app from `create_app`, with its settings' limits."""
    settings: ServerSettings = app.state.settings
    options: dict[str, Any] = {
        "http": timed_protocol(settings.header_timeout),
        "log_level": log_level,
        "timeout_keep_alive": settings.keep_alive_timeout,
        "limit_concurrency": settings.max_connections,
        "timeout_graceful_shutdown": 5,
        **overrides,
    }
    return uvicorn.Config(app, **options)
