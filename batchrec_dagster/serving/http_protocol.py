"""uvicorn's httptools protocol, with each response's head and body sent in one write.

uvicorn writes a response head (`http.response.start`) and its body (`http.response.body`) with
two `transport.write` calls, and uvloop sends each at once: two `send` system calls and two TCP
segments per answer on a keep-alive connection. On loopback, each send also does the receiving
side's network work in the sender's thread. Under load that was the largest single cost of the
event loop (about a third of its busy time in a profile at 3,500 req/s). `HeadWithBody` holds a
response head until the next write on the connection and sends both together; if no write
follows within the same loop iteration (a streamed response still computing its first chunk),
the head goes out on its own, as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


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
    """`HttpToolsProtocol` writing through `HeadWithBody`: pass as `uvicorn.Config(http=...)`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeadWithBody(transport, asyncio.get_running_loop()))  # type: ignore[arg-type]
