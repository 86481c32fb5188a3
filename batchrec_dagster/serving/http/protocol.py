"""uvicorn's httptools protocol, with each response's head and body sent in one write, and
timeouts for slow and idle connections.

uvicorn writes a response head (`http.response.start`) and its body (`http.response.body`) with
two `transport.write` calls, and uvloop sends each at once: two `send` system calls and two TCP
segments per answer on a keep-alive connection. On loopback, each send also does the receiving
side's network work in the sender's thread. Under load that was the largest single cost of the
event loop (about a third of its busy time in a profile at 3,500 req/s). `HeadWithBody` holds a
response head until the next write on the connection and sends both together; if no write
follows within the same loop iteration (a streamed response still computing its first chunk),
the head goes out on its own, as before.

Timeouts (uvicorn has only the keep-alive one, armed after a response and cancelled by any byte
received, so a connection that never sends a request, or sends its headers a byte at a time, or
stops in the middle of its body, was held forever, with no key needed): a request's headers must
be complete within `HEADER_TIMEOUT_S` of the connection's start or of the previous response; its
body may pause at most `BODY_IDLE_S` between chunks and must be complete within `BODY_TIMEOUT_S`
of its headers. A connection past one of them is answered 408 (when a request had begun) and
closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
HEADER_TIMEOUT_S = 10.0  # connection start or previous response -> the request's headers complete
BODY_IDLE_S = 10.0       # the longest pause within a request body
BODY_TIMEOUT_S = 60.0    # headers complete -> body complete (1 MiB at ~20 KB/s)
KEEP_ALIVE_S = 5.0       # an idle keep-alive connection after a response (uvicorn's own timeout)
_TIMEOUT_BODY = b'{"detail":"request timeout: the request was not sent in time"}'
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                     b"connection: close\r\ncontent-length: " + str(len(_TIMEOUT_BODY)).encode()
                     + b"\r\n\r\n" + _TIMEOUT_BODY)


def is_response_head(data: bytes) -> bool:
    """A status line and headers, as uvicorn writes them for `http.response.start`."""
    return data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n") and data != _CONTINUE


class HeadWithBody:
    """Transport proxy: a response head waits for the write after it (see the module docstring).
    Every way of writing or closing sends a held head first; the rest goes to the real transport
    unchanged."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif is_response_head(data):
            self._head = data
            self._loop.call_soon(self.flush)  # the head goes out alone if no body follows this step
        else:
            self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))  # through write: a held head must go first

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()  # a held head is sent before the connection closes
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeadWithBodyProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` writing through `HeadWithBody`, with the timeouts of the module
    docstring: pass as `uvicorn.Config(http=...)` (`with_timeouts` for other limits).

    The timers are lazy: a request records times (`loop.time()`), and a timer, when it fires,
    looks at them and either times the connection out or waits for what is due next; so a
    keep-alive connection costs one timer every few seconds, not one per request."""

    header_timeout_s = HEADER_TIMEOUT_S
    body_idle_s = BODY_IDLE_S
    body_timeout_s = BODY_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._waiting_since: float | None = None  # waiting for a request's headers since
        self._request_begun = False  # a byte of that request has come
        self._in_body = False  # headers complete, body not
        self._body_deadline = self._last_body = 0.0
        super().connection_made(HeadWithBody(transport, asyncio.get_running_loop()))  # type: ignore[arg-type]
        self._wait_for_headers()

    def _wait_for_headers(self) -> None:
        self._waiting_since = self.loop.time()
        self._request_begun = False
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._check_headers)

    def _check_headers(self) -> None:
        self._header_timer = None
        if self._waiting_since is not None:  # else a request is being served: armed after its response
            self._header_timer = self._due(self._waiting_since + self.header_timeout_s, self._check_headers)

    def _check_body(self) -> None:
        """Past the idle limit since the last chunk, or past the body deadline: time out."""
        self._body_timer = None
        if self._in_body:
            self._body_timer = self._due(min(self._last_body + self.body_idle_s, self._body_deadline),
                                         self._check_body)

    def _due(self, due: float, check: Any) -> asyncio.TimerHandle | None:
        """Time out now if `due` has passed, else the timer that calls `check` again then."""
        now = self.loop.time()
        if now >= due:
            self._timed_out()
            return None
        return self.loop.call_later(due - now, check)

    def _timed_out(self) -> None:
        self._cancel_timers()
        if self.transport.is_closing():
            return
        # a request that has begun gets an answer saying why; a silent connection is just closed
        in_body = self._in_body and self.cycle is not None and not self.cycle.response_started
        if in_body or (self._request_begun and self._waiting_since is not None):
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # a body that did not come with its headers (most do) gets its timer here
        if self._in_body and self._body_timer is None and not self.transport.is_closing():
            self._body_timer = self.loop.call_later(self.body_idle_s, self._check_body)

    def on_message_begin(self) -> None:
        self._request_begun = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._waiting_since = None
        self._last_body = self.loop.time()
        self._body_deadline = self._last_body + self.body_timeout_s
        self._in_body = True
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._last_body = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # a request already read: it starts now, headers complete
        super().on_response_complete()
        if not self.transport.is_closing() and not pipelined and not self._in_body:
            self._wait_for_headers()  # the next request's headers, from now

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)


def with_timeouts(header_s: float, body_idle_s: float, body_s: float) -> type[HeadWithBodyProtocol]:
    """The protocol with other timeouts (tests use short ones)."""
    return type("TimedHeadWithBodyProtocol", (HeadWithBodyProtocol,),
                {"header_timeout_s": header_s, "body_idle_s": body_idle_s, "body_timeout_s": body_s})
